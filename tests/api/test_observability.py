"""Observability of the API in process: request ids, the metrics each turn and request leave in
kubechat's registry, the metrics port, and the spans of a turn (OpenTelemetry's in-memory
exporter). The same against a real Prometheus, a real API process and tritonserver is in
tests/integration/test_observability.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from kubechat.api.app import create_app
from kubechat.api.settings import Settings
from kubechat.core.errors import StorageUnavailableError
from kubechat.core.metrics import REGISTRY
from tests.api.conftest import InProcessApi
from tests.api.test_chat_socket import TOOL_CALL, turn
from tests.conftest import ALICE_KEY, BOB_KEY, EXAMPLE_MODELS, TEST_KNOWLEDGE_BASES
from tests.scripted import HOLD
from tests.tracing import named, parent_of, spans

__all__ = ["spans"]  # the fixture


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_response_has_a_request_id_and_keeps_a_sane_one(api: InProcessApi) -> None:
    generated = api.client.get("/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert api.client.get("/health").headers["x-request-id"] != generated
    kept = api.client.get("/health", headers={"X-Request-ID": "lb-7f3a:01"})
    assert kept.headers["x-request-id"] == "lb-7f3a:01"
    for insane in ("x" * 129, "two words", "<script>"):
        replaced = api.client.get("/health", headers={"X-Request-ID": insane}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", replaced)
    # Errors too, and the WebSocket's handshake answer.
    missing = api.client.get("/sessions/nope", headers={"X-Request-ID": "req-404"})
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "req-404"


def test_a_turn_leaves_its_metrics(api: InProcessApi) -> None:
    model = "synthetic"
    before = {
        "ttft": sample("kubechat_time_to_first_token_seconds_count", model=model),
        "gaps": sample("kubechat_inter_token_latency_seconds_count", model=model),
        "tokens": sample("kubechat_generated_tokens_total", model=model),
        "answers": sample("kubechat_answers_total", model=model, status="complete"),
        "sockets": sample("kubechat_open_websockets"),
        "messages": sample(
            "kubechat_http_requests_total",
            method="GET",
            route="/sessions/{session_id}/messages",
            status="200",
        ),
    }
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        assert sample("kubechat_open_websockets") == before["sockets"] + 1
        socket.send_json({"type": "message", "content": "Say hello."})
        frames = turn(socket)
    api.messages(session)
    types = [f["type"] for f in frames]  # the three tokens in one frame or more (kubechat.chat.coalesce)
    assert (types[0], set(types[1:-1]), types[-1]) == ("start", {"token"}, "done")
    assert sample("kubechat_time_to_first_token_seconds_count", model=model) == before["ttft"] + 1
    assert sample("kubechat_inter_token_latency_seconds_count", model=model) == before["gaps"] + 2
    assert sample("kubechat_generated_tokens_total", model=model) > before["tokens"]
    assert sample("kubechat_answers_total", model=model, status="complete") == before["answers"] + 1
    assert sample("kubechat_active_streams", model=model) == 0
    assert sample("kubechat_open_websockets") == before["sockets"]
    # Requests are counted by route template, never by raw path (a session id is not a label).
    assert (
        sample(
            "kubechat_http_requests_total",
            method="GET",
            route="/sessions/{session_id}/messages",
            status="200",
        )
        == before["messages"] + 1
    )
    assert not [s for f in REGISTRY.collect() for s in f.samples if session in str(s.labels)]
    assert (
        sample("kubechat_http_requests_total", method="GET", route="/ws/chat/{session_id}", status="101") >= 1
    )


def test_errors_are_counted_by_route_and_code_and_busy_apart(api: InProcessApi) -> None:
    route = "/ws/chat/{session_id}"
    before = (
        sample("kubechat_errors_total", route=route, code="busy"),
        sample("kubechat_busy_refusals_total", route=route),
    )
    api.triton.answer(["one", HOLD, " two"])
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        socket.send_json({"type": "message", "content": "first"})
        assert [socket.receive_json()["type"] for _ in range(2)] == ["start", "token"]
        socket.send_json({"type": "message", "content": "second"})
        assert socket.receive_json()["error"]["code"] == "busy"
        socket.send_json({"type": "stop"})
        assert turn(socket)[-1]["status"] == "stopped"
    assert sample("kubechat_errors_total", route=route, code="busy") == before[0] + 1
    assert sample("kubechat_busy_refusals_total", route=route) == before[1] + 1
    assert sample("kubechat_answers_total", model="synthetic", status="stopped") >= 1

    missing = sample("kubechat_errors_total", route="/sessions/{session_id}", code="session_not_found")
    assert api.client.get("/sessions/nope").status_code == 404
    assert (
        sample("kubechat_errors_total", route="/sessions/{session_id}", code="session_not_found")
        == missing + 1
    )
    invalid = sample("kubechat_errors_total", route="/sessions", code="invalid_request")
    assert api.client.post("/sessions", json={"title": 5}).status_code == 422
    assert sample("kubechat_errors_total", route="/sessions", code="invalid_request") == invalid + 1


def test_a_completion_is_measured_like_a_turn(api: InProcessApi) -> None:
    before = sample("kubechat_answers_total", model="synthetic", status="complete")
    body = {"model": "synthetic", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with api.client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200 and response.headers["x-request-id"]
        assert "[DONE]" in "".join(response.iter_text())
    assert sample("kubechat_answers_total", model="synthetic", status="complete") == before + 1
    plain = sample("kubechat_answers_total", model="synthetic", status="complete")
    api.client.post("/v1/chat/completions", json={**body, "stream": False})
    assert sample("kubechat_answers_total", model="synthetic", status="complete") == plain + 1


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, int]]:
    """The real lifespan with a metrics port (0: any free one)."""
    settings = Settings(
        state_dir=tmp_path, models_dir=EXAMPLE_MODELS, knowledge_bases_dir=TEST_KNOWLEDGE_BASES,
        api_keys=SecretStr(f"{ALICE_KEY}=alice,{BOB_KEY}=bob"), mcp_server_enabled=False, metrics_port=0,
    )  # fmt: skip
    app = create_app(settings)
    with TestClient(app) as client:
        yield client, app.state.metrics_port


def test_metrics_are_on_their_own_port_not_the_apis(served: tuple[TestClient, int]) -> None:
    client, port = served
    client.get("/health")
    exposition = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    for family in (
        "kubechat_time_to_first_token_seconds",
        "kubechat_http_requests_total",
        "process_cpu_seconds",
    ):
        assert f"# TYPE {family.removesuffix('_total')}" in exposition or family in exposition
    assert 'route="/health"' in exposition
    # The API's own port has no /metrics: the ingress must not publish them.
    assert client.get("/metrics").status_code == 404


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    """The benchmark's baseline: no request or answer metrics at all."""
    settings = Settings(
        state_dir=tmp_path, models_dir=EXAMPLE_MODELS, knowledge_bases_dir=TEST_KNOWLEDGE_BASES,
        api_keys=None, mcp_server_enabled=False, metrics_enabled=False,
    )  # fmt: skip
    before = sample("kubechat_http_requests_total", method="GET", route="/health", status="200")
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").headers["x-request-id"]  # request ids stay
    assert sample("kubechat_http_requests_total", method="GET", route="/health", status="200") == before


def attributes(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_a_turn_is_one_trace_with_its_steps(api: InProcessApi, spans: InMemorySpanExporter) -> None:
    api.triton.answer([TOOL_CALL], ["demo__add: 5"])
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        socket.send_json(
            {
                "type": "message",
                "content": "add",
                "model": "tool-caller",
                "tools": True,
                "knowledge_bases": ["handbook"],
            }
        )
        frames = turn(socket)
    (root,) = named(spans, "chat.turn")
    # Under FastAPI's span of the socket, one trace.
    socket_span = parent_of(spans, root)
    while socket_span is not None and socket_span.parent is not None:
        socket_span = parent_of(spans, socket_span)
    assert socket_span is not None and socket_span.name == "WS /ws/chat/{session_id}"
    assert attributes(root)["kubechat.session_id"] == session
    assert attributes(root)["kubechat.message_id"] == frames[0]["message_id"]
    assert attributes(root)["kubechat.status"] == "complete"
    (retrieve,) = named(spans, "knowledge.retrieve")
    (call,) = named(spans, "tool.call")
    for child in (retrieve, call):
        assert parent_of(spans, child) == root and child.context.trace_id == root.context.trace_id
    assert attributes(call) == {"kubechat.tool": "demo__add", "kubechat.tool.outcome": "ok"}


def test_a_completion_is_a_trace_that_outlives_its_handler(
    api: InProcessApi, spans: InMemorySpanExporter
) -> None:
    """The streamed answer is read by the response's own task; the span still ends with it."""
    body = {"model": "synthetic", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with api.client.stream(
        "POST", "/v1/chat/completions", json=body, headers={"traceparent": incoming}
    ) as response:
        "".join(response.iter_text())
    (completion,) = named(spans, "chat.completion")
    # The client's trace goes on, through FastAPI's server span.
    assert format(completion.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    ancestor = completion
    while (parent := parent_of(spans, ancestor)) is not None:
        ancestor = parent
    assert ancestor.parent is not None and format(ancestor.parent.span_id, "016x") == "b7ad6b7169203331"
    assert attributes(completion)["kubechat.status"] == "complete"
    assert attributes(completion)["kubechat.model"] == "synthetic"


def test_an_answer_that_fails_before_streaming_leaves_no_stream_counted(api: InProcessApi) -> None:
    """Retrieval fails, so the answer fails without ever streaming from Triton."""
    before = sample("kubechat_answers_total", model="synthetic", status="failed")
    api.knowledge.failure = StorageUnavailableError("the chunk store is down")
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        socket.send_json({"type": "message", "content": "Codename?", "knowledge_bases": ["handbook"]})
        frames = turn(socket)
    assert frames[-1]["status"] == "failed"
    assert sample("kubechat_active_streams", model="synthetic") == 0
    assert sample("kubechat_answers_total", model="synthetic", status="failed") == before + 1
