"""The API's side of observability: request ids, request metrics, the metrics port.

`RequestObservation` is a pure ASGI middleware (Starlette's BaseHTTPMiddleware would buffer
nothing but costs a task per request). For every HTTP request and WebSocket it

- takes the client's `X-Request-ID` when it is sane (1-128 characters of `A-Za-z0-9._:@/+=-`),
  else makes one, and returns it as `X-Request-ID` (the WebSocket's handshake answer carries it
  too: the chat connection adds it when it accepts, and puts it on each `start` event);
- binds a `RequestContext` (kubechat.core.logs) so every log line of the request carries it;
- counts the request by method, route template and status, and times it.

Server spans (and the client's W3C `traceparent`) are FastAPI's own telemetry, which records
them whenever a tracer provider is configured (kubechat.core.tracing); kubechat's spans are
their children.

The metrics are served by prometheus-client's own HTTP server on a separate port
(KUBECHAT_METRICS_PORT), never by the app: the ingress sends the whole host to the app, and
the metrics must not be public.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
import uuid
from collections.abc import MutableMapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubechat.core import metrics
from kubechat.core.logs import RequestContext, bind_request, current_request, unbind_request

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
UNMATCHED = "unmatched"  # no API route: the chat page's files, and 404s

_scope: contextvars.ContextVar[MutableMapping[str, Any] | None] = contextvars.ContextVar(
    "kubechat_scope", default=None
)


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's request id when it is sane, else a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def route_of(scope: MutableMapping[str, Any]) -> str:
    """The route template the request matched (`/sessions/{session_id}`), never its raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def current_route() -> str:
    """The route template of the request being served (for errors counted deep in a handler)."""
    scope = _scope.get()
    return route_of(scope) if scope is not None else UNMATCHED


def current_request_id() -> str:
    context = current_request()
    return context.request_id if context is not None else ""


class RequestObservation:
    def __init__(self, app: ASGIApp, *, count: bool = True) -> None:
        """`count`: request metrics (off only to measure what they cost)."""
        self.app = app
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        request_id = request_id_of(headers)
        scope.setdefault("state", {})["request_id"] = request_id
        bound = bind_request(RequestContext(request_id))
        scoped = _scope.set(scope)
        try:
            if kind == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await self._http(scope, receive, send, request_id.encode("latin-1"))
        finally:
            _scope.reset(scoped)
            unbind_request(bound)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        # `send` is not wrapped: it carries every token frame, and the connection adds the
        # request id to its handshake answer itself.
        try:
            await self.app(scope, receive, send)
        finally:
            if self.count:
                metrics.HTTP_REQUESTS.labels("GET", route_of(scope), "101").inc()

    async def _http(self, scope: Scope, receive: Receive, send: Send, request_id: bytes) -> None:
        started = time.perf_counter()
        status = 500  # an exception before the response started

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.count:
                method, route = scope["method"], route_of(scope)
                metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
                metrics.HTTP_REQUEST_DURATION.labels(method, route).observe(time.perf_counter() - started)


class MetricsServer:
    """prometheus-client's HTTP server for kubechat's registry, on its own port and thread."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server, self._thread = start_http_server(self.port, self.host, registry=metrics.REGISTRY)
        self.port = self._server.server_port  # port 0 asks for a free one (tests)
        logger.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None
