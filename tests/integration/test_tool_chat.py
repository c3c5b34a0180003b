"""Tool calling in chat, end to end: the deterministic tool-calling model in the session's
tritonserver, real MCP servers over stdio and streamable HTTP, the API as a real process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import yaml

from kubechat.embedded.tritonserver import TritonServer
from tests.conftest import EXAMPLE_MODELS, ROOT, ApiProcess, api_env, auth, free_port
from tests.integration.conftest import answer, chat_session, events_of_turn, of_type
from tests.polling import wait_until

pytestmark = pytest.mark.triton

MODEL = "tool-caller"


@pytest.fixture(scope="module")
def http_mcp_server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.mcp_servers.http_server", str(port)], cwd=ROOT)

    def up() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
        except httpx.TransportError:
            return False
        return True

    wait_until(up, 30, "the HTTP MCP server")
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def tool_api(
    triton: TritonServer, http_mcp_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """An API with two MCP servers: `demo` (stdio) and `web` (HTTP). The tool-calling model may
    call every tool but `web__echo` (its allow-list)."""
    models = tmp_path_factory.mktemp("tool-models")
    for path in EXAMPLE_MODELS.glob("*.yaml"):
        shutil.copy(path, models / path.name)
    declared = yaml.safe_load((models / f"{MODEL}.yaml").read_text())
    declared["spec"]["tools"]["allow"] = ["demo__*", "web__add", "web__whoami"]
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(declared))
    servers = [
        {"name": "demo", "transport": "stdio", "command": sys.executable,
         "args": ["-m", "tests.mcp_servers.stdio_server"], "cwd": str(ROOT)},
        {"name": "web", "transport": "http", "url": http_mcp_server},
    ]  # fmt: skip
    state = tmp_path_factory.mktemp("tool-state")
    env = {
        **api_env(triton, models, state),
        "KUBECHAT_MCP_SERVERS": json.dumps(servers),
        "KUBECHAT_MCP_TOOL_TIMEOUT_S": "2",
    }
    process = ApiProcess(env, state / "api.log")
    process.start()
    wait_until(lambda: _tools_ready(process), 60, "the MCP servers' tools")
    yield process
    process.stop()


def _tools_ready(api: ApiProcess) -> bool:
    report = httpx.get(f"{api.url}/ready", timeout=5).json()
    servers = report.get("mcp_servers", {})
    return bool(servers) and all(s.get("connected") for s in servers.values())


async def test_a_tool_call_round_trip_over_the_socket(tool_api: ApiProcess) -> None:
    async with chat_session(tool_api) as (socket, http, session):
        await socket.ask('call demo__add {"a": 2, "b": 3}', model=MODEL, tools=True)
        events = await events_of_turn(socket)
        messages = (await http.get(f"/sessions/{session}/messages")).json()["items"]

    kinds = [e["type"] for e in events if e["type"] != "token"]
    assert kinds == ["start", "tool_call", "tool_result", "done"], events
    (call,) = of_type(events, "tool_call")
    (result,) = of_type(events, "tool_result")
    assert (call["name"], call["arguments"]) == ("demo__add", {"a": 2, "b": 3})
    assert (result["id"], result["ok"], result["error_code"]) == (call["id"], True, "")
    assert result["content"] == "5"
    # The result went back to the model, which quotes it in its answer.
    assert "demo__add: 5" in answer(events)
    assert events[-1]["status"] == "complete"
    stored = messages[-1]
    assert stored["content"] == answer(events)
    assert [(t["name"], t["ok"], t["content"]) for t in stored["tool_calls"]] == [("demo__add", True, "5")]


async def test_http_server_tools_and_several_calls_in_one_answer(tool_api: ApiProcess) -> None:
    async with chat_session(tool_api) as (socket, _, _):
        await socket.ask(
            'call web__add {"a": 1, "b": 1} call demo__echo {"text": "hello"}', model=MODEL, tools=True
        )
        events = await events_of_turn(socket)
    results = {r["name"]: r for r in of_type(events, "tool_result")}
    assert results["web__add"]["content"] == "2" and results["demo__echo"]["content"] == "hello"
    assert "web__add: 2" in answer(events) and "demo__echo: hello" in answer(events)


async def test_a_failing_tool_and_a_slow_tool_are_reported_and_the_answer_goes_on(
    tool_api: ApiProcess,
) -> None:
    async with chat_session(tool_api) as (socket, _, _):
        await socket.ask('call demo__fail {} call demo__slow {"seconds": 10}', model=MODEL, tools=True)
        events = await events_of_turn(socket)
        # The slow server keeps serving after its timeout.
        await socket.ask('call demo__add {"a": 40, "b": 2}', model=MODEL, tools=True)
        after = await events_of_turn(socket)
    results = {r["name"]: r for r in of_type(events, "tool_result")}
    assert results["demo__fail"]["ok"] is False and results["demo__fail"]["error_code"] == "tool_error"
    assert "always fails" in results["demo__fail"]["content"]
    assert results["demo__slow"]["ok"] is False and results["demo__slow"]["error_code"] == "tool_timeout"
    assert events[-1]["status"] == "complete"
    assert "error (tool_error)" in answer(events)
    assert of_type(after, "tool_result")[0]["content"] == "42"


async def test_malformed_tool_call_json_is_reported_to_the_client_and_the_model(
    tool_api: ApiProcess,
) -> None:
    async with chat_session(tool_api) as (socket, _, _):
        await socket.ask("call demo__add malformed", model=MODEL, tools=True)
        events = await events_of_turn(socket)
    assert of_type(events, "tool_call") == [], events
    results = of_type(events, "tool_result")
    assert len(results) == 1, events
    (result,) = results
    assert (result["ok"], result["error_code"]) == (False, "malformed_tool_call")
    assert events[-1]["status"] == "complete"
    assert "malformed tool call" in answer(events)


async def test_the_allow_list_keeps_tools_from_the_model(tool_api: ApiProcess) -> None:
    async with chat_session(tool_api) as (socket, _, _):
        await socket.ask('call web__echo {"text": "x"}', model=MODEL, tools=True)
        events = await events_of_turn(socket)
    assert of_type(events, "tool_call") == []
    assert "Tool web__echo is not available." in answer(events)


async def test_tools_for_a_model_without_the_capability_are_refused(tool_api: ApiProcess) -> None:
    async with chat_session(tool_api) as (socket, http, session):
        await socket.ask("What is 2 + 2?", model="smollm2", tools=True)
        error = await socket.event()
        assert error["type"] == "error" and error["error"]["code"] == "invalid_request"
        assert "does not call tools" in error["error"]["message"]
        assert (await http.get(f"/sessions/{session}/messages")).json()["items"] == []


async def test_openai_clients_get_tool_calls_and_send_results_back(tool_api: ApiProcess) -> None:
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    question = {"role": "user", "content": 'call get_weather {"city": "Oslo"}'}
    async with httpx.AsyncClient(base_url=tool_api.url, headers=auth(), timeout=120) as http:
        first = await http.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": [question], "tools": [weather]}
        )
        assert first.status_code == 200, first.text
        choice = first.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        (call,) = choice["message"]["tool_calls"]
        assert call["type"] == "function" and call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}

        followup = [
            question,
            choice["message"],
            {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 °C"},
        ]
        second = await http.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": followup, "tools": [weather]}
        )
        assert second.status_code == 200, second.text
        final = second.json()["choices"][0]
        assert final["finish_reason"] == "stop"
        assert "get_weather: Sunny, 21 °C" in final["message"]["content"]

        streamed = await http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [question], "tools": [weather], "stream": True},
        )
        chunks = [
            json.loads(line[len("data: ") :])
            for line in streamed.text.splitlines()
            if line.startswith("data: {")
        ]
        deltas = [c["choices"][0] for c in chunks if c["choices"]]
        (streamed_call,) = [t for d in deltas for t in d["delta"].get("tool_calls", [])]
        assert streamed_call["function"]["name"] == "get_weather" and streamed_call["index"] == 0
        assert deltas[-1]["finish_reason"] == "tool_calls"


async def test_stop_while_a_tool_runs_keeps_the_call(tool_api: ApiProcess) -> None:
    async with chat_session(tool_api) as (socket, http, session):
        await socket.ask('call demo__slow {"seconds": 1.5}', model=MODEL, tools=True)
        while (event := await socket.event())["type"] != "tool_call":
            pass
        await socket.send({"type": "stop"})
        events = await events_of_turn(socket)
        messages = (await http.get(f"/sessions/{session}/messages")).json()["items"]
    assert events[-1]["type"] == "done" and events[-1]["status"] == "stopped"
    assert of_type(events, "tool_result") == []
    (stored,) = messages[-1]["tool_calls"]
    assert (stored["id"], stored["name"], stored["ok"]) == (event["id"], "demo__slow", None)
    assert messages[-1]["status"] == "stopped"
