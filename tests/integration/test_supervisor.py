"""A `kubechat serve` of its own, hurt on purpose: its tritonserver killed with SIGKILL comes back
by itself (and leaves no python-backend stub behind), and WebSocket frames past the chat's limit
get an error event through the server's real transport. The session's tritonserver, which other
tests share, is never touched."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from kubechat.api.settings import WS_TRANSPORT_MAX_BYTES, Settings
from tests.integration.test_launcher import launch, tritonservers_of
from tests.polling import wait_until

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    process, url = launch(tmp_path_factory.mktemp("supervised"))
    yield process, url
    process.send_signal(signal.SIGTERM)
    process.wait(60)


def readiness(url: str) -> tuple[int, dict[str, Any]]:
    try:
        response = httpx.get(f"{url}/ready", timeout=2)
    except httpx.TransportError:
        return 0, {}
    return response.status_code, response.json()


async def new_session(url: str) -> str:
    async with httpx.AsyncClient(base_url=url) as http:
        return str((await http.post("/sessions", json={"title": "supervised"})).json()["id"])


async def one_turn(url: str) -> dict[str, Any]:
    session = await new_session(url)
    async with connect(f"{url.replace('http', 'ws')}/ws/chat/{session}") as socket:
        assert json.loads(await socket.recv())["type"] == "history"
        await socket.send(json.dumps({"type": "message", "content": "hi", "options": {"max_tokens": 3}}))
        while (event := json.loads(await socket.recv()))["type"] != "done":
            assert event["type"] in ("start", "token"), event
        return dict(event)


async def test_a_killed_tritonserver_is_restarted_and_the_next_turn_completes(
    serve: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, url = serve
    (server,) = tritonservers_of(process)
    stubs = server.children(recursive=True)
    assert stubs, "the synthetic model runs in a python-backend stub"
    assert readiness(url)[1]["supervised"]["tritonserver"] == {
        "state": "running",
        "restarts": 0,
        "last_exit": "",
    }

    server.send_signal(signal.SIGKILL)  # only the server: its stubs are left to the supervisor

    # /ready says why it is not ready while the supervisor waits out its back-off and restarts.
    def restarting() -> bool:
        status, body = readiness(url)
        return status == 503 and body["checks"]["tritonserver"].startswith("restarting")

    wait_until(restarting, 30, "/ready to report the restart")
    _gone, alive = psutil.wait_procs(stubs, timeout=30)
    assert not alive, "the killed server's python-backend stubs were left behind"

    wait_until(lambda: readiness(url)[0] == 200, 180, "kubechat serve to be ready again")
    supervised = readiness(url)[1]["supervised"]["tritonserver"]
    assert supervised == {"state": "running", "restarts": 1, "last_exit": "was killed by SIGKILL"}
    (restarted,) = tritonservers_of(process)
    assert restarted.pid != server.pid
    done = await one_turn(url)
    assert done["status"] == "complete"


async def test_a_frame_past_the_limit_gets_an_error_and_the_socket_stays(
    serve: tuple[subprocess.Popen[bytes], str],
) -> None:
    """Issue 21 (5): `kubechat serve` closed frames over 1 MiB with 1009 though the docs promise
    an error event; every launcher now keeps the transport's limit at 16 MiB."""
    _, url = serve
    limit = Settings().max_ws_frame_bytes
    session = await new_session(url)
    async with connect(f"{url.replace('http', 'ws')}/ws/chat/{session}", max_size=None) as socket:
        assert json.loads(await socket.recv())["type"] == "history"
        for size in (limit + 1, 2 * 1024 * 1024, 8 * 1024 * 1024):
            await socket.send(json.dumps({"type": "message", "content": "x" * size}))
            refused = json.loads(await socket.recv())
            assert refused["error"]["code"] == "message_too_large", size
        await socket.send(json.dumps({"type": "ping"}))
        assert json.loads(await socket.recv()) == {"type": "pong"}
        # Past the transport's own limit the server closes with 1009, as RFC 6455 says. Frames
        # go uncompressed (no permessage-deflate): the close may come while the frame is still
        # being sent.
        with pytest.raises(ConnectionClosed) as closed:
            await socket.send("x" * (WS_TRANSPORT_MAX_BYTES + 1))
            await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
