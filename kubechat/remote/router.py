"""`ModelRouter`: the one inference interface the services use, for every kind of ChatModel.

A model with a remote endpoint (backend openai) goes to its `OpenAIEndpoint`; every other model
to its Triton (`TritonRouter`). The services cannot tell the difference: the same
`stream_text`, `describe_image`, `embed` and `model_ready`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from typing import Any

import numpy as np
import numpy.typing as npt

from kubechat.core.resources import ChatModel
from kubechat.remote.openai import OpenAIEndpoint, Probe, RemoteModel
from kubechat.triton.client import ReportedUsage, SamplingParams, TritonGateway, TritonRouter

logger = logging.getLogger(__name__)


def remote_model(model: ChatModel, api_key: str | None) -> RemoteModel | None:
    """The RemoteModel of a ChatModel with backend openai (None for any other)."""
    endpoint = model.spec.endpoint
    if endpoint is None:
        return None
    return RemoteModel(
        url=endpoint.url.rstrip("/"),
        model=endpoint.model or model.name,
        api_key=api_key or None,
        timeout_s=endpoint.timeout_seconds,
        max_retries=endpoint.max_retries,
    )


def env_api_key(model: ChatModel) -> str | None:
    """Embedded mode: the key in the environment variable spec.endpoint.apiKeyEnv names."""
    endpoint = model.spec.endpoint
    if endpoint is None or not endpoint.api_key_env:
        return None
    key = os.environ.get(endpoint.api_key_env)
    if not key:
        logger.warning("model %s: %s is not set: calling %s without a key", model.name,
                       endpoint.api_key_env, endpoint.url)  # fmt: skip
    return key or None


class ModelRouter(TritonRouter):
    """Triton models as TritonRouter routes them, plus the remote ones by name."""

    def __init__(
        self,
        default_url: str | None = None,
        timeout_s: float = 600.0,
        connect: Callable[[str, float], TritonGateway] = TritonGateway,
    ) -> None:
        super().__init__(default_url, timeout_s, connect)
        self._remote: dict[str, OpenAIEndpoint] = {}

    def remote(self, model: str) -> OpenAIEndpoint | None:
        return self._remote.get(model)

    def remote_models(self) -> list[str]:
        return list(self._remote)

    async def set_remote(self, model: str, remote: RemoteModel | None) -> None:
        """Serve `model` from `remote` (None: it is no remote model, or no more). An unchanged
        endpoint keeps its client and connections; a changed one gets a new client, and answers
        streaming from the old one end with model_unavailable."""
        current = self._remote.get(model)
        if current is not None and current.remote == remote:
            return
        if remote is None:
            self._remote.pop(model, None)
        else:
            self._remote[model] = OpenAIEndpoint(model, remote)
            logger.info("model %s: served by %s as %s", model, remote.url, remote.model)
        if current is not None:
            await current.close()

    async def probe(self, model: str) -> Probe | None:
        """A remote model's endpoint probe; None for a Triton model."""
        endpoint = self._remote.get(model)
        return None if endpoint is None else await endpoint.probe()

    async def model_ready(self, model: str) -> bool:
        endpoint = self._remote.get(model)
        if endpoint is None:
            return await super().model_ready(model)
        return (await endpoint.probe()).ready

    async def server_ready(self) -> bool:
        """Every Triton endpoint in use answers (remote endpoints are per model: model_ready)."""
        if self.default_url is None and not self.endpoints():
            return True
        return await super().server_ready()

    async def stream_text(
        self,
        model: str,
        prompt: str,
        params: SamplingParams,
        request_id: str = "",
        image: bytes | None = None,
        logprobs: list[dict[str, Any]] | None = None,
        *,
        turns: Sequence[tuple[str, str]] | None = None,
        usage: ReportedUsage | None = None,
    ) -> AsyncGenerator[str, None]:
        endpoint = self._remote.get(model)
        if endpoint is None:
            deltas = super().stream_text(
                model, prompt, params, request_id, image, logprobs, turns=turns, usage=usage
            )
        else:
            # Without turns (an image description's one question) the prompt is the user's turn.
            deltas = endpoint.stream_chat(turns or [("user", prompt)], params, image, usage)
        async with aclosing(deltas):
            async for delta in deltas:
                yield delta

    async def describe_image(self, model: str, image: bytes, prompt: str, max_tokens: int) -> str:
        endpoint = self._remote.get(model)
        if endpoint is None:
            return await super().describe_image(model, image, prompt, max_tokens)
        return await endpoint.describe_image(image, prompt, max_tokens)

    async def embed(self, model: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        endpoint = self._remote.get(model)
        if endpoint is None:
            return await super().embed(model, texts)
        return await endpoint.embed(texts)

    async def close(self) -> None:
        remote, self._remote = list(self._remote.values()), {}
        for endpoint in remote:
            await endpoint.close()
        await super().close()
