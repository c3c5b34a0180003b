"""Streaming completions, image descriptions and embeddings over Triton's gRPC API (tritonclient.grpc.aio).

`TritonGateway` is one channel to one Triton; `TritonRouter` sends each model to the Triton that
serves it (in a cluster every ChatModel has its own Deployment and Service) and is what the
services use. Both satisfy `TritonInference`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from tritonclient.grpc import InferInput, InferRequestedOutput, InferResult
from tritonclient.grpc._utils import _get_inference_request
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from kubechat.core.errors import ModelBusyError, ModelUnavailableError
from kubechat.core.tracing import trace_headers, tracer
from kubechat.triton import contract

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: Sequence[str] = field(default_factory=tuple)
    seed: int | None = None
    guide: Guide | None = None  # structured output: the engine's constrained decoding
    # Log probabilities: None for none, else how many alternatives per token (0 to 20).
    logprobs: int | None = None


@dataclass(frozen=True)
class Guide:
    """What the answer must match (TensorRT-LLM's guided decoding): `type` is one of the
    contract's GUIDE_* names, `text` the JSON schema (empty for plain JSON)."""

    type: str
    text: str = ""


@dataclass
class ReportedUsage:
    """Token counts an engine reported for one completion (a remote endpoint's `usage`), filled
    in by the stream when it ends; None where it reported none (Triton's contract has none)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def _tensor(name: str, data_type: str, value: npt.NDArray[Any]) -> InferInput:
    tensor = InferInput(name, list(value.shape), data_type)
    tensor.set_data_from_numpy(value)
    return tensor


def chat_inputs(
    prompt: str, params: SamplingParams, stream: bool = True, image: bytes | None = None
) -> list[InferInput]:
    """The chat contract's inputs for one request (batch of one).

    With `image` (the bytes of an encoded image file), the vision contract's `image_bytes_input`
    is added: UINT8 of shape [1, len(image)]. Integers beyond their tensor type's range are a
    ValueError (the request models bound them first), never a value numpy wraps silently.
    """
    _check_range(contract.MAX_TOKENS, params.max_tokens, contract.INT32_MAX)
    _check_range(contract.TOP_K, params.top_k, contract.INT32_MAX)
    if params.seed is not None:
        _check_range(contract.RANDOM_SEED, params.seed, contract.UINT64_MAX)
    inputs = [
        _tensor(contract.TEXT_INPUT, "BYTES", np.array([[prompt.encode("utf-8")]], dtype=np.object_)),
        _tensor(contract.MAX_TOKENS, "INT32", np.array([[params.max_tokens]], dtype=np.int32)),
        _tensor(contract.STREAM, "BOOL", np.array([[stream]], dtype=bool)),
        _tensor(contract.TEMPERATURE, "FP32", np.array([[params.temperature]], dtype=np.float32)),
        _tensor(contract.TOP_P, "FP32", np.array([[params.top_p]], dtype=np.float32)),
        _tensor(contract.TOP_K, "INT32", np.array([[params.top_k]], dtype=np.int32)),
        _tensor(
            contract.REPETITION_PENALTY, "FP32", np.array([[params.repetition_penalty]], dtype=np.float32)
        ),
        # TensorRT-LLM echoes the prompt unless told not to.
        _tensor(contract.EXCLUDE_INPUT_IN_OUTPUT, "BOOL", np.array([[True]], dtype=bool)),
    ]
    if params.stop:
        words = np.array([[s.encode("utf-8") for s in params.stop]], dtype=np.object_)
        inputs.append(_tensor(contract.STOP_WORDS, "BYTES", words))
    if params.seed is not None:
        inputs.append(_tensor(contract.RANDOM_SEED, "UINT64", np.array([[params.seed]], dtype=np.uint64)))
    if params.guide is not None:
        guide_type = np.array([[params.guide.type.encode("utf-8")]], dtype=np.object_)
        inputs.append(_tensor(contract.GUIDED_DECODING_GUIDE_TYPE, "BYTES", guide_type))
        if params.guide.text:
            guide = np.array([[params.guide.text.encode("utf-8")]], dtype=np.object_)
            inputs.append(_tensor(contract.GUIDED_DECODING_GUIDE, "BYTES", guide))
    if params.logprobs is not None:
        _check_range(contract.TOP_LOGPROBS, params.logprobs, contract.MAX_TOP_LOGPROBS)
        inputs.append(_tensor(contract.RETURN_LOG_PROBS, "BOOL", np.array([[True]], dtype=bool)))
        top = np.array([[params.logprobs]], dtype=np.int32)
        inputs.append(_tensor(contract.TOP_LOGPROBS, "INT32", top))
    if image is not None:
        pixels = np.frombuffer(image, dtype=np.uint8).reshape(1, -1)
        inputs.append(_tensor(contract.IMAGE_BYTES_INPUT, "UINT8", pixels))
    return inputs


def _check_range(name: str, value: int, high: int) -> None:
    if not 0 <= value <= high:
        raise ValueError(f"{name} {value} is outside 0..{high}")


class TritonInference(Protocol):
    """What the chat and knowledge services need from Triton."""

    async def model_ready(self, model: str) -> bool: ...

    async def server_ready(self) -> bool: ...

    def stream_text(
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
        """Text deltas of one streamed completion; closing the generator cancels it.

        With `params.logprobs` set, the tokens' log probabilities of each response are appended
        to `logprobs` (OpenAI's entries) before its delta is yielded. `prompt` is the rendered
        conversation (what Triton takes); `turns` the same conversation as (role, content) pairs,
        for an engine that applies its own chat template (a remote OpenAI-compatible endpoint).
        An engine that counts tokens puts them into `usage`."""
        ...

    async def describe_image(self, model: str, image: bytes, prompt: str, max_tokens: int) -> str: ...

    async def embed(self, model: str, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...

    async def rerank(self, model: str, query: str, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...

    async def close(self) -> None: ...


class TritonGateway:
    """One async gRPC channel to one Triton, shared by every request that goes there."""

    def __init__(self, url: str, timeout_s: float = 600.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.client = InferenceServerClient(url)

    async def close(self) -> None:
        await self.client.close()

    async def model_ready(self, model: str) -> bool:
        try:
            return bool(await self.client.is_model_ready(model))
        except (InferenceServerException, grpc.RpcError, OSError):
            return False

    async def server_ready(self) -> bool:
        try:
            return bool(await self.client.is_server_ready())
        except (InferenceServerException, grpc.RpcError, OSError):
            return False

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
        """Yield text deltas of one streamed completion (of a vision model with `image`).

        Triton takes the rendered `prompt`; `turns` is not needed, and the contract reports no
        usage (the catalog counts tokens with the model's tokenizer).

        Leaving the iteration early (the client stopped or left) cancels the gRPC call, which
        Triton turns into a cancelled request that the model stops generating.

        Traced as `triton.stream` (a child of the current span; never made current, as this is a
        generator): its time to first token is an attribute and an event, and its context goes
        to Triton as `traceparent` metadata.
        """
        finished = asyncio.Event()
        request_id = request_id or uuid.uuid4().hex
        outputs = [InferRequestedOutput(contract.TEXT_OUTPUT)]
        if params.logprobs is not None:
            outputs.append(InferRequestedOutput(contract.LOGPROBS_OUTPUT))
        request: dict[str, object] = {
            "model_name": model,
            "inputs": chat_inputs(prompt, params, image=image),
            "outputs": outputs,
            "request_id": request_id,
        }

        async def requests() -> AsyncIterator[Any]:
            yield _stream_request(request)
            await finished.wait()  # half-closing early would end the stream before the answer

        span = tracer.start_span(
            "triton.stream",
            kind=trace.SpanKind.CLIENT,
            attributes={"kubechat.model": model, "kubechat.triton.request_id": request_id},
        )
        recording = span.is_recording()
        headers = trace_headers(trace.set_span_in_context(span)) if recording else None
        started = time.perf_counter()
        responses = _stream_infer(self.client, requests(), self.timeout_s, headers)
        complete = False
        try:
            async for result, error in responses:
                if error is not None:
                    raise _stream_error(model, error.message())
                response = result.get_response()
                if logprobs is not None:
                    logprobs.extend(_logprobs_output(response))
                delta = _text_output(response)
                if delta:
                    if recording:
                        recording = False  # only the first delta is timed
                        ttft_ms = (time.perf_counter() - started) * 1000
                        span.add_event("first_token")
                        span.set_attribute("kubechat.time_to_first_token_ms", ttft_ms)
                    yield delta
                final = response.parameters.get(contract.FINAL_RESPONSE_PARAM)
                if final is not None and final.bool_param:
                    complete = True
                    return
            raise ModelUnavailableError(f"model {model} closed the stream before finishing")
        except grpc.RpcError as exc:
            span.set_status(trace.StatusCode.ERROR, "Triton unavailable")
            raise ModelUnavailableError(f"Triton is unavailable: {_rpc_message(exc)}") from exc
        except InferenceServerException as exc:
            span.set_status(trace.StatusCode.ERROR, "Triton unavailable")
            raise ModelUnavailableError(f"Triton is unavailable: {exc.message()}") from exc
        except ModelUnavailableError as exc:
            span.set_status(trace.StatusCode.ERROR, exc.message)
            raise
        finally:
            finished.set()
            # A finished stream ends by itself: its request iterator now returns, gRPC half-closes
            # and Triton closes. Cancelling it too would raise into that iterator, which grpc.aio
            # catches and formats a traceback for (~5% of the API's CPU for short answers).
            if not complete:
                responses.cancel()
            span.end()

    async def describe_image(self, model: str, image: bytes, prompt: str, max_tokens: int) -> str:
        """The whole answer of a vision model about `image` (the bytes of an encoded image file)."""
        return await _collect(self.stream_text(model, prompt, SamplingParams(max_tokens), image=image))

    async def rerank(self, model: str, query: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One relevance per text for `query`, from a ChatModel with the rerank capability."""
        queries = np.array([[query.encode("utf-8")]] * len(texts), dtype=np.object_)
        passages = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        try:
            result = await self.client.infer(
                model,
                [
                    _tensor(contract.RERANK_QUERY, "BYTES", queries),
                    _tensor(contract.RERANK_TEXT, "BYTES", passages),
                ],
                outputs=[InferRequestedOutput(contract.RERANK_OUTPUT)],
            )
        except (InferenceServerException, grpc.RpcError) as exc:
            raise ModelUnavailableError(f"reranker {model} failed: {exc}") from exc
        scores = result.as_numpy(contract.RERANK_OUTPUT)
        assert scores is not None
        return np.asarray(scores, dtype=np.float32).reshape(-1)

    async def embed(self, model: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        try:
            result = await self.client.infer(
                model,
                [_tensor(contract.EMBED_TEXT, "BYTES", data)],
                outputs=[InferRequestedOutput(contract.EMBED_OUTPUT)],
                headers=trace_headers() or None,
            )
        except (InferenceServerException, grpc.RpcError) as exc:
            raise ModelUnavailableError(f"embedder {model} failed: {exc}") from exc
        vectors = result.as_numpy(contract.EMBED_OUTPUT)
        assert vectors is not None
        return np.asarray(vectors, dtype=np.float32)


class TritonRouter:
    """Routes each model to its Triton endpoint, one gRPC client per distinct endpoint.

    Files mode: every model is on `default_url` (KUBECHAT_TRITON_URL). Cluster mode: no default;
    discovery sets each ChatModel's endpoint from its status and clears it when the resource
    goes. A client is created on first use and closed once no model maps to its endpoint and
    no call on it is in flight (an answer streaming when its model moved finishes where it began).
    """

    def __init__(
        self,
        default_url: str | None = None,
        timeout_s: float = 600.0,
        connect: Callable[[str, float], TritonGateway] = TritonGateway,
    ) -> None:
        self.default_url = default_url
        self.timeout_s = timeout_s
        self._connect = connect
        self._endpoints: dict[str, str] = {}  # model → host:port
        self._clients: dict[str, TritonGateway] = {}  # host:port → its channel
        self._in_flight: Counter[str] = Counter()

    # -- routing table --------------------------------------------------------------------

    def endpoint(self, model: str) -> str | None:
        return self._endpoints.get(model, self.default_url)

    def endpoints(self) -> dict[str, str]:
        """Where each model with its own endpoint is served."""
        return dict(self._endpoints)

    def connected(self) -> list[str]:
        """The endpoints a client is open to now."""
        return list(self._clients)

    async def set_endpoint(self, model: str, url: str | None) -> None:
        """Route `model` to `url`; None (or empty) means it has no endpoint (yet, or any more)."""
        previous = self._endpoints.get(model)
        if url:
            self._endpoints[model] = url
        else:
            self._endpoints.pop(model, None)
        if previous is not None and previous != url:
            logger.info("model %s: Triton endpoint %s -> %s", model, previous, url or "none")
            await self._close_if_unused(previous)

    # -- the TritonInference interface ----------------------------------------------------

    async def model_ready(self, model: str) -> bool:
        url = self.endpoint(model)
        if url is None:
            return False
        gateway = self._acquire(url)
        try:
            return await gateway.model_ready(model)
        finally:
            await self._release(url)

    async def server_ready(self) -> bool:
        """Every endpoint in use answers (the default one included)."""
        urls = {*self._endpoints.values(), *([self.default_url] if self.default_url else [])}
        states = await asyncio.gather(*(self._server_ready(url) for url in urls))
        return all(states)

    async def _server_ready(self, url: str) -> bool:
        gateway = self._acquire(url)
        try:
            return await gateway.server_ready()
        finally:
            await self._release(url)

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
        url = self._route(model)
        gateway = self._acquire(url)
        try:
            deltas = gateway.stream_text(model, prompt, params, request_id, image=image, logprobs=logprobs)
            async with aclosing(deltas):
                async for delta in deltas:
                    yield delta
        finally:
            await self._release(url)

    async def describe_image(self, model: str, image: bytes, prompt: str, max_tokens: int) -> str:
        return await _collect(self.stream_text(model, prompt, SamplingParams(max_tokens), image=image))

    async def embed(self, model: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        url = self._route(model)
        gateway = self._acquire(url)
        try:
            return await gateway.embed(model, texts)
        finally:
            await self._release(url)

    async def rerank(self, model: str, query: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        url = self._route(model)
        gateway = self._acquire(url)
        try:
            return await gateway.rerank(model, query, texts)
        finally:
            await self._release(url)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for gateway in clients:
            await gateway.close()

    # -- clients --------------------------------------------------------------------------

    def _route(self, model: str) -> str:
        url = self.endpoint(model)
        if url is None:
            # Rather than waiting on a Service that does not exist yet.
            raise ModelUnavailableError(f"model {model} has no Triton endpoint yet")
        return url

    def _acquire(self, url: str) -> TritonGateway:
        gateway = self._clients.get(url)
        if gateway is None:
            gateway = self._clients[url] = self._connect(url, self.timeout_s)
        self._in_flight[url] += 1
        return gateway

    async def _release(self, url: str) -> None:
        self._in_flight[url] -= 1
        await self._close_if_unused(url)

    async def _close_if_unused(self, url: str) -> None:
        in_use = url == self.default_url or url in self._endpoints.values() or self._in_flight[url] > 0
        if in_use:
            return
        self._in_flight.pop(url, None)
        gateway = self._clients.pop(url, None)
        if gateway is not None:
            logger.info("closing the Triton client of %s: no model uses it", url)
            await gateway.close()


# Triton's message when a model's queue is full (its dynamic batcher's max_queue_size); the GPU
# model sends the same when its own bounded queue is (kubechat.triton.llmapi_model).
QUEUE_FULL_MESSAGE = "Exceeds maximum queue size"
# Triton's request parameter behind tritonclient's `enable_empty_final_response` (which its aio
# client does not expose): a decoupled model may end a stream with a response that carries no
# tensors, only the final flag (TensorRT-LLM's models do), and without it Triton never sends
# that response: the stream would hang until its timeout.
EMPTY_FINAL_RESPONSE_PARAM = "triton_enable_empty_final_response"


def _stream_error(model: str, message: str) -> ModelUnavailableError:
    """A stream's error response as the domain error: a full queue is `busy` (the client may retry
    shortly), anything else `model_unavailable`."""
    if QUEUE_FULL_MESSAGE in message:
        return ModelBusyError(f"model {model} is at capacity ({message}); retry shortly")
    return ModelUnavailableError(f"model {model} failed: {message}")


def _stream_request(request: dict[str, Any]) -> Any:
    """The gRPC request of one streamed inference, with empty final responses enabled."""
    infer_request = _get_inference_request(
        model_name=request["model_name"],
        inputs=request["inputs"],
        model_version="",
        request_id=request.get("request_id", ""),
        outputs=request.get("outputs"),
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        parameters=None,
    )
    infer_request.parameters[EMPTY_FINAL_RESPONSE_PARAM].bool_param = True
    return infer_request


class _StreamResponses:
    """tritonclient's aio stream_infer iterator, over requests built by `_stream_request`: yields
    (InferResult, None) or (None, InferenceServerException); `cancel()` cancels the call."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __aiter__(self) -> _StreamResponses:
        return self

    async def __anext__(self) -> tuple[Any, Any]:
        response = await self._call.__aiter__().__anext__()
        if response.error_message != "":
            return None, InferenceServerException(msg=response.error_message)
        return InferResult(response.infer_response), None

    def cancel(self) -> bool:
        return bool(self._call.cancel())


def _stream_infer(
    client: InferenceServerClient, requests: AsyncIterator[Any], timeout: float, headers: Any
) -> _StreamResponses:
    try:
        call = client._client_stub.ModelStreamInfer(
            requests, metadata=client._get_metadata(headers), timeout=timeout
        )
    except grpc.RpcError as exc:
        raise ModelUnavailableError(f"Triton is unavailable: {_rpc_message(exc)}") from exc
    return _StreamResponses(call)


async def _collect(deltas: AsyncIterator[str]) -> str:
    return "".join([delta async for delta in deltas])


def _text_output(response: Any) -> str:
    """The text of a batch-of-one BYTES `text_output`, read straight from the raw contents.

    Hot path (once per token): Triton serializes BYTES elements as a 4-byte little-endian
    length then the bytes, so no numpy array needs building.
    """
    for index, output in enumerate(response.outputs):
        if output.name == contract.TEXT_OUTPUT:
            raw = response.raw_output_contents[index]
            size = int.from_bytes(raw[:4], "little")
            return str(raw[4 : 4 + size].decode("utf-8"))
    return ""


def _logprobs_output(response: Any) -> list[dict[str, Any]]:
    """The log-probability entries of a response: its `logprobs` JSON list, if it has one."""
    for index, output in enumerate(response.outputs):
        if output.name == contract.LOGPROBS_OUTPUT:
            raw = response.raw_output_contents[index]
            size = int.from_bytes(raw[:4], "little")
            entries: list[dict[str, Any]] = json.loads(raw[4 : 4 + size]) if size else []
            return entries
    return []


def _rpc_message(exc: grpc.RpcError) -> str:
    details = getattr(exc, "details", None)
    return str(details()) if callable(details) else str(exc)
