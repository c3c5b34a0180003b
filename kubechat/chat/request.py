"""What a transport asks the chat service for: the new messages, the model and its options."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from kubechat.catalog import ChatTurn
from kubechat.tools.types import ToolCall, ToolSpec


class GenerationOptions(BaseModel):
    """Sampling options of one request; unset ones take the ChatModel's defaults."""

    model_config = ConfigDict(extra="forbid")

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    repetition_penalty: Annotated[float, Field(ge=1, le=2)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: list[str] | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class InlineImage:
    """An image sent inside the request as a base64 data: URL (checked like an upload, not stored)."""

    data_url: str


# An image of a message: the id of one the principal uploaded to /images, or an inline one.
ImageRef = str | InlineImage


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message the client sends: checked against the size limit, its images resolved."""

    role: str  # system, user, assistant or tool
    content: str
    images: Sequence[ImageRef] = ()
    tool_calls: Sequence[ToolCall] = ()  # an assistant's calls of the client's tools, sent back
    tool_call_id: str = ""  # a tool message: the call it answers


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A request for one answer to `messages`, whose last one is the question.

    `mcp_tools` offers the model the MCP tools its ChatModel allows, run here in a loop;
    `client_tools` are the client's own (OpenAI's `tools`): calls are handed back to it.
    `history` holds earlier turns that are already stored (and were checked when they were).
    """

    messages: Sequence[ChatMessage]
    model: str | None = None
    options: GenerationOptions = field(default_factory=GenerationOptions)
    knowledge_bases: Sequence[str] = ()
    mcp_tools: bool = False
    client_tools: Sequence[ToolSpec] = ()
    history: Sequence[ChatTurn] = ()
