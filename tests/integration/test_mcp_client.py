"""The MCP toolbox against real MCP servers built with the official SDK: one run as a stdio child
process, one served over streamable HTTP by uvicorn in its own process (tests/mcp_servers/)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from kubechat.mcp.config import McpServerConfig
from kubechat.mcp.processes import MARKER_VARIABLE
from kubechat.mcp.toolbox import McpToolbox
from tests.conftest import ROOT, free_port
from tests.polling import eventually, wait_until

STDIO_SECRET = "stdio-secret-5f1e"
HTTP_SECRET = "Bearer http-secret-9a2c"
DECOY = "decoy-secret-77b0"  # in our environment, named by no configuration
STDIO_TOOLS = {"add", "echo", "fail", "slow", "grow", "whoami", "environment", "pid", "helper", "crash"}
HTTP_TOOLS = {"add", "echo", "fail", "slow", "grow", "whoami"}
# What a stdio child may see: the SDK's safe defaults, LANG, what env_from names, and the marker
# by which what it leaves behind is found (kubechat.mcp.processes; a random id, no secret).
CHILD_ENV = {"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "MCP_TEST_TOKEN", MARKER_VARIABLE}


@dataclass
class HttpMcpServer:
    """tests/mcp_servers/http_server.py in its own process, on a port that survives restarts."""

    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        command = [sys.executable, "-m", "tests.mcp_servers.http_server", str(self.port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._listening, 30, f"the MCP server on port {self.port} (log: {self.log})")

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the MCP server exited with {self.process.returncode}; see {self.log}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


def stdio_server(name: str = "local", **fields: object) -> McpServerConfig:
    return McpServerConfig.model_validate(
        {
            "name": name,
            "transport": "stdio",
            "command": sys.executable,
            "args": ["-m", "tests.mcp_servers.stdio_server"],
            "cwd": str(ROOT),
            "env_from": {"MCP_TEST_TOKEN": "KUBECHAT_TEST_STDIO_TOKEN"},
            **fields,
        }
    )


def http_server(url: str, name: str = "remote", **fields: object) -> McpServerConfig:
    return McpServerConfig.model_validate(
        {
            "name": name,
            "transport": "http",
            "url": url,
            "headers_from_env": {"Authorization": "KUBECHAT_TEST_HTTP_AUTH"},
            **fields,
        }
    )


@pytest.fixture(scope="module", autouse=True)
def secrets() -> Iterator[None]:
    values = {
        "KUBECHAT_TEST_STDIO_TOKEN": STDIO_SECRET,
        "KUBECHAT_TEST_HTTP_AUTH": HTTP_SECRET,
        "KUBECHAT_TEST_DECOY": DECOY,
    }
    os.environ.update(values)
    yield
    for name in values:
        os.environ.pop(name, None)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpMcpServer]:
    server = HttpMcpServer(tmp_path_factory.mktemp("mcp-http") / "server.log")
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
async def toolbox(remote: HttpMcpServer) -> AsyncIterator[McpToolbox]:
    """Both servers, and the HTTP one again with a server-side allow-list."""
    box = McpToolbox(
        [stdio_server(), http_server(remote.url), http_server(remote.url, "limited", tools=["add", "ec*"])]
    )
    await box.start()
    yield box
    await box.stop()


@asynccontextmanager
async def running(*servers: McpServerConfig, refresh_interval_s: float = 60.0) -> AsyncIterator[McpToolbox]:
    box = McpToolbox(servers, refresh_interval_s=refresh_interval_s)
    await box.start()
    try:
        yield box
    finally:
        await box.stop()


async def test_the_tools_of_both_servers_are_discovered_under_their_server_names(
    toolbox: McpToolbox,
) -> None:
    names = {t.name for t in toolbox.tools()}
    assert {f"local__{n}" for n in STDIO_TOOLS} <= names
    assert {f"remote__{n}" for n in HTTP_TOOLS} <= names
    (add,) = [t for t in toolbox.tools() if t.name == "local__add"]
    assert add.description == "Add two integers."
    assert add.input_schema["required"] == ["a", "b"]
    assert add.input_schema["properties"]["a"]["type"] == "integer"
    status = toolbox.status()
    assert status["local"]["connected"] and status["local"]["transport"] == "stdio"
    assert status["local"]["tools"] >= len(STDIO_TOOLS) and status["local"]["last_error"] == ""
    assert status["remote"]["connected"] and status["remote"]["restarts"] == 0


async def test_allow_lists_filter_the_tools(toolbox: McpToolbox) -> None:
    # The model's allow-list: fnmatch patterns on `<server>__<tool>`.
    assert [t.name for t in toolbox.tools(["local__add", "remote__e*"])] == ["local__add", "remote__echo"]
    assert toolbox.tools([]) == []
    # The server's own allow-list in its configuration: the other tools do not exist for kubechat.
    assert {t.name for t in toolbox.tools(["limited__*"])} == {"limited__add", "limited__echo"}
    assert (await toolbox.call("limited__fail", {})).error_code == "unknown_tool"
    assert (await toolbox.call("limited__add", {"a": 2, "b": 2})).content == "4"


@pytest.mark.parametrize("server", ["local", "remote"])
async def test_calls_return_the_tools_text(toolbox: McpToolbox, server: str) -> None:
    result = await toolbox.call(f"{server}__add", {"a": 2, "b": 3})
    assert result.ok and result.content == "5" and result.error_code == ""
    result = await toolbox.call(f"{server}__echo", {"text": "héllo\nworld"})
    assert result.ok and result.content == "héllo\nworld"


@pytest.mark.parametrize("server", ["local", "remote"])
async def test_a_failing_tool_is_a_tool_error_with_its_message(toolbox: McpToolbox, server: str) -> None:
    result = await toolbox.call(f"{server}__fail", {})
    assert not result.ok and result.error_code == "tool_error"
    assert "this tool always fails" in result.content


@pytest.mark.parametrize("server", ["local", "remote"])
async def test_a_slow_tool_times_out_and_the_server_still_answers(toolbox: McpToolbox, server: str) -> None:
    result = await toolbox.call(f"{server}__slow", {"seconds": 30}, timeout_s=0.5)
    assert not result.ok and result.error_code == "tool_timeout"
    assert "did not answer within 0.5 s" in result.content
    assert (await toolbox.call(f"{server}__add", {"a": 1, "b": 1})).content == "2"
    assert toolbox.status()[server]["connected"]
    result = await toolbox.call(f"{server}__slow", {"seconds": 0.1}, timeout_s=5)
    assert result.ok and result.content == "slept 0.1s"


async def test_unknown_tools(toolbox: McpToolbox) -> None:
    for name in ("nowhere__add", "local__nothing", "add", "local_add", "__add"):
        result = await toolbox.call(name, {})
        assert not result.ok and result.error_code == "unknown_tool", name
        assert repr(name) in result.content


async def test_arguments_are_checked_against_the_tools_schema(toolbox: McpToolbox) -> None:
    result = await toolbox.call("local__add", {"a": "two", "b": 1})
    assert not result.ok and result.error_code == "invalid_arguments"
    assert "a: 'two' is not of type 'integer'" in result.content
    result = await toolbox.call("remote__add", {"a": 1})
    assert result.error_code == "invalid_arguments" and "'b' is a required property" in result.content


async def test_secrets_reach_the_servers_from_our_environment_only(toolbox: McpToolbox) -> None:
    assert (await toolbox.call("local__whoami", {})).content == STDIO_SECRET
    assert (await toolbox.call("remote__whoami", {})).content == HTTP_SECRET
    # The child inherits a minimal environment: not the API's keys, not other secrets.
    seen = set((await toolbox.call("local__environment", {})).content.split("\n"))
    assert "MCP_TEST_TOKEN" in seen and seen <= CHILD_ENV, seen - CHILD_ENV
    # Configuration and status hold names of variables, never their values.
    configs = [stdio_server(), http_server("http://127.0.0.1:1/mcp")]
    printed = repr(configs) + str([c.model_dump() for c in configs]) + str(toolbox.status())
    for secret in (STDIO_SECRET, HTTP_SECRET, "http-secret-9a2c", DECOY):
        assert secret not in printed


async def test_a_missing_secret_or_command_leaves_that_server_unavailable(toolbox: McpToolbox) -> None:
    broken = [
        stdio_server("unset", env_from={"MCP_TEST_TOKEN": "KUBECHAT_TEST_NEVER_SET"}),
        McpServerConfig(name="absent", transport="stdio", command="/nonexistent/mcp-server"),
        McpServerConfig(name="quits", transport="stdio", command=sys.executable, args=["-c", "pass"]),
        stdio_server("fine"),
    ]
    async with running(*broken) as box:  # start() does not fail
        status = box.status()
        assert not status["unset"]["connected"]
        assert "environment variable KUBECHAT_TEST_NEVER_SET is not set" in status["unset"]["last_error"]
        assert not status["absent"]["connected"]
        assert "/nonexistent/mcp-server" in status["absent"]["last_error"]
        assert status["quits"]["last_error"] == "the server process exited"
        assert status["fine"]["connected"]
        result = await box.call("unset__add", {"a": 1, "b": 1})
        assert result.error_code == "tool_unavailable" and "KUBECHAT_TEST_NEVER_SET" in result.content
        assert {t.name.split("__")[0] for t in box.tools()} == {"fine"}
        assert (await box.call("fine__add", {"a": 1, "b": 1})).content == "2"


async def test_a_crashed_stdio_server_is_restarted(toolbox: McpToolbox) -> None:
    async with running(stdio_server("fragile")) as box:
        first_pid = int((await box.call("fragile__pid", {})).content)
        result = await box.call("fragile__crash", {})
        assert not result.ok and result.error_code == "tool_unavailable"
        assert not box.status()["fragile"]["connected"]
        await eventually(lambda: box.status()["fragile"]["last_error"] != "", "the reason", within_s=10)
        assert box.status()["fragile"]["last_error"] == "the server process exited"
        assert (await box.call("fragile__add", {"a": 1, "b": 1})).error_code == "tool_unavailable"
        assert box.tools(["fragile__*"]) == []
        # Other servers are not affected.
        assert (await toolbox.call("local__add", {"a": 1, "b": 1})).content == "2"

        await eventually(lambda: box.status()["fragile"]["connected"], "the restart", within_s=30)
        assert box.status()["fragile"]["restarts"] == 1
        assert (await box.call("fragile__add", {"a": 1, "b": 1})).content == "2"
        assert int((await box.call("fragile__pid", {})).content) != first_pid


async def test_what_a_dead_stdio_server_left_behind_is_killed() -> None:
    """The SDK kills a stdio server's process group only when it closes a server that still
    runs; one that died (here by its own hand; in life `kill -9`, the OOM killer) leaves its
    children, once per restart. The supervisor kills them before it connects again."""
    async with running(stdio_server("parent")) as box:
        helper = psutil.Process(int((await box.call("parent__helper", {})).content))
        assert helper.is_running()
        assert not (await box.call("parent__crash", {})).ok
        await eventually(lambda: box.status()["parent"]["restarts"] == 1, "the restart", within_s=30)
        await eventually(
            lambda: not helper.is_running() or helper.status() == psutil.STATUS_ZOMBIE,
            "the helper to be killed",
            within_s=10,
        )
        await eventually(lambda: box.status()["parent"]["connected"], "the reconnection", within_s=30)
        assert (await box.call("parent__add", {"a": 1, "b": 1})).content == "2"


async def test_a_dropped_http_server_is_reconnected(tmp_path: Path) -> None:
    server = HttpMcpServer(tmp_path / "server.log")
    server.start()
    try:
        async with running(http_server(server.url, "flaky")) as box:
            assert (await box.call("flaky__add", {"a": 1, "b": 1})).content == "2"
            server.kill()
            result = await box.call("flaky__add", {"a": 1, "b": 1})
            assert not result.ok and result.error_code == "tool_unavailable"
            await eventually(
                lambda: not box.status()["flaky"]["connected"], "the drop to be noticed", within_s=10
            )
            server.start()  # the same port
            await eventually(lambda: box.status()["flaky"]["connected"], "the reconnection", within_s=60)
            assert (await box.call("flaky__add", {"a": 1, "b": 1})).content == "2"
            assert box.status()["flaky"]["restarts"] >= 1
    finally:
        server.kill()


async def test_stop_ends_the_stdio_children() -> None:
    async with running(stdio_server("child")) as box:
        pid = int((await box.call("child__pid", {})).content)
        child = psutil.Process(pid)
        assert child.is_running()
    assert not box.status()["child"]["connected"]
    # Stopped, not left behind: gone, or a zombie that only needs reaping.
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


async def test_a_list_changed_notification_refreshes_the_tools(toolbox: McpToolbox) -> None:
    assert "remote__grown" not in {t.name for t in toolbox.tools()}
    assert (await toolbox.call("remote__grow", {})).ok
    await eventually(
        lambda: "remote__grown" in {t.name for t in toolbox.tools()}, "the new tool", within_s=10
    )
    assert (await toolbox.call("remote__grown", {})).content == "I am new"


async def test_the_periodic_refresh_finds_tools_added_without_notice() -> None:
    async with running(stdio_server("quiet"), refresh_interval_s=0.5) as box:
        assert (await box.call("quiet__grow", {"notify": False})).ok
        await eventually(lambda: "quiet__grown" in {t.name for t in box.tools()}, "the new tool", within_s=10)
        assert box.status()["quiet"]["restarts"] == 0
