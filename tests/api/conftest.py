"""The API in process: the real app factory and lifespan (SQLite stores in tmp_path), driven by
FastAPI's TestClient, with the chat service's ports scripted (tests/scripted.py) through
`app.dependency_overrides`. The same routes against a real tritonserver and a real API process
are in tests/integration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.testclient import WebSocketTestSession
from starlette.types import Message
from starlette.websockets import WebSocketDisconnect

from kubechat.api.app import chat_config, create_app
from kubechat.api.dependencies import Services, get_services
from kubechat.api.settings import Settings
from kubechat.chat.embeddings import EmbeddingService
from kubechat.chat.service import ChatService
from kubechat.images.vision import VisionService
from tests.conftest import ALICE_KEY, BOB_KEY, EXAMPLE_MODELS, TEST_KNOWLEDGE_BASES
from tests.scripted import FixedKnowledge, FunctionTools, ScriptedTriton, citation


@dataclass
class InProcessApi:
    client: TestClient
    triton: ScriptedTriton
    tools: FunctionTools
    knowledge: FixedKnowledge
    services: Services

    def session(self) -> str:
        response = self.client.post("/sessions", json={"title": "test"})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def messages(self, session: str) -> list[dict[str, object]]:
        items: list[dict[str, object]] = self.client.get(f"/sessions/{session}/messages").json()["items"]
        return items


@pytest.fixture
def api(tmp_path: Path) -> Iterator[InProcessApi]:
    settings = Settings(
        state_dir=tmp_path, models_dir=EXAMPLE_MODELS, knowledge_bases_dir=TEST_KNOWLEDGE_BASES,
        api_keys=SecretStr(f"{ALICE_KEY}=alice,{BOB_KEY}=bob"), default_model="synthetic",
        max_message_chars=2000, mcp_server_enabled=False,
    )  # fmt: skip
    app = create_app(settings)
    triton = ScriptedTriton()
    tools = FunctionTools({"demo__add": lambda a: str(a["a"] + a["b"])})
    knowledge = FixedKnowledge({"handbook"}, [citation(1, "The codename is Heron.")])
    headers = {"Authorization": f"Bearer {ALICE_KEY}"}
    with TestClient(app, headers=headers) as client:
        real: Services = app.state.services
        vision = VisionService(real.catalog, triton, real.images, settings.vision_model)
        chat = ChatService(chat_config(settings), real.catalog, real.store, triton, knowledge, vision, tools)
        # The router stays for /ready; chat and vision, all that answers, use the script.
        embeddings = EmbeddingService(real.catalog, triton)
        services = replace(real, vision=vision, chat=chat, embeddings=embeddings)
        app.dependency_overrides[get_services] = lambda: services
        yield InProcessApi(client, triton, tools, knowledge, services)


def receive_json(socket: WebSocketTestSession, timeout: float = 10.0) -> Any:
    """The socket's next frame, decoded; a TimeoutError after `timeout` seconds, where the
    TestClient's own receive would wait for ever (a turn that never ends must fail, not hang).
    A close is WebSocketDisconnect, as with receive_json."""

    async def receive() -> Message:
        with anyio.fail_after(timeout):
            # The session's queue of frames sent by the app: receive() reads it without a deadline.
            message: Message = await socket._send_rx.receive()
            return message

    message = socket.portal.call(receive)
    if message["type"] == "websocket.close":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason", ""))
    return json.loads(message["text"])


def turn_frames(socket: WebSocketTestSession, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The frames of one turn through its done, each within `timeout` seconds."""
    frames = []
    while True:
        frame: dict[str, Any] = receive_json(socket, timeout)
        frames.append(frame)
        if frame["type"] == "done":
            return frames
