"""Restarts and failing dependencies: nothing stored is lost, the API recovers by itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from kubechat.embedded.launcher import start_triton
from kubechat.embedded.tritonserver import TritonServer
from tests.conftest import (
    EXAMPLE_MODELS,
    ApiProcess,
    api_env,
    auth,
    free_ports,
)
from tests.integration.conftest import ChatSocket, chatting, new_session, open_socket
from tests.polling import wait_until

pytestmark = pytest.mark.triton

SLOW_MODEL = """
apiVersion: kubechat.io/v1alpha1
kind: ChatModel
metadata:
  name: slow
spec:
  engine:
    backend: synthetic
    maxOutputTokens: 4096
    syntheticTokenDelayMs: 20
"""


@pytest.fixture(scope="module")
def slow_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TritonServer, Path, Path]]:
    """A tritonserver of its own (a synthetic model at 50 tokens/s) that the tests may kill."""
    models = tmp_path_factory.mktemp("slow-models")
    (models / "slow.yaml").write_text(SLOW_MODEL)
    state = tmp_path_factory.mktemp("slow-state")
    server = start_triton(models, state, free_ports(), timeout=120)
    yield server, models, state
    server.stop()


def _processes_under(folder: Path) -> list[psutil.Process]:
    """Processes started from files in `folder` (tritonserver's python-backend stubs)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(folder) in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


def test_history_survives_an_api_restart(triton: TritonServer, state_dir: Path, tmp_path: Path) -> None:
    env = {**api_env(triton, EXAMPLE_MODELS, state_dir), "KUBECHAT_DATABASE_URL": str(tmp_path / "h.db")}
    api = ApiProcess(env, tmp_path / "api.log")
    api.start()
    try:
        with httpx.Client(base_url=api.url, headers=auth()) as http:
            session = http.post("/sessions", json={"title": "durable"}).json()["id"]
        import asyncio

        async def one_turn() -> str:
            async with chatting(api, session) as chat:
                await chat.ask("remember me", model="synthetic", options={"max_tokens": 3})
                return (await chat.turn()).text

        answer = asyncio.run(one_turn())
        api.stop()
        api.start()
        with httpx.Client(base_url=api.url, headers=auth()) as http:
            messages = http.get(f"/sessions/{session}/messages").json()["items"]
            sessions = http.get("/sessions").json()["items"]
        assert [m["content"] for m in messages] == ["remember me", answer]
        assert [s["title"] for s in sessions] == ["durable"]
    finally:
        api.stop()


async def test_triton_killed_mid_stream_then_recovers(
    slow_triton: tuple[TritonServer, Path, Path], tmp_path: Path
) -> None:
    server, models, state = slow_triton
    env = {**api_env(server, models, state), "KUBECHAT_DEFAULT_MODEL": "slow"}
    api = ApiProcess(env, tmp_path / "api.log")
    api.start()
    try:
        async with httpx.AsyncClient(base_url=api.url, headers=auth(), timeout=60) as http:
            session = await new_session(http)
            async with chatting(api, session) as chat:
                await chat.ask("stream until the server dies", options={"max_tokens": 4000})
                assert (await chat.event())["type"] == "start"
                received = [await chat.event() for _ in range(5)]
                server.kill()
                assert not _processes_under(state), "a killed tritonserver left processes behind"
                rest = []
                while True:
                    event = await chat.event()
                    rest.append(event)
                    if event["type"] == "done":
                        break
            errors = [e for e in rest if e["type"] == "error"]
            assert [e["error"]["code"] for e in errors] == ["model_unavailable"]
            assert rest[-1]["status"] == "failed"
            streamed = "".join(e["delta"] for e in received + rest if e["type"] == "token")

            stored = (await http.get(f"/sessions/{session}/messages")).json()["items"]
            assert [m["role"] for m in stored] == ["user", "assistant"]
            assert stored[1]["status"] == "failed"
            assert stored[1]["error_code"] == "model_unavailable"
            assert stored[1]["content"] == streamed and streamed.startswith("token0 token1 ")

            not_ready = await http.get("/ready")
            assert not_ready.status_code == 503
            assert not_ready.json()["checks"]["model:slow"] == "not ready"

            server.start()
            server.wait_ready(120)
            wait_until(lambda: httpx.get(f"{api.url}/ready").status_code == 200, 60, "the API to be ready")

            async with open_socket(api, session) as connection:
                chat = ChatSocket(connection)
                history = await chat.event()
                assert len(history["messages"]) == 2
                await chat.ask("again", options={"max_tokens": 3})
                turn = await chat.turn()
            assert turn.done is not None and turn.done["status"] == "complete"
            assert turn.text == "token0 token1 token2 "
    finally:
        api.stop()
