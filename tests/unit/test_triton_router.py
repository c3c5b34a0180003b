"""Tests of kubechat.triton.client.TritonRouter: which endpoint a model's calls go to, and the
lifecycle of the one client per endpoint.

The router is given a recording stand-in for TritonGateway (the calls it forwards are what is
tested here); the real gRPC path through the router is covered by the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from kubechat.core.errors import ModelUnavailableError
from kubechat.triton.client import SamplingParams, TritonGateway, TritonRouter

PARAMS = SamplingParams(max_tokens=4)


class RecordingGateway:
    """Answers like one Triton at `url` and records what it was asked."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.calls: list[tuple[str, str]] = []
        self.images: list[bytes | None] = []
        self.streams_closed = 0
        self.closed = False
        self.release = asyncio.Event()
        self.release.set()

    async def model_ready(self, model: str) -> bool:
        self.calls.append(("model_ready", model))
        return True

    async def server_ready(self) -> bool:
        self.calls.append(("server_ready", ""))
        return self.url != "down:1"

    async def stream_text(
        self,
        model: str,
        prompt: str,
        params: SamplingParams,
        request_id: str = "",
        image: bytes | None = None,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> AsyncGenerator[str, None]:
        self.calls.append(("stream_text", model))
        self.images.append(image)
        try:
            yield f"{self.url} "
            await self.release.wait()
            yield "done"
        finally:
            self.streams_closed += 1

    async def embed(self, model: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(("embed", model))
        return np.zeros((len(texts), 2), dtype=np.float32)

    async def close(self) -> None:
        assert not self.closed, "closed twice"
        self.closed = True


class Clients:
    """The connect function given to the router: every gateway it created, by endpoint."""

    def __init__(self) -> None:
        self.created: list[RecordingGateway] = []

    def __call__(self, url: str, timeout_s: float) -> TritonGateway:
        gateway = RecordingGateway(url, timeout_s)
        self.created.append(gateway)
        return gateway  # type: ignore[return-value]  # the same interface, recorded

    def at(self, url: str) -> list[RecordingGateway]:
        return [g for g in self.created if g.url == url]


async def _text(router: TritonRouter, model: str) -> str:
    return "".join([d async for d in router.stream_text(model, "hi", PARAMS)])


async def test_files_mode_sends_every_model_to_the_default_endpoint() -> None:
    """With only a default URL (KUBECHAT_TRITON_URL) every model is served there, by one client."""
    clients = Clients()
    router = TritonRouter("triton:8001", 30.0, connect=clients)
    assert await _text(router, "smollm2") == "triton:8001 done"
    await router.embed("minilm", ["a", "b"])
    assert await router.model_ready("synthetic")
    assert await router.server_ready()
    (gateway,) = clients.created
    assert gateway.timeout_s == 30.0
    assert [c[0] for c in gateway.calls] == ["stream_text", "embed", "model_ready", "server_ready"]
    assert not gateway.closed  # the default endpoint stays open while the router lives
    await router.close()
    assert gateway.closed


async def test_clients_are_created_lazily_one_per_endpoint() -> None:
    """No client before a call; models on the same endpoint share one."""
    clients = Clients()
    router = TritonRouter(connect=clients)
    await router.set_endpoint("a", "a-svc:8001")
    await router.set_endpoint("b", "a-svc:8001")
    await router.set_endpoint("c", "c-svc:8001")
    assert clients.created == []
    await _text(router, "a")
    await _text(router, "b")
    await _text(router, "c")
    assert [g.url for g in clients.created] == ["a-svc:8001", "c-svc:8001"]
    assert sorted(router.connected()) == ["a-svc:8001", "c-svc:8001"]
    assert router.endpoints() == {"a": "a-svc:8001", "b": "a-svc:8001", "c": "c-svc:8001"}


async def test_a_model_without_an_endpoint_is_unavailable_at_once() -> None:
    """Cluster mode before the operator wrote status.endpoint: a stable error, not a hang."""
    router = TritonRouter(connect=Clients())
    with pytest.raises(ModelUnavailableError, match="no Triton endpoint") as info:
        await _text(router, "smollm2")
    assert info.value.code == "model_unavailable"
    with pytest.raises(ModelUnavailableError):
        await router.embed("minilm", ["x"])
    assert not await router.model_ready("smollm2")


async def test_moving_a_model_routes_it_to_the_new_endpoint_and_closes_the_old_client() -> None:
    """status.endpoint changed: the next call goes to the new one; the old client is closed once
    no model uses it."""
    clients = Clients()
    router = TritonRouter(connect=clients)
    await router.set_endpoint("m", "old:8001")
    assert await _text(router, "m") == "old:8001 done"
    await router.set_endpoint("m", "new:8001")
    assert await _text(router, "m") == "new:8001 done"
    (old,) = clients.at("old:8001")
    assert old.closed
    assert router.connected() == ["new:8001"]


async def test_an_endpoint_shared_with_another_model_stays_open() -> None:
    """Moving one model away does not close a client another model still uses."""
    clients = Clients()
    router = TritonRouter(connect=clients)
    await router.set_endpoint("a", "shared:8001")
    await router.set_endpoint("b", "shared:8001")
    await _text(router, "a")
    await router.set_endpoint("a", None)
    (shared,) = clients.at("shared:8001")
    assert not shared.closed
    await router.set_endpoint("b", "")  # empty clears too (a status without an endpoint)
    assert shared.closed
    assert router.endpoints() == {}


async def test_an_answer_streaming_when_its_model_moves_finishes_on_the_old_client() -> None:
    """The old client is closed only after the calls in flight on it end."""
    clients = Clients()
    router = TritonRouter(connect=clients)
    await router.set_endpoint("m", "old:8001")
    stream = router.stream_text("m", "hi", PARAMS)
    assert await anext(stream) == "old:8001 "
    (old,) = clients.at("old:8001")
    old.release.clear()
    await router.set_endpoint("m", "new:8001")
    assert not old.closed  # mid-answer
    old.release.set()
    assert [d async for d in stream] == ["done"]
    assert old.closed


async def test_removing_a_model_while_it_streams_closes_after_the_answer() -> None:
    """A deleted ChatModel's answer in flight completes; its client goes afterwards."""
    clients = Clients()
    router = TritonRouter(connect=clients)
    await router.set_endpoint("m", "svc:8001")
    stream = router.stream_text("m", "hi", PARAMS)
    assert isinstance(stream, AsyncGenerator)
    await anext(stream)
    await router.set_endpoint("m", None)
    (gateway,) = clients.created
    assert not gateway.closed
    await stream.aclose()  # the client left: the stream is closed early
    assert gateway.closed


async def test_an_image_goes_to_the_gateway_and_closing_the_stream_closes_its_call() -> None:
    """The vision contract's image travels with the call; a client that leaves early ends the
    gateway's stream at once (that is what cancels the request in Triton)."""
    clients = Clients()
    router = TritonRouter("triton:8001", connect=clients)
    assert await _text(router, "smollm2") == "triton:8001 done"
    stream = router.stream_text("ocr", "what does it say?", PARAMS, image=b"png")
    await anext(stream)
    (gateway,) = clients.created
    assert gateway.images == [None, b"png"]
    assert gateway.streams_closed == 1
    await stream.aclose()
    assert gateway.streams_closed == 2


async def test_server_ready_needs_every_endpoint_in_use() -> None:
    """One unreachable endpoint makes the router's server check fail."""
    router = TritonRouter(connect=Clients())
    await router.set_endpoint("a", "up:1")
    assert await router.server_ready()
    await router.set_endpoint("b", "down:1")
    assert not await router.server_ready()
