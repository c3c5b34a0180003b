"""OpenAI-compatible /v1/models and /v1/chat/completions, so existing clients work unchanged.

Stateless like OpenAI's API: the client sends the whole conversation and nothing is stored.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from kubechat.api.chat import cited_prompt, sampling_params, tool_system_turns
from kubechat.api.dependencies import PrincipalDep, Services, ServicesDep
from kubechat.api.errors import error_body
from kubechat.api.events import GenerationOptions
from kubechat.catalog import CatalogEntry, ChatTurn
from kubechat.core.errors import InvalidRequestError, KubechatError
from kubechat.core.resources import Capability, ToolCallFormat
from kubechat.images.vision import IMAGE_URL_PREFIX, Attachment, inline_attachment, with_images
from kubechat.knowledge.retrieval import Citation
from kubechat.tools.formats import ToolCallParser, assistant_tool_call_text, tool_results_turn
from kubechat.tools.types import MalformedToolCall, ToolCall, ToolSpec
from kubechat.triton.client import SamplingParams

router = APIRouter(prefix="/v1", tags=["openai"])


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

    model: str
    messages: Annotated[list[ChatCompletionMessage], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    # Not OpenAI's; the same extension vLLM accepts (extra_body={"repetition_penalty": 1.1}).
    repetition_penalty: Annotated[float, Field(ge=1, le=2)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1
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


@router.get("/models")
async def list_models(services: ServicesDep, _principal: PrincipalDep) -> ModelList:
    """The chat models; in cluster mode only those whose ChatModel is Ready (clients pick from
    this list and should not be offered one that would refuse them)."""
    return ModelList(
        data=[
            ModelCard(id=e.name, created=_STARTED)
            for e in services.catalog.chat_models()
            if (readiness := e.readiness()) is None or readiness.ready
        ]
    )


@dataclass(frozen=True)
class _Prepared:
    entry: CatalogEntry
    prompt: str
    prompt_tokens: int
    params: SamplingParams
    sources: list[Citation] | None
    image: bytes | None  # for a vision model, the one image it sees
    tool_format: ToolCallFormat | None  # set when the client offered tools: parse the output


async def _attachments(services: Services, principal: str, urls: list[str]) -> list[Attachment]:
    """Images by reference to the principal's uploads, or inline as data: URLs (checked and
    normalized exactly like uploads, and not stored: this endpoint is stateless)."""
    attachments = []
    for url in urls:
        if url.startswith(IMAGE_URL_PREFIX):
            attachments += await services.vision.attachments(principal, [url[len(IMAGE_URL_PREFIX) :]])
        elif url.startswith("data:"):
            attachments.append(await inline_attachment(url, services.settings.image_limits()))
        else:
            raise InvalidRequestError(
                f"image URLs must be {IMAGE_URL_PREFIX}<id> (upload to /images first) or data: URLs; "
                "kubechat does not fetch remote URLs"
            )
    return attachments


async def _prepare(services: Services, principal: str, body: ChatCompletionRequest) -> _Prepared:
    entry = services.catalog.get(body.model)
    entry.check_ready()
    tools = _client_tools(entry, body)
    fmt = entry.model.spec.tools.format
    turns, images = [], []
    names: dict[str, str] = {}  # tool call id -> name, for the results the client sends back
    for m in body.messages:
        text = m.text()
        services.chat.check_message(text)
        role: str = "system" if m.role == "developer" else m.role
        if m.role == "assistant" and m.tool_calls:
            calls = [c.call() for c in m.tool_calls]
            names.update((c.id, c.name) for c in calls)
            text += assistant_tool_call_text(fmt, calls)
        if m.role == "tool":
            call = ToolCall(m.tool_call_id or "", names.get(m.tool_call_id or "", "tool"), {})
            role, text = tool_results_turn(fmt, [(call, text)])
        turns.append(ChatTurn(role, text))
        images.append(await _attachments(services, principal, m.image_urls()))
    if tools:
        system = "\n\n".join(t.content for t in turns if t.role == "system")
        turns = [*tool_system_turns(entry, tools, system), *(t for t in turns if t.role != "system")]
    attached = [a for per_turn in images for a in per_turn]
    describer = services.vision.describer_for(entry, attached)
    if describer is not None:
        for i, per_turn in enumerate(images):
            if per_turn:
                described = await services.vision.describe(describer, per_turn, turns[i].content)
                turns[i] = ChatTurn(turns[i].role, with_images(turns[i].content, described))
    image = attached[0].png if attached and describer is None else None
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    options = GenerationOptions(
        temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=stop,
        repetition_penalty=body.repetition_penalty,
        max_tokens=body.max_completion_tokens or body.max_tokens,
    )  # fmt: skip
    params = sampling_params(entry, options)
    tool_format = fmt if tools else None
    if not body.knowledge_bases:
        prompt = entry.build_prompt(turns)
        return _Prepared(entry, prompt.text, prompt.tokens, params, None, image, tool_format)
    if turns[-1].role != "user":
        raise InvalidRequestError("knowledge_bases needs the conversation to end with a user message")
    question = turns[-1].content
    sources = await services.knowledge.search(
        principal, body.knowledge_bases, question,
        limit=services.settings.retrieval_sources, candidates=services.settings.retrieval_candidates,
    )  # fmt: skip
    prompt, sources = cited_prompt(entry, turns[:-1], question, sources)
    return _Prepared(entry, prompt.text, prompt.tokens, params, sources, image, tool_format)


def _client_tools(entry: CatalogEntry, body: ChatCompletionRequest) -> list[ToolSpec]:
    """The tools the client offers (and runs itself); none with tool_choice "none"."""
    if not body.tools or body.tool_choice == "none":
        return []
    if isinstance(body.tool_choice, dict):
        raise InvalidRequestError('tool_choice may be "auto" or "none"; forcing a tool is not supported')
    if not entry.model.has(Capability.TOOLS):
        raise InvalidRequestError(f"model {entry.name} does not call tools (no `tools` capability)")
    return [ToolSpec(t.function.name, t.function.description, t.function.parameters) for t in body.tools]


async def _parsed(deltas: AsyncIterator[str], fmt: ToolCallFormat | None) -> AsyncIterator[str | ToolCall]:
    """The model's output as text and, when the client offered tools, the calls it made. A
    malformed call is handed to the client as the text the model wrote."""
    if fmt is None:
        async for delta in deltas:
            yield delta
        return
    parser = ToolCallParser(fmt)
    async for delta in deltas:
        for item in parser.feed(delta):
            yield item.raw if isinstance(item, MalformedToolCall) else item
    for item in parser.finish():
        yield item.raw if isinstance(item, MalformedToolCall) else item


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any] | StreamingResponse:
    prepared = await _prepare(services, principal, body)
    entry, params, sources = prepared.entry, prepared.params, prepared.sources
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _stream(services, prepared, completion_id, created, include_usage)
        return StreamingResponse(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    deltas = services.triton.stream_text(
        entry.name, prepared.prompt, params, completion_id, image=prepared.image
    )
    pieces, calls = [], []
    async for item in _parsed(deltas, prepared.tool_format):
        if isinstance(item, ToolCall):
            calls.append(ToolCallOut.of(item).model_dump())
        else:
            pieces.append(item)
    text = "".join(pieces)
    completion_tokens = entry.counter.count(text)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message = {"role": "assistant", "content": text or None, "tool_calls": calls}
    response: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": entry.name,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if calls else _finish_reason(completion_tokens, params),
            }
        ],
        "usage": _usage(prepared.prompt_tokens, completion_tokens),
    }
    if sources is not None:
        response["sources"] = [s.model_dump() for s in sources]
    return response


def _finish_reason(completion_tokens: int, params: SamplingParams) -> str:
    return "length" if completion_tokens >= params.max_tokens else "stop"


async def _stream(
    services: Services, prepared: _Prepared, completion_id: str, created: int, include_usage: bool
) -> AsyncIterator[str]:
    entry, params, sources = prepared.entry, prepared.params, prepared.sources
    # Chunks differ only in their choices: the common head is serialized once.
    head = (
        f'{{"id":"{completion_id}","object":"chat.completion.chunk",'
        f'"created":{created},"model":{json.dumps(entry.name)},'
    )

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return f'data: {head}"choices":[{json.dumps(choice, ensure_ascii=False)}]}}\n\n'

    first = chunk({"role": "assistant", "content": ""})
    if sources is not None:  # asked for knowledge bases: the list, even empty
        listed = json.dumps([s.model_dump() for s in sources], ensure_ascii=False)
        first = first[: -len("}\n\n")] + f',"sources":{listed}}}\n\n'
    yield first
    pieces: list[str] = []
    calls = 0
    try:
        deltas = services.triton.stream_text(
            entry.name, prepared.prompt, params, completion_id, image=prepared.image
        )
        async for item in _parsed(deltas, prepared.tool_format):
            if isinstance(item, ToolCall):
                call = {"index": calls, **ToolCallOut.of(item).model_dump()}
                calls += 1
                yield chunk({"tool_calls": [call]})
            else:
                pieces.append(item)
                yield chunk({"content": item})
    except KubechatError as exc:
        # Headers are gone already: report in-band, in the shape OpenAI clients raise on.
        yield f"data: {json.dumps({'error': error_body(exc).model_dump()})}\n\n"
        yield "data: [DONE]\n\n"
        return
    completion_tokens = entry.counter.count("".join(pieces))
    yield chunk({}, "tool_calls" if calls else _finish_reason(completion_tokens, params))
    if include_usage:
        usage = json.dumps(_usage(prepared.prompt_tokens, completion_tokens))
        yield f'data: {head}"choices":[],"usage":{usage}}}\n\n'
    yield "data: [DONE]\n\n"
