"""Clients for the integration tests: an async HTTP client and a WebSocket chat client."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ALICE_KEY, ApiProcess, auth


@dataclass
class Turn:
    start: dict[str, Any]
    tokens: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, Any] | None = None
    images: dict[str, Any] | None = None
    done: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return "".join(t["delta"] for t in self.tokens)


class ChatSocket:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    async def event(self) -> dict[str, Any]:
        return dict(json.loads(await self.connection.recv()))

    async def send(self, payload: dict[str, Any] | str | bytes) -> None:
        await self.connection.send(payload if isinstance(payload, str | bytes) else json.dumps(payload))

    async def ask(self, content: str, **fields: Any) -> None:
        await self.send({"type": "message", "content": content, **fields})

    async def turn(self, stop_after: int | None = None) -> Turn:
        """Read one turn's events up to its done event, optionally sending stop mid-stream."""
        first = await self.event()
        assert first["type"] == "start", first
        turn = Turn(start=first)
        while True:
            event = await self.event()
            if event["type"] == "token":
                turn.tokens.append(event)
                if stop_after is not None and len(turn.tokens) == stop_after:
                    await self.send({"type": "stop"})
            elif event["type"] == "error":
                turn.errors.append(event)
            elif event["type"] == "images":
                assert not turn.tokens, "images come before the first token"
                turn.images = event
            elif event["type"] == "sources":
                assert not turn.tokens, "sources come before the first token"
                turn.sources = event
            elif event["type"] == "done":
                turn.done = event
                return turn


@pytest.fixture
async def http(api: ApiProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, headers=auth(), timeout=120) as client:
        yield client


async def new_session(http: httpx.AsyncClient, title: str = "test") -> str:
    response = await http.post("/sessions", json={"title": title})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def open_socket(api: ApiProcess, session_id: str, key: str | None = ALICE_KEY) -> Any:
    headers = auth(key) if key else {}
    return connect(f"{api.ws_url}/ws/chat/{session_id}", additional_headers=headers, max_size=None)


@asynccontextmanager
async def chatting(api: ApiProcess, session_id: str) -> AsyncIterator[ChatSocket]:
    """A chat socket on the session, its history event already read."""
    async with open_socket(api, session_id) as connection:
        chat = ChatSocket(connection)
        assert (await chat.event())["type"] == "history"
        yield chat


@asynccontextmanager
async def chat_session(
    api: ApiProcess, http_timeout_s: float = 120
) -> AsyncIterator[tuple[ChatSocket, httpx.AsyncClient, str]]:
    """A new session of alice's, its chat socket (history event read) and an HTTP client."""
    async with httpx.AsyncClient(base_url=api.url, headers=auth(), timeout=http_timeout_s) as http:
        session = await new_session(http)
        async with chatting(api, session) as socket:
            yield socket, http, session


async def events_of_turn(socket: ChatSocket) -> list[dict[str, Any]]:
    """Every event of one turn, up to its done event (or an error that ends no answer)."""
    events = []
    while True:
        event = await socket.event()
        events.append(event)
        if event["type"] == "done" or (event["type"] == "error" and event.get("message_id") is None):
            return events


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def answer(events: list[dict[str, Any]]) -> str:
    """The answer's text: its token deltas joined."""
    return "".join(e["delta"] for e in of_type(events, "token"))


def metric(text: str, name: str, model: str) -> float:
    match = re.search(rf'^{name}{{[^}}]*model="{model}"[^}}]*}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0
