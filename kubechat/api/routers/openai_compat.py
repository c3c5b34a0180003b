"""OpenAI-compatible /v1/models and /v1/chat/completions, so existing clients work unchanged.

Stateless like OpenAI's API: the client sends the whole conversation and nothing is stored.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter
from fastapi.sse import EventSourceResponse
from jsonschema import Draft202012Validator, SchemaError
from pydantic import BaseModel, ConfigDict, Field, Strict

from kubechat.api.dependencies import PrincipalDep, ServicesDep
from kubechat.api.errors import error_body, error_responses
from kubechat.api.routing import ApiRoute
from kubechat.api.sse import DONE, event_stream, sse_data
from kubechat.catalog import CatalogEntry
from kubechat.chat.coalesce import coalesced
from kubechat.chat.events import ChatEvent, Done, Failure, Sources, Started, Token, ToolCalled
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
    UnsupportedParameterError,
    UnsupportedValueError,
)
from kubechat.core.resources import Capability, ModelPurpose
from kubechat.images.vision import IMAGE_URL_PREFIX
from kubechat.knowledge.retrieval import Citation
from kubechat.tools.types import ToolCall, ToolSpec
from kubechat.triton.client import Guide
from kubechat.triton.contract import GUIDE_JSON_SCHEMA

router = APIRouter(prefix="/v1", tags=["openai"], route_class=ApiRoute)


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
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    # `schema` shadows a BaseModel attribute: the field is `schema_` on the wire as `schema`.
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`: `text`, `json_object` or `json_schema` (with its schema).

    Enforced by constrained decoding, strict or not: the answer always matches the schema (a
    `strict: false` schema is followed exactly too, which OpenAI allows itself)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def guide(self) -> Guide | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            # An object, as OpenAI's JSON mode promises, not any JSON value.
            return Guide(GUIDE_JSON_SCHEMA, json.dumps({"type": "object"}))
        if self.json_schema is None:
            raise InvalidRequestError(
                "response_format json_schema needs json_schema", param="response_format"
            )
        schema = self.json_schema.schema_
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise InvalidRequestError(
                f"response_format.json_schema.schema is not a JSON schema: {exc.message}",
                param="response_format.json_schema.schema",
            ) from None
        return Guide(GUIDE_JSON_SCHEMA, json.dumps(schema))


Penalty = Annotated[float, Strict(), Field(ge=-2, le=2)]


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request. Every field OpenAI defines is declared, and each is
    either honoured or refused with a 400 that names it (`unsupported_parameter`,
    `unsupported_value`; see `refuse_unsupported`); a field OpenAI does not define is refused
    as OpenAI refuses it (`unknown_parameter`). Nothing is silently ignored."""

    model_config = ConfigDict(extra="forbid")

    # Required and never empty, as OpenAI's: "" does not quietly mean the default model.
    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[ChatCompletionMessage], Field(min_length=1)]
    stream: bool | None = False
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
    n: Annotated[int, Strict(), Field(ge=1, le=128)] | None = None
    # kubechat's extension (extra_body={"knowledge_bases": ["docs"]}): answer from these, with
    # the sources as a top-level `sources` field of the response (or of the first chunk), and
    # `nothing_found`: true when no knowledge base held anything on the question.
    knowledge_bases: list[str] = Field(default_factory=list, max_length=16)
    # Tools the client runs itself: offered in the model's format, calls returned as tool_calls.
    tools: list[ToolDefinition] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Strict(), Field(ge=0, le=20)] | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    logit_bias: dict[str, float] | None = None
    # Identifiers and bookkeeping that change no answer: accepted, and have no effect here.
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    modalities: list[str] | None = None
    # OpenAI features no kubechat model has: refused whenever they are set.
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None


# Set to anything but null, these are refused: no kubechat model or path implements them.
_NEVER_SUPPORTED = (
    "audio", "prediction", "reasoning_effort", "verbosity", "web_search_options", "functions",
    "function_call",
)  # fmt: skip


def refuse_unsupported(body: ChatCompletionRequest) -> None:
    """Refuse, naming the field, every request field set to something kubechat does not do.

    Defaults and their equivalents (`n` 1, penalties 0, `logprobs` false, `store` false...) are
    what kubechat does anyway, so they pass: clients and frameworks send them explicitly."""
    for name in _NEVER_SUPPORTED:
        if getattr(body, name) is not None:
            raise UnsupportedParameterError(f"{name} is not supported by kubechat", param=name)
    if body.n not in (None, 1):
        raise UnsupportedValueError("n must be 1: kubechat generates one choice per request", param="n")
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(body, name) not in (None, 0):
            raise UnsupportedParameterError(
                f"{name} is not supported (use repetition_penalty, 1 to 2); send 0 or leave it out",
                param=name,
            )
    if body.logit_bias:
        raise UnsupportedParameterError("logit_bias is not supported", param="logit_bias")
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs true", param="top_logprobs")
    if body.tool_choice == "required" or isinstance(body.tool_choice, dict):
        raise UnsupportedValueError(
            'tool_choice may be "auto" or "none"; forcing a tool call is not supported', param="tool_choice"
        )
    if body.parallel_tool_calls is False:
        raise UnsupportedValueError(
            "parallel_tool_calls false is not supported: a model may answer with several calls",
            param="parallel_tool_calls",
        )
    if body.store:
        raise UnsupportedValueError("store true is not supported: /v1 stores nothing", param="store")
    if body.service_tier not in (None, "auto", "default"):
        raise UnsupportedValueError('service_tier may be "auto" or "default"', param="service_tier")
    if body.modalities is not None and body.modalities != ["text"]:
        raise UnsupportedValueError('modalities may only be ["text"]', param="modalities")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kubechat"
    # kubechat's extensions (OpenAI clients ignore fields they do not know).
    purpose: ModelPurpose = Field(
        description="general: for people to chat with. development: for benchmarks, tests and demos."
    )
    default: bool = Field(description="The default chat model (listed first).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


_STARTED = int(time.time())

# Everything the chat service refuses before a completion starts (a failure after it started
# is in-band: an error event of the stream).
COMPLETION_ERRORS = error_responses(
    UnauthenticatedError, InvalidRequestError, UnsupportedParameterError, UnsupportedValueError,
    MessageTooLargeError, ModelNotFoundError, ModelUnavailableError, KnowledgeBaseNotFoundError,
    KnowledgeBaseUnavailableError, ImageNotFoundError, ImageTooLargeError, DecompressionBombError,
    UnsupportedImageError, CorruptImageError, ToolRoundsExceededError, StorageUnavailableError,
    validation_status=400,
)  # fmt: skip

# The capabilities /v1 serves: chat completions and embeddings.
OPENAI_CAPABILITIES = (Capability.CHAT, Capability.EMBEDDINGS)


def _listed(entry: CatalogEntry) -> bool:
    """Served through /v1 and, in cluster mode, Ready: clients pick from the list and should not
    be offered a model that would refuse them."""
    readiness = entry.readiness()
    served = any(entry.model.has(c) for c in OPENAI_CAPABILITIES)
    return served and (readiness is None or readiness.ready)


@router.get("/models", responses=error_responses(UnauthenticatedError, validation_status=400))
async def list_models(services: ServicesDep, _principal: PrincipalDep) -> ModelList:
    """The chat and embedding models, the default chat model first; in cluster mode only those
    whose ChatModel is Ready."""
    default = services.catalog.default_model
    cards = [_card(e, default) for e in services.catalog if _listed(e)]
    return ModelList(data=sorted(cards, key=lambda card: not card.default))


@router.get(
    "/models/{model_id}",
    responses=error_responses(UnauthenticatedError, ModelNotFoundError, validation_status=400),
)
async def retrieve_model(model_id: str, services: ServicesDep, _principal: PrincipalDep) -> ModelCard:
    """One model of the list, as OpenAI's model object; 404 `model_not_found` for any other."""
    entry = services.catalog.find(model_id)
    if entry is None or not _listed(entry):
        raise ModelNotFoundError(f"The model '{model_id}' does not exist", param="model")
    return _card(entry, services.catalog.default_model)


def _card(entry: CatalogEntry, default: str) -> ModelCard:
    return ModelCard(
        id=entry.name, created=_STARTED, purpose=entry.model.spec.purpose, default=entry.name == default
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
    refuse_unsupported(body)
    generation = await services.chat.complete(principal, _chat_request(body), completion_id)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        # Read ahead, ready tokens merged into one chunk (kubechat.chat.coalesce); not with log
        # probabilities, whose entries must ride on the chunk of the text they scored.
        answer = generation.events()
        events = answer if generation.logprobs is not None else coalesced(answer)
        try:
            opening = await _opening(events)
        except BaseException:
            await events.aclose()
            raise
        return event_stream(_chunks(generation, opening, events, completion_id, created, include_usage))
    return await _completion(generation, completion_id, created)


async def _opening(events: AsyncGenerator[ChatEvent, None]) -> list[ChatEvent]:
    """The answer's events up to its first token, tool call or end. No header is sent before
    them, so a failure there (a model at capacity: `busy`, 429 with Retry-After; a model gone:
    503) is an error response with its status, as OpenAI clients expect, not an in-band event."""
    opening: list[ChatEvent] = []
    async for event in events:
        if isinstance(event, Failure):
            raise event.error
        opening.append(event)
        if not isinstance(event, Started | Sources):
            break
    return opening


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
        guide=body.response_format.guide() if body.response_format is not None else None,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
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
    return [ToolSpec(t.function.name, t.function.description, t.function.parameters) for t in body.tools]


async def _completion(generation: Generation, completion_id: str, created: int) -> dict[str, Any]:
    """The whole answer as one chat.completion; a failure is an error response."""
    calls: list[dict[str, Any]] = []
    sources: list[Citation] | None = None
    nothing_found = False
    done: Done | None = None
    async with aclosing(generation.events()) as events:
        async for event in events:
            match event:
                case ToolCalled(call=call):
                    calls.append(ToolCallOut.of(call).model_dump())
                case Sources():
                    sources, nothing_found = event.sources, event.nothing_found
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
    if generation.logprobs is not None:
        response["choices"][0]["logprobs"] = {"content": generation.logprobs, "refusal": None}
    if sources is not None:
        response["sources"] = [s.model_dump() for s in sources]
        response["nothing_found"] = nothing_found
        response["attribution"] = [a.model_dump() for a in done.attribution]
    return response


async def _chunks(
    generation: Generation,
    opening_events: list[ChatEvent],
    rest: AsyncGenerator[ChatEvent, None],
    completion_id: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """The answer (`opening_events`, already read, then `rest`) as chat.completion.chunk events,
    then `[DONE]`. Once the stream has started a failure can only be reported in-band: an
    `{"error": ...}` event, then `[DONE]`."""
    # Chunks differ only in their choices: the common head is serialized once.
    head = (
        f'{{"id":"{completion_id}","object":"chat.completion.chunk",'
        f'"created":{created},"model":{json.dumps(generation.grounding.plan.entry.name)},'
    )

    def chunk(delta: dict[str, Any], finish: str | None = None, extra: str = "") -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return sse_data(f'{head}"choices":[{json.dumps(choice, ensure_ascii=False)}]{extra}}}')

    def text_chunk(text: str) -> bytes:  # the hot path: chunk({"content": text}), written directly
        content = orjson.dumps(text).decode()
        return sse_data(
            f'{head}"choices":[{{"index":0,"delta":{{"content":{content}}},"finish_reason":null}}]}}'
        )

    # Log probabilities ride on the chunk of the text they produced (OpenAI's choice.logprobs).
    scored = generation.logprobs
    reported = 0

    def scored_chunk(text: str, finish: str | None = None) -> bytes:
        nonlocal reported
        assert scored is not None
        entries, reported = scored[reported:], len(scored)
        choice = {
            "index": 0,
            "delta": {"content": text},
            "logprobs": {"content": entries},
            "finish_reason": finish,
        }
        return sse_data(f'{head}"choices":[{json.dumps(choice, ensure_ascii=False)}]}}')

    opening = {"role": "assistant", "content": ""}
    cited = generation.grounding.sources is not None
    calls = 0

    async def answer() -> AsyncGenerator[ChatEvent, None]:
        for event in opening_events:
            yield event
        async with aclosing(rest):
            async for event in rest:
                yield event

    async with aclosing(answer()) as events:
        async for event in events:
            match event:
                case Token():  # the hot path first
                    yield text_chunk(event.text) if scored is None else scored_chunk(event.text)
                case Started() if not cited:
                    yield chunk(opening)
                case Sources():  # right after Started: the opening chunk carries them (even none)
                    listed = json.dumps([s.model_dump() for s in event.sources], ensure_ascii=False)
                    found = json.dumps(event.nothing_found)
                    yield chunk(opening, extra=f',"sources":{listed},"nothing_found":{found}')
                case ToolCalled(call=call):
                    yield chunk({"tool_calls": [{"index": calls, **ToolCallOut.of(call).model_dump()}]})
                    calls += 1
                case Failure():
                    # Headers are gone already: reported in-band, in the shape OpenAI clients raise on.
                    yield sse_data(json.dumps({"error": error_body(event.error).model_dump()}))
                    yield DONE
                    return
                case Done():
                    if scored is not None and reported < len(scored):  # tokens of no text (held back)
                        yield scored_chunk("")
                    attributed = ""
                    if cited:
                        listed = json.dumps([a.model_dump() for a in event.attribution], ensure_ascii=False)
                        attributed = f',"attribution":{listed}'
                    yield chunk({}, event.finish_reason, extra=attributed)
                    if include_usage:
                        usage = json.dumps(event.usage.model_dump())
                        yield sse_data(f'{head}"choices":[],"usage":{usage}}}')
                    yield DONE
