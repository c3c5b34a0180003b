"""Chat history: sessions and messages, scoped per principal, behind a small store interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from kubechat.core.pagination import Page


class MessageStatus(StrEnum):
    COMPLETE = "complete"
    STREAMING = "streaming"  # being generated; checkpointed while it streams
    STOPPED = "stopped"  # the user pressed stop: partial answer kept
    INTERRUPTED = "interrupted"  # the client or the API went away mid-answer: partial kept
    FAILED = "failed"  # a dependency failed mid-answer: partial kept, error_code set


@dataclass(frozen=True)
class Session:
    id: str
    principal: str
    title: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Message:
    id: str
    session_id: str
    seq: int
    role: str
    content: str
    status: MessageStatus
    model: str
    created_at: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_code: str = ""
    # The citations an answer was given (knowledge bases), as sent in its `sources` event.
    sources: list[dict[str, Any]] = field(default_factory=list)
    # A user message's attached images: id, name and, once described, what the model was told.
    images: list[dict[str, Any]] = field(default_factory=list)
    # An answer's tool calls and their results, as sent in its tool_call/tool_result events.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # Each sentence of the answer with the sources that support it, as sent in its `done` event.
    attribution: list[dict[str, Any]] = field(default_factory=list)


class HistoryStore(Protocol):
    async def create_session(self, principal: str, title: str) -> Session: ...
    async def get_session(self, principal: str, session_id: str) -> Session: ...
    async def list_sessions(self, principal: str, limit: int, cursor: str | None) -> Page[Session]: ...
    async def rename_session(self, principal: str, session_id: str, title: str) -> Session: ...
    async def delete_session(self, principal: str, session_id: str) -> None: ...
    async def add_message(
        self,
        principal: str,
        session_id: str,
        role: str,
        content: str,
        *,
        model: str = "",
        status: MessageStatus = MessageStatus.COMPLETE,
        prompt_tokens: int = 0,
    ) -> Message: ...
    async def start_exchange(
        self,
        principal: str,
        session_id: str,
        content: str,
        *,
        model: str,
        prompt_tokens: int,
        sources: Sequence[Mapping[str, Any]] = (),
        images: Sequence[Mapping[str, Any]] = (),
    ) -> tuple[Message, Message]:
        """Store a user message (with its attached images) and its (empty, streaming) answer in
        one transaction."""
        ...

    async def update_message(
        self,
        message_id: str,
        content: str,
        status: MessageStatus,
        *,
        completion_tokens: int = 0,
        error_code: str = "",
    ) -> None: ...
    async def checkpoint(self, texts: Mapping[str, str]) -> None:
        """The text so far of answers that are still streaming, by message id, in one write; an
        answer no longer streaming (its final state is stored) is left as it is."""
        ...

    async def set_context(
        self, message_id: str, prompt_tokens: int, sources: Sequence[Mapping[str, Any]]
    ) -> None:
        """Record what an answer is based on, once retrieval has found it."""
        ...

    async def set_images(self, message_id: str, images: Sequence[Mapping[str, Any]]) -> None:
        """Record a user message's images once they are described."""
        ...

    async def set_tool_calls(self, message_id: str, calls: Sequence[Mapping[str, Any]]) -> None:
        """Record the tool calls an answer made so far, with their results."""
        ...

    async def set_attribution(self, message_id: str, attribution: Sequence[Mapping[str, Any]]) -> None:
        """Record which sources support each sentence of a finished answer."""
        ...

    async def list_messages(
        self, principal: str, session_id: str, limit: int, cursor: str | None
    ) -> Page[Message]: ...
    async def recent_messages(self, principal: str, session_id: str, limit: int) -> list[Message]: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...
