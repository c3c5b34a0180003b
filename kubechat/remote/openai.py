"""A ChatModel served by an OpenAI-compatible endpoint (vLLM, NIM, trtllm-serve, llama.cpp's
server, TEI, a hosted API), through the official `openai` client's AsyncOpenAI.

The gateway speaks `/chat/completions` (streamed, with `stream_options.include_usage` so the
upstream's own token counts reach the done event), `/embeddings` and `/models` (the readiness
probe). Retries happen only before the first token: the client's own retries (connection errors,
HTTP 408/409/429/5xx, with back-off) end when the response starts, and a stream that fails later
is a failed answer, never a second one. Closing the generator closes the HTTP response, which is
how an OpenAI-compatible server learns that its client left and stops generating.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2
import numpy as np
import numpy.typing as npt
import openai
from openai import AsyncOpenAI

from kubechat.core.errors import (
    InvalidRequestError,
    KubechatError,
    ModelUnavailableError,
    UpstreamAuthError,
    UpstreamModelNotFoundError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
)
from kubechat.triton.client import ReportedUsage, SamplingParams

logger = logging.getLogger(__name__)

# The `openai` client refuses to start without a key; servers without auth ignore this one
# (vLLM's documentation uses the same placeholder).
NO_KEY = "EMPTY"
# Roles every OpenAI-compatible server takes; a tool format's own ("ipython") is sent as user.
_ROLES = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True)
class RemoteModel:
    """Where a remote ChatModel is served and how to reach it (from spec.endpoint, key resolved)."""

    url: str  # base URL, up to and including /v1
    model: str  # the upstream's model id
    api_key: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 2


@dataclass(frozen=True)
class Probe:
    """What a probe of the endpoint found: whether it answers and lists the model, and if not why."""

    ready: bool
    reason: str = ""
    message: str = ""


def chat_messages(
    turns: Sequence[tuple[str, str]], image: bytes | None = None, image_type: str = "image/png"
) -> list[dict[str, Any]]:
    """The conversation as OpenAI chat messages; an image goes with the last user turn as an
    `image_url` part (a data: URL, which every vision-capable server takes)."""
    messages: list[dict[str, Any]] = [
        {"role": role if role in _ROLES else "user", "content": content} for role, content in turns
    ]
    if image is not None:
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        url = f"data:{image_type};base64,{base64.b64encode(image).decode('ascii')}"
        part = {"type": "image_url", "image_url": {"url": url}}
        if last_user is None:
            messages.append({"role": "user", "content": [part]})
        else:
            text = messages[last_user]["content"]
            messages[last_user]["content"] = [{"type": "text", "text": text}, part]
    return messages


def _image_type(image: bytes) -> str:
    if image.startswith(b"\x89PNG"):
        return "image/png"
    if image.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    if image[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"


def upstream_error(exc: Exception, remote: RemoteModel, name: str) -> KubechatError:
    """An `openai` client exception as the stable code a kubechat client switches on."""
    where = f"model {name} ({remote.model} at {remote.url})"
    if isinstance(exc, openai.APITimeoutError):
        return ModelUnavailableError(f"{where}: the endpoint did not answer in {remote.timeout_s:g}s")
    if isinstance(exc, openai.APIConnectionError):
        return ModelUnavailableError(f"{where}: the endpoint is unreachable ({exc.__cause__ or exc})")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return UpstreamAuthError(f"{where}: the endpoint refused kubechat's API key (HTTP {exc.status_code})")
    if isinstance(exc, openai.NotFoundError):
        return UpstreamModelNotFoundError(f"{where}: the endpoint does not serve this model")
    if isinstance(exc, openai.RateLimitError):
        return UpstreamRateLimitedError(f"{where}: the endpoint is rate limiting (HTTP 429)")
    if isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError):
        return UpstreamRejectedError(f"{where}: the endpoint refused the request: {_detail(exc)}")
    if isinstance(exc, openai.APIStatusError):
        return ModelUnavailableError(f"{where}: the endpoint failed (HTTP {exc.status_code}): {_detail(exc)}")
    return ModelUnavailableError(f"{where}: the endpoint failed: {exc}")


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if isinstance(message, str):
            return message[:500]
    return str(exc.message)[:500]


class OpenAIEndpoint:
    """One AsyncOpenAI client (one HTTP connection pool) for one remote ChatModel."""

    def __init__(self, name: str, remote: RemoteModel) -> None:
        self.name = name
        self.remote = remote
        self.client = AsyncOpenAI(
            base_url=remote.url,
            api_key=remote.api_key or NO_KEY,
            # connect, first byte and between two chunks: each at most timeout_s
            timeout=httpx2.Timeout(remote.timeout_s),
            max_retries=remote.max_retries,
        )

    async def close(self) -> None:
        await self.client.close()

    async def probe(self) -> Probe:
        """Whether the endpoint answers `GET /models` and lists the model."""
        try:
            listed = [m.id async for m in self.client.models.list()]
        except openai.OpenAIError as exc:
            error = upstream_error(exc, self.remote, self.name)
            reason = {
                "upstream_auth_failed": "EndpointUnauthorized",
                "upstream_model_not_found": "EndpointUnavailable",
            }.get(error.code, "EndpointUnavailable")
            return Probe(False, reason, str(error))
        if self.remote.model not in listed:
            shown = ", ".join(listed[:10]) or "none"
            return Probe(
                False,
                "ModelNotListed",
                f"{self.remote.url} does not list model {self.remote.model!r} (it lists: {shown})",
            )
        return Probe(True, "EndpointReady", f"{self.remote.url} serves {self.remote.model}")

    async def stream_chat(
        self,
        turns: Sequence[tuple[str, str]],
        params: SamplingParams,
        image: bytes | None = None,
        usage: ReportedUsage | None = None,
    ) -> AsyncGenerator[str, None]:
        """Text deltas of one streamed chat completion; the upstream's usage goes into `usage`.

        Structured outputs and log probabilities are not passed on yet: refused, never ignored."""
        if params.guide is not None or params.logprobs is not None:
            raise InvalidRequestError(
                f"model {self.name} is a remote model: it takes no structured outputs or logprobs yet"
            )
        request: dict[str, Any] = {
            "model": self.remote.model,
            "messages": chat_messages(turns, image, _image_type(image) if image else "image/png"),
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.stop:
            request["stop"] = list(params.stop)[:4]  # OpenAI's API takes at most four
        if params.seed is not None:
            request["seed"] = params.seed
        extra: dict[str, Any] = {}
        # Not in OpenAI's API (a hosted one refuses unknown fields): sent only when set. vLLM and
        # llama.cpp's server read both.
        if params.top_k:
            extra["top_k"] = params.top_k
        if params.repetition_penalty != 1.0:
            extra["repetition_penalty"] = params.repetition_penalty
        if extra:
            request["extra_body"] = extra
        try:
            stream = await self.client.chat.completions.create(**request)
        except openai.OpenAIError as exc:
            raise upstream_error(exc, self.remote, self.name) from exc
        try:
            async for chunk in stream:
                if chunk.usage is not None and usage is not None:
                    usage.prompt_tokens = chunk.usage.prompt_tokens
                    usage.completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    delta = choice.delta.content if choice.delta is not None else None
                    if delta:
                        yield delta
        except openai.OpenAIError as exc:
            raise upstream_error(exc, self.remote, self.name) from exc
        except httpx2.HTTPError as exc:  # the stream broke after it started: no retry
            raise ModelUnavailableError(
                f"model {self.name}: the stream from {self.remote.url} broke: {exc!r}"
            ) from exc
        finally:
            # Closes the HTTP response: the server sees its client go and stops generating.
            await stream.close()

    async def describe_image(self, image: bytes, prompt: str, max_tokens: int) -> str:
        params = SamplingParams(max_tokens)
        return "".join([d async for d in self.stream_chat([("user", prompt)], params, image)])

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """`POST /embeddings`: one vector per text, in order (as the API's `index` says)."""
        try:
            answer = await self.client.embeddings.create(
                model=self.remote.model, input=list(texts), encoding_format="float"
            )
        except openai.OpenAIError as exc:
            raise upstream_error(exc, self.remote, self.name) from exc
        rows = sorted(answer.data, key=lambda d: d.index)
        if len(rows) != len(texts):
            raise ModelUnavailableError(
                f"embedder {self.name}: {len(rows)} vectors for {len(texts)} texts from {self.remote.url}"
            )
        return np.asarray([r.embedding for r in rows], dtype=np.float32)
