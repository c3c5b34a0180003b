"""OpenAI-compatible /v1/models, /v1/chat/completions and /v1/embeddings, so existing clients
work unchanged.

Stateless like OpenAI's API: the client sends the whole conversation and nothing is stored.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.sse import EventSourceResponse
from pydantic import BaseModel, ConfigDict, Field, Strict

from kubechat.api.dependencies import PrincipalDep, ServicesDep
from kubechat.api.errors import error_body, error_responses
from kubechat.api.routing import ApiRoute
from kubechat.api.sse import DONE, event_stream, sse_data
from kubechat.chat.events import Done, Failure, Sources, Started, Token, ToolCalled
from kubechat.chat.generation import Generation
from kubechat.chat.request import (
    ChatMessage,
    ChatRequest,
    GenerationOptions,
    ImageRef,
    InlineImage,
    MaxTokens,
    RepetitionPenalty,
    Seed,
    StopWord,
    StopWords,
    Temperature,
    TopP,
)
from kubechat.core.errors import (
    CorruptImageError,
    DecompressionBombError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidRequestError,
    KnowledgeBaseNotFoundError,
    KnowledgeBaseUnavailableError,
    MessageTooLargeError,
    ModelNotFoundError,
    ModelUnavailableError,
    StorageUnavailableError,
    ToolRoundsExceededError,
    UnauthenticatedError,
    UnsupportedImageError,
)
from kubechat.core.resources import Capability
from kubechat.images.vision import IMAGE_URL_PREFIX
from kubechat.knowledge.retrieval import Citation
from kubechat.tools.types import ToolCall, ToolSpec

router = APIRouter(prefix="/v1", tags=["openai"], route_class=ApiRoute)

# Texts in one /v1/embeddings request (OpenAI's own limit is 2048).
MAX_EMBEDDING_INPUTS = 256


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str = Field(description="kubechat://images/<id> (an upload to /images) or a data: URL.")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    image_url: ImageUrl | None = None


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="The arguments as a JSON object, serialized (OpenAI's format).")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    @classmethod
    def of(cls, call: ToolCall) -> ToolCallOut:
        arguments = json.dumps(call.arguments, ensure_ascii=False)
        return cls(id=call.id, function=FunctionCall(name=call.name, arguments=arguments))

    def call(self) -> ToolCall:
        try:
            arguments = json.loads(self.function.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"tool call {self.id}: arguments are not JSON ({exc})") from None
        if not isinstance(arguments, dict):
            raise InvalidRequestError(f"tool call {self.id}: arguments must be a JSON object")
        return ToolCall(self.id, self.function.name, arguments)


class FunctionSpec(BaseModel):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolDefinition(BaseModel):
    type: Literal["function"]
    function: FunctionSpec


class ChatCompletionMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallOut] | None = None  # an assistant's calls, sent back by the client
    tool_call_id: str | None = None  # a tool message: which call it answers

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        unsupported = {p.type for p in self.content if p.type not in ("text", "image_url")}
        if unsupported:
            raise InvalidRequestError(f"content part types {sorted(unsupported)} are not supported")
        return "".join(p.text or "" for p in self.content if p.type == "text")

    def image_urls(self) -> list[str]:
        if self.content is None or isinstance(self.content, str):
            return []
        urls = []
        for part in self.content:
            if part.type == "image_url":
                if part.image_url is None:
                    raise InvalidRequestError("an image_url part needs image_url.url")
                if self.role != "user":
                    raise InvalidRequestError("images are accepted in user messages only")
                urls.append(part.image_url.url)
        return urls


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # Unknown OpenAI parameters are accepted and ignored, as most compatible servers do.
    model_config = ConfigDict(extra="ignore")

    # Required and never empty, as OpenAI's: "" does not quietly mean the default model.
    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[ChatCompletionMessage], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    # The numbers are bounded as the WebSocket's options are (kubechat.chat.request).
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    # Not OpenAI's; the same extension vLLM accepts (extra_body={"repetition_penalty": 1.1}).
    repetition_penalty: RepetitionPenalty | None = None
    stop: StopWord | StopWords | None = None
    seed: Seed | None = None
    n: Annotated[int, Strict(), Field(ge=1, le=1)] = 1
    # kubechat's extension (extra_body={"knowledge_bases": ["docs"]}): answer from these, with
    # the sources as a top-level `sources` field of the response (or of the first chunk).
    knowledge_bases: list[str] = Field(default_factory=list, max_length=16)
    # Tools the client runs itself: offered in the model's format, calls returned as tool_calls.
    tools: list[ToolDefinition] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none"] | dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kubechat"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


_STARTED = int(time.time())

# Everything the chat service refuses before a completion starts (a failure after it started
# is in-band: an error event of the stream).
COMPLETION_ERRORS = error_responses(
    UnauthenticatedError, InvalidRequestError, MessageTooLargeError, ModelNotFoundError,
    ModelUnavailableError, KnowledgeBaseNotFoundError, KnowledgeBaseUnavailableError,
    ImageNotFoundError, ImageTooLargeError, DecompressionBombError, UnsupportedImageError,
    CorruptImageError, ToolRoundsExceededError, StorageUnavailableError,
)  # fmt: skip


@router.get("/models", responses=error_responses(UnauthenticatedError))
async def list_models(services: ServicesDep, _principal: PrincipalDep) -> ModelList:
    """The chat and embedding models; in cluster mode only those whose ChatModel is Ready
    (clients pick from this list and should not be offered one that would refuse them)."""
    return ModelList(
        data=[
            ModelCard(id=e.name, created=_STARTED)
            for e in services.catalog
            if (e.model.has(Capability.CHAT) or e.model.has(Capability.EMBEDDINGS))
            and ((readiness := e.readiness()) is None or readiness.ready)
        ]
    )


EMBEDDING_ERRORS = error_responses(
    UnauthenticatedError, InvalidRequestError, MessageTooLargeError, ModelNotFoundError, ModelUnavailableError
)


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request: one text or a list of texts."""

    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | Annotated[list[str], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


@router.post(
    "/embeddings",
    responses=error_responses(
        UnauthenticatedError,
        InvalidRequestError,
        MessageTooLargeError,
        ModelNotFoundError,
        ModelUnavailableError,
    ),
)
async def embeddings(
    body: EmbeddingRequest, services: ServicesDep, _principal: PrincipalDep
) -> EmbeddingList:
    """Vectors of the texts from an embedding model (capability `embeddings`), in the batches
    its engine takes: what a remote embedder of another kubechat, or any OpenAI client, asks."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    for text in texts:
        services.chat.check_message(text)
    entry = services.catalog.get(body.model, Capability.EMBEDDINGS)
    entry.check_ready()
    rows: list[Embedding] = []
    for start in range(0, len(texts), entry.batch_size):
        vectors = await services.triton.embed(entry.name, texts[start : start + entry.batch_size])
        for offset, vector in enumerate(vectors):
            value: list[float] | str = (
                base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
                if body.encoding_format == "base64"
                else [float(x) for x in vector]
            )
            rows.append(Embedding(index=start + offset, embedding=value))
    tokens = sum(entry.counter.count(t) for t in texts)
    return EmbeddingList(
        data=rows, model=entry.name, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    )


@router.post(
    "/chat/completions",
    response_model=None,
    responses={
        200: {
            "description": "A chat.completion, or with `stream` a text/event-stream of chat.completion.chunk "
            'events ending with `[DONE]` (a failure mid-stream is an `{"error": ...}` event, then `[DONE]`).',
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **COMPLETION_ERRORS,
    },
)
async def chat_completions(
    body: ChatCompletionRequest, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any] | EventSourceResponse:
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    # Refusals raise here, before a stream starts: they are JSON errors with their status.
    generation = await services.chat.complete(principal, _chat_request(body), completion_id)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return event_stream(_chunks(generation, completion_id, created, include_usage))
    return await _completion(generation, completion_id, created)


def _chat_request(body: ChatCompletionRequest) -> ChatRequest:
    """OpenAI's request in the chat service's terms."""
    messages = [
        ChatMessage(
            "system" if m.role == "developer" else m.role,
            m.text(),
            images=[_image(url) for url in m.image_urls()],
            tool_calls=[c.call() for c in m.tool_calls or []] if m.role == "assistant" else [],
            tool_call_id=m.tool_call_id or "",
        )
        for m in body.messages
    ]
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    options = GenerationOptions(
        temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=stop,
        repetition_penalty=body.repetition_penalty,
        max_tokens=body.max_completion_tokens or body.max_tokens,
    )  # fmt: skip
    return ChatRequest(
        messages, model=body.model, options=options, knowledge_bases=body.knowledge_bases,
        client_tools=_client_tools(body),
    )  # fmt: skip


def _image(url: str) -> ImageRef:
    """An image by reference to the principal's uploads, or inline as a data: URL (checked and
    normalized exactly like uploads, and not stored: this endpoint is stateless)."""
    if url.startswith(IMAGE_URL_PREFIX):
        return url[len(IMAGE_URL_PREFIX) :]
    if url.startswith("data:"):
        return InlineImage(url)
    raise InvalidRequestError(
        f"image URLs must be {IMAGE_URL_PREFIX}<id> (upload to /images first) or data: URLs; "
        "kubechat does not fetch remote URLs"
    )


def _client_tools(body: ChatCompletionRequest) -> list[ToolSpec]:
    """The tools the client offers (and runs itself); none with tool_choice "none"."""
    if not body.tools or body.tool_choice == "none":
        return []
    if isinstance(body.tool_choice, dict):
        raise InvalidRequestError('tool_choice may be "auto" or "none"; forcing a tool is not supported')
    return [ToolSpec(t.function.name, t.function.description, t.function.parameters) for t in body.tools]


async def _completion(generation: Generation, completion_id: str, created: int) -> dict[str, Any]:
    """The whole answer as one chat.completion; a failure is an error response."""
    calls: list[dict[str, Any]] = []
    sources: list[Citation] | None = None
    done: Done | None = None
    async with aclosing(generation.events()) as events:
        async for event in events:
            match event:
                case ToolCalled(call=call):
                    calls.append(ToolCallOut.of(call).model_dump())
                case Sources():
                    sources = event.sources
                case Failure():
                    raise event.error
                case Done():
                    done = event
    assert done is not None, "a generation ends with done"
    text = generation.text
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message = {"role": "assistant", "content": text or None, "tool_calls": calls}
    response: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": generation.grounding.plan.entry.name,
        "choices": [{"index": 0, "message": message, "finish_reason": done.finish_reason}],
        "usage": done.usage.model_dump(),
    }
    if sources is not None:
        response["sources"] = [s.model_dump() for s in sources]
    return response


async def _chunks(
    generation: Generation, completion_id: str, created: int, include_usage: bool
) -> AsyncIterator[bytes]:
    """The answer as chat.completion.chunk events, then `[DONE]`. Once the stream has started a
    failure can only be reported in-band: an `{"error": ...}` event, then `[DONE]`."""
    # Chunks differ only in their choices: the common head is serialized once.
    head = (
        f'{{"id":"{completion_id}","object":"chat.completion.chunk",'
        f'"created":{created},"model":{json.dumps(generation.grounding.plan.entry.name)},'
    )

    def chunk(delta: dict[str, Any], finish: str | None = None, extra: str = "") -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return sse_data(f'{head}"choices":[{json.dumps(choice, ensure_ascii=False)}]{extra}}}')

    opening = {"role": "assistant", "content": ""}
    cited = generation.grounding.sources is not None
    calls = 0
    async with aclosing(generation.events()) as events:
        async for event in events:
            match event:
                case Token():  # the hot path first
                    yield chunk({"content": event.text})
                case Started() if not cited:
                    yield chunk(opening)
                case Sources():  # right after Started: the opening chunk carries them (even none)
                    listed = json.dumps([s.model_dump() for s in event.sources], ensure_ascii=False)
                    yield chunk(opening, extra=f',"sources":{listed}')
                case ToolCalled(call=call):
                    yield chunk({"tool_calls": [{"index": calls, **ToolCallOut.of(call).model_dump()}]})
                    calls += 1
                case Failure():
                    # Headers are gone already: reported in-band, in the shape OpenAI clients raise on.
                    yield sse_data(json.dumps({"error": error_body(event.error).model_dump()}))
                    yield DONE
                    return
                case Done():
                    yield chunk({}, event.finish_reason)
                    if include_usage:
                        usage = json.dumps(event.usage.model_dump())
                        yield sse_data(f'{head}"choices":[],"usage":{usage}}}')
                    yield DONE
