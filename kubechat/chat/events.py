"""The events of one answer as it is generated, which each transport maps to its own frames.

A generation yields, in order: `Started`, `Images` (the question had images), `Sources` (it named
knowledge bases), then `Token`, `ToolCalled` and `ToolReturned` as the model answers, and last
`Done`, right after a `Failure` when the answer failed. The WebSocket maps them to the frames of
kubechat.api.events; /v1/chat/completions to OpenAI chunks or one response.

Also here: the values an answer stores and reports (`ToolActivity`, `Usage`, `Timings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from kubechat.core.errors import KubechatError
from kubechat.images.vision import ImageDescription
from kubechat.knowledge.attribution import SentenceSources
from kubechat.knowledge.retrieval import Citation
from kubechat.stores.history import MessageStatus
from kubechat.tools.types import ToolCall


class ToolActivity(BaseModel):
    """One tool call of an answer and, once it ran, its result (as stored with the answer)."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    ok: bool | None = Field(default=None, description="None until the tool has answered.")
    content: str = Field(default="", description="The result, cut to the model's maxResultChars.")
    error_code: str = ""
    truncated: bool = False


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Timings(BaseModel):
    time_to_first_token_ms: float | None
    total_ms: float
    tokens_per_second: float | None


# Why the model stopped, in OpenAI's words: its end (or a stop sequence), max_tokens, or calls
# handed back to the client that offered the tools.
FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True, slots=True)
class Started:
    """The answer begins: the prompt is built and the model is about to be asked."""

    model: str
    prompt_tokens: int
    turns_dropped: int  # older turns left out to fit the model's context window
    user_message_id: str | None = None  # the stored question; None when nothing is stored


@dataclass(frozen=True, slots=True)
class Images:
    """The question's images as the model knows them: a text-only model's descriptions, or just
    the ids of the images a vision model sees itself."""

    images: list[ImageDescription]


@dataclass(frozen=True, slots=True)
class Sources:
    """The citations given to the model (the question named knowledge bases; possibly none).

    `nothing_found`: no knowledge base held anything above its relevance floor; the answer
    says so instead of asking the model (chat.generation.nothing_found_answer).
    """

    sources: list[Citation]
    nothing_found: bool = False


# Not frozen, unlike the others: one is built per token, and a frozen dataclass's __init__
# (object.__setattr__ per field) costs three times as much. Treat it as immutable all the same.
@dataclass(slots=True)
class Token:
    """Text to append to the answer; `seq` counts an answer's tokens from 1."""

    seq: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolCalled:
    """The model called a tool; a `ToolReturned` with the same id follows when it runs here."""

    call: ToolCall


@dataclass(frozen=True, slots=True)
class ToolReturned:
    """A tool's result, as it went back to the model and is stored with the answer."""

    result: ToolActivity


@dataclass(frozen=True, slots=True)
class Failure:
    """The answer failed (the model, describing an image, retrieval or the tool loop); `Done`
    with status `failed` follows."""

    error: KubechatError


@dataclass(frozen=True, slots=True)
class Done:
    status: MessageStatus
    usage: Usage
    timings: Timings
    finish_reason: FinishReason
    # Each sentence of a complete answer from sources with the sources that support it
    # (kubechat.knowledge.attribution); empty without sources.
    attribution: list[SentenceSources] = field(default_factory=list)


ChatEvent = Started | Images | Sources | Token | ToolCalled | ToolReturned | Failure | Done
