"""The API in process: the real app factory and lifespan (SQLite stores in tmp_path), driven by
FastAPI's TestClient, with the chat service's ports scripted (tests/scripted.py) through
`app.dependency_overrides`. The same routes against a real tritonserver and a real API process
are in tests/integration."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from kubechat.api.app import chat_config, create_app
from kubechat.api.dependencies import Services, get_services
from kubechat.api.settings import Settings
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
        services = replace(real, vision=vision, chat=chat)
        app.dependency_overrides[get_services] = lambda: services
        yield InProcessApi(client, triton, tools, knowledge, services)
