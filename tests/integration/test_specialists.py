"""Specialists as tools: the deterministic tool-caller model supervises, SmolLM2 (Triton) answers
as its specialist, a remote model (the first API's /v1 serving the tool-caller) sits in between
to show how deep delegation may go, and kubechat's knowledge-base search is a native tool."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from kubechat.embedded.tritonserver import TritonServer
from tests.conftest import ALICE_KEY, EXAMPLE_MODELS, ApiProcess, api_env, auth, remote_model_document
from tests.integration.conftest import answer, chat_session, events_of_turn, of_type
from tests.integration.test_knowledge_bases import indexed

pytestmark = pytest.mark.triton

QUESTION = "What is the capital of France? Answer in one sentence."
SPECIALIST = {"name": "smollm2", "description": "A small general assistant: ask it short questions."}
HELPER = {"name": "helper", "description": "A coordinator that may delegate further."}


def _remote_supervisor(name: str, peer: str, max_depth: int, models: list[dict[str, str]]) -> str:
    document = yaml.safe_load(remote_model_document(name, f"{peer}/v1", model="tool-caller"))
    document["spec"]["endpoint"]["apiKeyEnv"] = "KUBECHAT_TEST_PEER_KEY"
    document["spec"]["capabilities"] = ["chat", "tools"]
    document["spec"]["engine"]["maxInputTokens"] = 100000
    document["spec"]["engine"]["maxOutputTokens"] = 2048
    document["spec"]["defaults"] = {"temperature": 0, "maxTokens": 512}
    document["spec"]["tools"] = {"format": "hermes", "maxDepth": max_depth, "models": models}
    return yaml.safe_dump(document)


@pytest.fixture(scope="module")
def specialist_api(
    triton: TritonServer, api: ApiProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """`tool-caller` supervises smollm2 and `helper` (maxDepth 1), and searches knowledge bases;
    `helper` and `deep` are the tool-caller again, reached as remote models through the first
    API's /v1; `deep` may delegate two levels down (maxDepth 2)."""
    models = tmp_path_factory.mktemp("specialist-models")
    for path in EXAMPLE_MODELS.glob("*.yaml"):
        shutil.copy(path, models / path.name)
    supervisor = yaml.safe_load((models / "tool-caller.yaml").read_text())
    supervisor["spec"]["tools"].update(
        {"models": [SPECIALIST, HELPER], "builtin": ["search_knowledge_base"], "maxDepth": 1}
    )
    (models / "tool-caller.yaml").write_text(yaml.safe_dump(supervisor))
    (models / "helper.yaml").write_text(_remote_supervisor("helper", api.url, 1, [SPECIALIST]))
    (models / "deep.yaml").write_text(_remote_supervisor("deep", api.url, 2, [HELPER]))
    state = tmp_path_factory.mktemp("specialist-state")
    env = {**api_env(triton, models, state), "KUBECHAT_TEST_PEER_KEY": ALICE_KEY}
    process = ApiProcess(env, state / "api.log")
    process.start()
    yield process
    process.stop()


def call(tool: str, **arguments: Any) -> str:
    return f"call {tool} {json.dumps(arguments)}"


async def test_the_supervisor_calls_a_specialist_and_quotes_its_answer(specialist_api: ApiProcess) -> None:
    async with chat_session(specialist_api, http_timeout_s=300) as (socket, http, session):
        await socket.ask(call("smollm2", prompt=QUESTION), model="tool-caller", tools=True)
        events = await events_of_turn(socket)
        stored = (await http.get(f"/sessions/{session}/messages")).json()["items"][-1]

    assert [e["type"] for e in events if e["type"] != "token"] == [
        "start",
        "tool_call",
        "tool_result",
        "done",
    ]
    (called,) = of_type(events, "tool_call")
    (result,) = of_type(events, "tool_result")
    assert (called["name"], called["arguments"]) == ("smollm2", {"prompt": QUESTION})
    assert result["ok"] is True and "Paris" in result["content"]
    # The specialist's answer went back to the supervisor, which quotes it.
    assert answer(events) == f"Tool results: smollm2: {result['content']}"
    assert events[-1]["status"] == "complete"
    assert [(t["name"], t["ok"]) for t in stored["tool_calls"]] == [("smollm2", True)]


async def test_the_specialist_answers_as_it_would_alone(specialist_api: ApiProcess) -> None:
    """The tool result is the specialist's own answer to the prompt: the same as asking it."""
    async with chat_session(specialist_api, http_timeout_s=300) as (socket, _, _):
        await socket.ask(QUESTION, model="smollm2")
        alone = answer(await events_of_turn(socket))
        await socket.ask(call("smollm2", prompt=QUESTION), model="tool-caller", tools=True)
        (result,) = of_type(await events_of_turn(socket), "tool_result")
    assert result["content"] == alone


async def test_delegation_stops_at_max_depth(specialist_api: ApiProcess) -> None:
    """tool-caller (maxDepth 1) → helper: the helper answers without tools, so its own
    specialist is not offered to it."""
    async with chat_session(specialist_api, http_timeout_s=300) as (socket, _, _):
        inner = call("smollm2", prompt=QUESTION)
        await socket.ask(call("helper", prompt=inner), model="tool-caller", tools=True)
        events = await events_of_turn(socket)
    (result,) = of_type(events, "tool_result")
    assert result["ok"] is True
    assert result["content"].startswith("No tool needed") or "not available" in result["content"]
    assert "Paris" not in result["content"]


async def test_a_deeper_supervisor_lets_its_specialist_delegate(specialist_api: ApiProcess) -> None:
    """deep (maxDepth 2, a remote model) → helper → smollm2: two levels of delegation."""
    async with chat_session(specialist_api, http_timeout_s=300) as (socket, _, _):
        inner = call("smollm2", prompt=QUESTION)
        await socket.ask(call("helper", prompt=inner), model="deep", tools=True)
        events = await events_of_turn(socket)
    (result,) = of_type(events, "tool_result")
    assert result["ok"] is True, result
    assert result["content"].startswith("Tool results: smollm2: ") and "Paris" in result["content"]
    assert answer(events) == f"Tool results: helper: {result['content']}"


async def test_a_specialist_that_is_not_offered_is_never_called(specialist_api: ApiProcess) -> None:
    async with chat_session(specialist_api, http_timeout_s=300) as (socket, _, _):
        await socket.ask(call("synthetic", prompt="go"), model="tool-caller", tools=True)
        events = await events_of_turn(socket)
    assert of_type(events, "tool_call") == []
    assert answer(events) == "Tool synthetic is not available."


async def test_knowledge_base_search_is_a_native_tool(specialist_api: ApiProcess) -> None:
    async with httpx.AsyncClient(base_url=specialist_api.url, headers=auth(), timeout=300) as http:
        text = b"# Runbook\n\nTo restart the frobnicator, hold the blue button for nine seconds.\n"
        await indexed(http, "handbook", ("frobnicator.md", text))
    async with chat_session(specialist_api, http_timeout_s=300) as (socket, _, _):
        asked = call("search_knowledge_base", knowledge_base="handbook", query="restart the frobnicator")
        await socket.ask(asked, model="tool-caller", tools=True)
        events = await events_of_turn(socket)
        await socket.ask(
            call("search_knowledge_base", knowledge_base="private", query="x"),
            model="tool-caller",
            tools=True,
        )
        refused = await events_of_turn(socket)
    (result,) = of_type(events, "tool_result")
    assert result["ok"] is True and "blue button for nine seconds" in result["content"]
    assert "frobnicator.md" in result["content"]
    # Bob's knowledge base is not Alice's to search: the tool says so, as the API would.
    (denied,) = of_type(refused, "tool_result")
    assert (denied["ok"], denied["error_code"]) == (False, "knowledge_base_not_found")
