"""Reaching a deployed kubechat through its ingress: the base URL and API key from the
environment (`make e2e` sets them), an HTTP client, and a chat socket.

Every test module here is marked `requires_cluster`: without KUBECHAT_E2E_URL the whole
directory is skipped, so a plain `pytest` (make test) reports them as skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.integration.conftest import ChatSocket, new_session

__all__ = ["Chat", "chatting", "client", "new_session", "requires_cluster", "ws_url"]

E2E_URL = os.environ.get("KUBECHAT_E2E_URL", "").rstrip("/")
API_KEY = os.environ.get("KUBECHAT_E2E_API_KEY", "")

requires_cluster = pytest.mark.skipif(
    not E2E_URL,
    reason="end to end against a deployed kubechat: run `make e2e` (kind), or set KUBECHAT_E2E_URL "
    "(and KUBECHAT_E2E_API_KEY) to an installation's ingress",
)

# Models and knowledge base of `make e2e` (examples/models, examples/knowledge-bases).
CHAT_MODEL = "smollm2"
KNOWLEDGE_BASE = "docs"
GREEDY = {"temperature": 0, "max_tokens": 48, "repetition_penalty": 1.0}
DEADLINE_S = 300.0  # CPU models on a laptop's kind node: ingestion and answers take a while


def client() -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}
    return httpx.AsyncClient(base_url=E2E_URL, headers=headers, timeout=120)


def ws_url(session_id: str) -> str:
    base = (
        "wss" + E2E_URL.removeprefix("https")
        if E2E_URL.startswith("https")
        else "ws" + E2E_URL.removeprefix("http")
    )
    return f"{base}/ws/chat/{session_id}"


class Chat(ChatSocket):
    """The integration tests' chat socket, waiting at most DEADLINE_S for each event."""

    async def event(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.connection.recv(), DEADLINE_S)
        return dict(json.loads(raw))


@asynccontextmanager
async def chatting(session_id: str) -> AsyncIterator[Chat]:
    """A chat socket through the ingress, the key as a browser passes it (`?token=`)."""
    url = ws_url(session_id) + (f"?token={API_KEY}" if API_KEY else "")
    async with connect(url, max_size=None, open_timeout=60) as connection:
        chat = Chat(connection)
        assert (await chat.event())["type"] == "history"
        yield chat
