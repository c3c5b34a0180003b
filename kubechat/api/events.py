"""The WebSocket protocol of /ws/chat/{session_id}: client messages and server events.

Every frame is a JSON object with a `type`. Server events are pydantic models so the protocol
is typed and documented in one place; see docs/websocket.md. A turn's frames are the chat
service's domain events (kubechat.chat.events), each mapped here by `turn_frame`; the values
they carry (`ToolActivity`, `Usage`, `Timings`, `GenerationOptions`) are the domain's own.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, Strict

from kubechat.api.errors import ErrorBody, error_body
from kubechat.chat.events import (
    ChatEvent,
    Done,
    Failure,
    Images,
    Sources,
    Started,
    Timings,
    Token,
    ToolActivity,
    ToolCalled,
    ToolReturned,
    Usage,
)
from kubechat.chat.request import ChatMessage, ChatRequest, GenerationOptions
from kubechat.images.vision import ImageDescription
from kubechat.knowledge.attribution import SentenceSources
from kubechat.knowledge.retrieval import Citation
from kubechat.stores.history import Message, Session


class UserMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["message"]
    content: Annotated[str, Field(min_length=1)]
    model: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="A chat model's name; omitted or null: the default model."
    )
    knowledge_bases: list[str] = Field(default_factory=list, max_length=16)
    image_ids: list[str] = Field(
        default_factory=list, max_length=8, description="Images uploaded to /images, by id."
    )
    tools: Annotated[bool, Strict()] = False
    options: GenerationOptions = Field(default_factory=GenerationOptions)

    def request(self) -> ChatRequest:
        return ChatRequest(
            messages=[ChatMessage("user", self.content, images=self.image_ids)], model=self.model,
            options=self.options, knowledge_bases=self.knowledge_bases, mcp_tools=self.tools,
        )  # fmt: skip


class StopRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["stop"]


class PingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["ping"]


ClientMessage = Annotated[UserMessage | StopRequest | PingRequest, Field(discriminator="type")]


class SessionOut(BaseModel):
    id: str
    title: str
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, session: Session) -> SessionOut:
        return cls(
            id=session.id, title=session.title,
            created_at=session.created_at, updated_at=session.updated_at,
        )  # fmt: skip


class MessageOut(BaseModel):
    id: str
    seq: int
    role: str
    content: str
    status: str
    model: str
    created_at: float
    prompt_tokens: int
    completion_tokens: int
    error_code: str
    sources: list[Citation] = Field(default_factory=list, description="Citations the answer was given.")
    attribution: list[SentenceSources] = Field(
        default_factory=list,
        description="The answer's sentences with their supporting sources, as in its done event.",
    )
    images: list[ImageDescription] = Field(default_factory=list, description="Attached images.")
    tool_calls: list[ToolActivity] = Field(default_factory=list, description="Tools the answer used.")

    @classmethod
    def of(cls, m: Message) -> MessageOut:
        return cls(
            id=m.id, seq=m.seq, role=m.role, content=m.content, status=m.status, model=m.model,
            created_at=m.created_at, prompt_tokens=m.prompt_tokens,
            completion_tokens=m.completion_tokens, error_code=m.error_code,
            sources=[Citation.model_validate(s) for s in m.sources],
            attribution=[SentenceSources.model_validate(a) for a in m.attribution],
            images=[ImageDescription.model_validate(i) for i in m.images],
            tool_calls=[ToolActivity.model_validate(t) for t in m.tool_calls],
        )  # fmt: skip


class HistoryEvent(BaseModel):
    type: Literal["history"] = "history"
    session: SessionOut
    messages: list[MessageOut]


class StartEvent(BaseModel):
    type: Literal["start"] = "start"
    message_id: str
    user_message_id: str
    model: str
    turns_dropped: int = 0
    request_id: str | None = Field(
        default=None,
        description="The socket's request id (its handshake's X-Request-ID): what the API's log lines "
        "about this answer carry.",
    )


class SourcesEvent(BaseModel):
    """Sent after `start` and before the first token of an answer that used knowledge bases."""

    type: Literal["sources"] = "sources"
    message_id: str
    sources: list[Citation]
    nothing_found: bool = Field(
        default=False,
        description="No knowledge base held anything on the question above its relevance floor: "
        "`sources` is empty and the answer says so (the model is not asked).",
    )


class ImagesEvent(BaseModel):
    """Sent after `start` when the message has images: for a text-only model, what it was told
    about each image (a vision model's description); for a vision model, just the ids."""

    type: Literal["images"] = "images"
    message_id: str
    images: list[ImageDescription]


class ToolCallEvent(BaseModel):
    """The model asked for a tool; its result follows as a `tool_result` with the same id."""

    type: Literal["tool_call"] = "tool_call"
    message_id: str
    id: str
    name: str
    arguments: dict[str, Any]


class ToolResultEvent(BaseModel):
    type: Literal["tool_result"] = "tool_result"
    message_id: str
    id: str
    name: str
    ok: bool
    content: str = Field(description="The tool's text, cut to the model's maxResultChars.")
    error_code: str = Field(
        default="",
        description="tool_error, tool_timeout, tool_unavailable, unknown_tool, invalid_arguments or "
        "malformed_tool_call; empty when ok.",
    )
    truncated: bool = False


class TokenEvent(BaseModel):
    type: Literal["token"] = "token"
    message_id: str
    seq: int
    delta: str


class DoneEvent(BaseModel):
    type: Literal["done"] = "done"
    message_id: str
    status: str
    usage: Usage
    timings: Timings
    attribution: list[SentenceSources] = Field(
        default_factory=list,
        description="A complete answer from sources, sentence by sentence, with the sources that support "
        "each (by embedding similarity) and the [n] the model wrote; empty without sources.",
    )


class ErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    error: ErrorBody
    message_id: str | None = None


class PongEvent(BaseModel):
    type: Literal["pong"] = "pong"


ServerEvent = (
    HistoryEvent
    | StartEvent
    | SourcesEvent
    | ImagesEvent
    | ToolCallEvent
    | ToolResultEvent
    | TokenEvent
    | DoneEvent
    | ErrorEvent
    | PongEvent
)


def token_frame(message_id: str, seq: int, delta: str) -> str:
    """The hot path: one frame per token (or per tokens ready together), serialized without
    building a model; orjson writes the delta as json.dumps(ensure_ascii=False) would, faster."""
    return (
        f'{{"type":"token","message_id":"{message_id}","seq":{seq},"delta":{orjson.dumps(delta).decode()}}}'
    )


def turn_frame(message_id: str, event: ChatEvent, request_id: str | None = None) -> str:
    """The frame of one event of the answer `message_id` (`request_id`: the socket's, for `start`)."""
    frame: ServerEvent
    match event:
        case Token():  # the hot path first
            return token_frame(message_id, event.seq, event.text)
        case Started():
            frame = StartEvent(
                message_id=message_id, user_message_id=event.user_message_id or "", model=event.model,
                turns_dropped=event.turns_dropped, request_id=request_id,
            )  # fmt: skip
        case Images():
            frame = ImagesEvent(message_id=message_id, images=event.images)
        case Sources():
            frame = SourcesEvent(
                message_id=message_id, sources=event.sources, nothing_found=event.nothing_found
            )
        case ToolCalled(call=call):
            frame = ToolCallEvent(message_id=message_id, id=call.id, name=call.name, arguments=call.arguments)
        case ToolReturned(result=r):
            frame = ToolResultEvent(
                message_id=message_id, id=r.id, name=r.name, ok=bool(r.ok), content=r.content,
                error_code=r.error_code, truncated=r.truncated,
            )  # fmt: skip
        case Failure():
            frame = ErrorEvent(error=error_body(event.error), message_id=message_id)
        case Done():
            frame = DoneEvent(
                message_id=message_id, status=event.status, usage=event.usage, timings=event.timings,
                attribution=event.attribution,
            )  # fmt: skip
    return frame.model_dump_json()
