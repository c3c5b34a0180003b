"""The tools of the configured MCP servers, as one toolbox that the chat loop calls.

Each server has a supervisor: an asyncio task that opens the transport (a child process over
stdio, or streamable HTTP), enters the SDK's `ClientSession`, lists the tools and then holds the
session until the connection is lost or kubechat stops. The SDK's context managers own anyio task
groups, so they are entered and left in that one task; calls come from other tasks (chat turns)
and go through the same session, which is safe: a request is a write to the session's stream
and a wait for the matching response, with no task-bound state.

A supervisor notices a lost connection when the transport's read stream ends (the process
exited, the HTTP transport gave up), when a call finds the connection closed, or when a tool
listing fails. It then marks the server unavailable (in-flight calls fail with
`tool_unavailable`), leaves the session (the SDK stops the child process, and what a dead child
left behind is killed: kubechat.mcp.processes), and connects again after a capped back-off.
Tools are listed at connect, on `notifications/tools/list_changed` and every `refresh_interval_s`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Any, Protocol, Self

import anyio
import httpx2
import mcp.types as types
from jsonschema import exceptions as jsonschema_exceptions
from jsonschema import validators as jsonschema_validators
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client import Transport
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from kubechat import __version__
from kubechat.core.backoff import Backoff
from kubechat.core.metrics import TOOL_CALL_DURATION
from kubechat.mcp import processes
from kubechat.mcp.config import McpServerConfig
from kubechat.tools.types import ToolResult, ToolSpec

logger = logging.getLogger(__name__)

# Waits before reconnecting after consecutive failures; the last one repeats.
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
# A name a model can call: OpenAI function names allow these characters, at most 64 of them.
CALLABLE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Beyond a call's own timeout: the write of the request and the courtesy cancel.
CALL_GRACE_S = 1.0
STOP_TIMEOUT_S = 15.0  # a stdio child gets 2 s after stdin closes, then SIGTERM, then SIGKILL
SEPARATOR = "__"

# The SDK's own timeouts for an HTTP server (its default client's): a response stream may be
# held open for minutes, everything else is bounded by 30 s.
HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)


class _MessageStream(Protocol):
    """What kubechat uses of a transport's read stream (the SDK's ReadStream type is private)."""

    async def receive(self) -> SessionMessage | Exception: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class _Tool:
    spec: ToolSpec
    server_tool: str  # its name on the server
    validator: Any | None  # a jsonschema validator of its arguments, if its schema is valid


class _ConnectionLost(Exception):
    pass


class _EndWatchingStream:
    """A transport's read stream that reports its end: the process exited or the HTTP transport
    gave up. The SDK's session only fails pending requests then; the supervisor must know."""

    def __init__(self, inner: _MessageStream, ended: Callable[[], None]) -> None:
        self._inner = inner
        self._ended = ended

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._ended()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _Supervisor:
    """One server's connection, kept up by `run` (its own task)."""

    def __init__(self, config: McpServerConfig, refresh_interval_s: float) -> None:
        self.config = config
        self.refresh_interval_s = refresh_interval_s
        self.session: ClientSession | None = None
        self.tools: dict[str, _Tool] = {}  # by the name models see, from the last listing
        self.last_error = ""
        self.restarts = 0
        self.first_attempt = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._scope = anyio.CancelScope()  # cancelled by stop(), from another task
        self._wake = asyncio.Event()
        self._lost = False
        self._marker = ""  # of the stdio server started last (kubechat.mcp.processes)

    @property
    def connected(self) -> bool:
        return self.session is not None

    def stop(self) -> None:
        self._scope.cancel()

    async def run(self) -> None:
        backoff = Backoff(BACKOFF_S)
        with self._scope:
            while True:
                connected = False
                try:
                    async with self._connected():
                        connected = True
                        self.first_attempt.set()
                        await self._serve()
                except Exception as exc:
                    # "Connection closed" while connecting says little: say what ended.
                    closed = isinstance(_leaf(exc), MCPError) and _leaf(exc).code == types.CONNECTION_CLOSED
                    self.last_error = self._lost_reason() if closed else _describe(exc)
                    logger.warning("MCP server %s: %s", self.config.name, self.last_error)
                finally:
                    self.session = None
                    self.first_attempt.set()
                if connected:
                    backoff.reset()
                delay = backoff.next_delay()
                logger.info("MCP server %s: connecting again in %g s", self.config.name, delay)
                await anyio.sleep(delay)
                self.restarts += 1

    @asynccontextmanager
    async def _connected(self) -> AsyncIterator[None]:
        """The transport and the session, entered and left in the supervisor's task; a stdio
        server's leftovers are killed once it is left."""
        self._lost = False
        self._wake.clear()
        try:
            async with self._session():
                yield
        finally:
            if self._marker:
                marker, self._marker = self._marker, ""
                left = processes.reap(marker)
                if left:
                    logger.warning(
                        "MCP server %s: killed %d processes it left behind: %s",
                        self.config.name,
                        len(left),
                        left,
                    )

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[None]:
        config = self.config
        async with AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(self._transport())
            session = await stack.enter_async_context(
                ClientSession(
                    _EndWatchingStream(read, self._connection_ended),
                    write,
                    # Requests other than tool calls (which carry their own) are bounded by this.
                    read_timeout_seconds=config.connect_timeout_s,
                    message_handler=self._on_message,
                    client_info=types.Implementation(name="kubechat", version=__version__),
                )
            )
            await session.initialize()
            await self._list_tools(session)
            self.session = session
            self.last_error = ""
            logger.info("MCP server %s: connected, %d tools", config.name, len(self.tools))
            try:
                yield
            finally:
                self.session = None

    def _transport(self) -> Transport:
        config = self.config
        if config.transport == "stdio":
            # The marker its descendants inherit: what it leaves behind is found by it (processes).
            self._marker = processes.new_marker()
            environment = {**config.child_environment(), processes.MARKER_VARIABLE: self._marker}
            parameters = StdioServerParameters(
                command=config.command, args=config.args, cwd=config.cwd, env=environment
            )
            return stdio_client(parameters)
        return self._http_transport(config)

    @asynccontextmanager
    async def _http_transport(self, config: McpServerConfig) -> AsyncIterator[tuple[Any, Any]]:
        # The SDK documents passing an httpx2 client of our own to set headers.
        async with (
            httpx2.AsyncClient(headers=config.headers(), timeout=HTTP_TIMEOUT) as client,
            streamable_http_client(config.url, http_client=client) as (read, write),
        ):
            yield read, write

    async def _serve(self) -> None:
        """Until the connection is lost: list the tools when told they changed, and every
        refresh interval (which also notices an HTTP server that went away quietly)."""
        while True:
            with anyio.move_on_after(self.refresh_interval_s):
                await self._wake.wait()
            self._wake.clear()
            if self._lost:
                raise _ConnectionLost(self._lost_reason())
            session = self.session
            assert session is not None
            try:
                await self._list_tools(session)
            except Exception as exc:
                # A server that cannot list its tools is reconnected (a fresh process or session).
                raise _ConnectionLost(f"listing tools failed: {_describe(exc)}") from exc

    def _lost_reason(self) -> str:
        if self.config.transport == "stdio":
            return "the server process exited"
        return "the connection to the server was lost"

    def _connection_ended(self) -> None:
        self._lost = True
        self._wake.set()

    def check_soon(self) -> None:
        """A call failed strangely: list the tools now, which reconnects a dead server."""
        self._wake.set()

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._wake.set()
        elif isinstance(message, Exception):
            logger.debug("MCP server %s: transport error: %r", self.config.name, message)

    async def _list_tools(self, session: ClientSession) -> None:
        listed: list[types.Tool] = []
        cursor: str | None = None
        while True:
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            result = await session.list_tools(params=params)
            listed.extend(result.tools)
            cursor = result.next_cursor
            if not cursor:
                break
        tools: dict[str, _Tool] = {}
        allow = self.config.tools
        for tool in listed:
            if allow is not None and not any(fnmatchcase(tool.name, p) for p in allow):
                continue
            name = f"{self.config.name}{SEPARATOR}{tool.name}"
            if not CALLABLE_NAME.match(name):
                if name not in self.tools:
                    logger.warning(
                        "MCP server %s: tool %r skipped: %r is not a name a model can call "
                        "(letters, digits, _ and -, at most 64)",
                        self.config.name,
                        tool.name,
                        name,
                    )
                continue
            spec = ToolSpec(name=name, description=tool.description or "", input_schema=tool.input_schema)
            tools[name] = _Tool(spec, tool.name, _validator(tool.input_schema))
        if tools.keys() != self.tools.keys() and self.session is not None:
            logger.info("MCP server %s: tools now %s", self.config.name, sorted(tools))
        self.tools = tools

    async def call(self, tool: _Tool, arguments: dict[str, Any], timeout_s: float) -> ToolResult:
        session = self.session
        name = tool.spec.name
        if session is None:
            return _unavailable(self)
        try:
            with anyio.fail_after(timeout_s + CALL_GRACE_S):
                result = await session.call_tool(tool.server_tool, arguments, read_timeout_seconds=timeout_s)
        except TimeoutError:
            return _timed_out(name, timeout_s)
        except MCPError as exc:
            if exc.code == types.REQUEST_TIMEOUT:
                return _timed_out(name, timeout_s)
            if exc.code == types.CONNECTION_CLOSED:
                self._connection_ended()
                return ToolResult(
                    False, f"MCP server {self.config.name} went away during the call", "tool_unavailable"
                )
            self.check_soon()
            return ToolResult(False, f"{name} failed: {exc.message}", "tool_error")
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self._connection_ended()
            return ToolResult(False, f"MCP server {self.config.name}: {_describe(exc)}", "tool_unavailable")
        except Exception as exc:
            # The SDK checks results against the tool's output schema, for one.
            logger.warning("MCP server %s: call of %s failed: %s", self.config.name, name, _describe(exc))
            return ToolResult(False, f"{name} failed: {_describe(exc)}", "tool_error")
        text = result_text(result)
        if result.is_error:
            return ToolResult(False, text or f"{name} failed", "tool_error")
        return ToolResult(True, text)


class McpToolbox:
    """The tools of every configured MCP server, named `<server>__<tool>`."""

    def __init__(self, servers: Sequence[McpServerConfig], *, refresh_interval_s: float = 60.0) -> None:
        names = [s.name for s in servers]
        if len(set(names)) != len(names):
            raise ValueError("MCP server names must be unique")
        self._servers = {s.name: _Supervisor(s, refresh_interval_s) for s in servers}

    async def start(self) -> None:
        """Connect every server at once; waits for each first attempt (at most its connect timeout
        and a little). A server that fails is logged and retried by its supervisor."""
        supervisors = list(self._servers.values())
        for supervisor in supervisors:
            supervisor.task = asyncio.create_task(supervisor.run(), name=f"mcp-{supervisor.config.name}")
        if not supervisors:
            return
        # The child process or the HTTP client starts before the handshake's own timeout runs.
        deadline = max(s.config.connect_timeout_s for s in supervisors) + 5.0
        with anyio.move_on_after(deadline):
            for supervisor in supervisors:
                await supervisor.first_attempt.wait()

    async def stop(self) -> None:
        """Disconnect every server; stdio children are stopped (stdin closed, then signals)."""
        tasks = [s.task for s in self._servers.values() if s.task is not None]
        for supervisor in self._servers.values():
            supervisor.stop()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        for task in pending:
            logger.warning("MCP supervisor %s did not stop in time; cancelling it", task.get_name())
            task.cancel()
        for task in tasks:
            if not task.cancelled() and task.done() and task.exception() is not None:
                logger.warning("MCP supervisor %s failed: %r", task.get_name(), task.exception())

    def tools(self, allow: Sequence[str] = ("*",)) -> list[ToolSpec]:
        """The tools available now whose names match one of the fnmatch patterns `allow`."""
        return [
            tool.spec
            for supervisor in self._servers.values()
            if supervisor.connected
            for tool in supervisor.tools.values()
            if any(fnmatchcase(tool.spec.name, pattern) for pattern in allow)
        ]

    async def call(
        self, name: str, arguments: dict[str, Any], *, timeout_s: float | None = None
    ) -> ToolResult:
        """Run one tool. Problems are results, never exceptions: `unknown_tool`,
        `tool_unavailable`, `invalid_arguments`, `tool_timeout`, `tool_error`.

        Timed by server, tool and outcome (kubechat_tool_call_duration_seconds). Only tools a
        configured server declared name their series; any other name a model made up counts as
        `unknown`, so the labels stay bounded.
        """
        started = time.perf_counter()
        server, separator, _ = name.partition(SEPARATOR)
        supervisor = self._servers.get(server) if separator else None
        result = await self._call(supervisor, name, arguments, timeout_s)
        declared = supervisor.tools.get(name) if supervisor is not None else None
        TOOL_CALL_DURATION.labels(
            server if declared else "unknown", declared.server_tool if declared else "unknown",
            "ok" if result.ok else result.error_code or "tool_error",
        ).observe(time.perf_counter() - started)  # fmt: skip
        return result

    async def _call(
        self, supervisor: _Supervisor | None, name: str, arguments: dict[str, Any], timeout_s: float | None
    ) -> ToolResult:
        if supervisor is None:
            return ToolResult(False, f"unknown tool {name!r}", "unknown_tool")
        if not supervisor.connected:
            return _unavailable(supervisor)
        tool = supervisor.tools.get(name)
        if tool is None:
            return ToolResult(False, f"unknown tool {name!r}", "unknown_tool")
        problem = _invalid_arguments(tool, arguments)
        if problem:
            return ToolResult(False, f"invalid arguments for {name}: {problem}", "invalid_arguments")
        timeout = timeout_s if timeout_s is not None else supervisor.config.timeout_s
        return await supervisor.call(tool, arguments, timeout)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per server: whether it is connected, its tool count, its last error and how many
        times it was connected again."""
        return {
            name: {
                "transport": s.config.transport,
                "connected": s.connected,
                "tools": len(s.tools) if s.connected else 0,
                "last_error": s.last_error,
                "restarts": s.restarts,
            }
            for name, s in self._servers.items()
        }


def result_text(result: types.CallToolResult) -> str:
    """A tool result as text: text contents joined, anything else as a short placeholder."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.ImageContent | types.AudioContent):
            kind = "image" if isinstance(block, types.ImageContent) else "audio"
            parts.append(f"[{kind}: {block.mime_type}, {_decoded_size(block.data)} bytes]")
        elif isinstance(block, types.ResourceLink):
            parts.append(f"[resource: {block.uri}]")
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, types.TextResourceContents):
                parts.append(resource.text)
            else:
                size = _decoded_size(resource.blob)
                parts.append(f"[resource: {resource.uri}, {resource.mime_type or 'binary'}, {size} bytes]")
        else:
            parts.append(f"[{getattr(block, 'type', 'content')}]")
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(parts)


def _decoded_size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return len(data)


def _validator(schema: dict[str, Any]) -> Any | None:
    try:
        cls = jsonschema_validators.validator_for(schema)
        cls.check_schema(schema)
        return cls(schema)
    except jsonschema_exceptions.SchemaError:
        return None  # the server checks its own arguments


def _invalid_arguments(tool: _Tool, arguments: dict[str, Any]) -> str:
    if tool.validator is None:
        return ""
    error = jsonschema_exceptions.best_match(tool.validator.iter_errors(arguments))
    if error is None:
        return ""
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else str(error.message)


def _unavailable(supervisor: _Supervisor) -> ToolResult:
    reason = f": {supervisor.last_error}" if supervisor.last_error else " (connecting)"
    message = f"MCP server {supervisor.config.name} is unavailable{reason}"
    return ToolResult(False, message, "tool_unavailable")


def _timed_out(name: str, timeout_s: float) -> ToolResult:
    return ToolResult(False, f"{name} did not answer within {timeout_s:g} s", "tool_timeout")


def _leaf(exc: BaseException) -> Any:
    """An exception group's first leaf (the SDK's task groups wrap what failed)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    """One line for logs and status."""
    exc = _leaf(exc)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, _ConnectionLost | MCPError) else text
