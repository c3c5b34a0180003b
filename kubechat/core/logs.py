"""Logging for every kubechat process: plain or JSON lines, a request's context, no credentials.

- `configure_logging(format, level)` (entry points: `kubechat serve`, `kubechat operator`, the API
  under uvicorn when KUBECHAT_LOG_FORMAT is set) sends every logger, uvicorn's and kopf's
  included, to one stderr handler: plain text, or one JSON object per line
  (KUBECHAT_LOG_FORMAT=json).
- `RequestContext` (a context variable set by the API's middleware) puts the request id, the
  session id and a hash of the principal on every line logged while a request is served; the
  trace and span ids too while a span is recording. Never keys, prompts or document text.
- Redaction: credentials are masked in every line, whatever logged it: a `token`, `key`,
  `api_key`, `secret`, `password`… query or form parameter, `Authorization`/`Bearer` values.
  uvicorn logs WebSocket paths with their query string (`/ws/chat/<id>?token=<key>`), so
  `install_redaction()` also filters uvicorn's own loggers, whichever handler they end in.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry import trace

LogFormat = Literal["plain", "json"]
MASK = "***"
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# `name=value` or `name: value` (query strings, form bodies, JSON, messages) whose name says it is
# a credential: it ends in token, key, secret, password, signature... (`api_key`, `x-api-key`,
# `KUBECHAT_API_KEYS`, `AWS_SECRET_ACCESS_KEY`), not `max_tokens`. The value runs to the next
# separator.
_PARAM = re.compile(
    r"(?i)(?<![A-Za-z0-9_.-])(?P<name>(?:[A-Za-z0-9]+[_.-])*"
    r"(?:token|key|keys|apikey|secret|secrets|password|passwd|pwd|credentials?|signature|sig))"
    r"(?P<q1>[\"']?)(?P<sep>\s*[=:]\s*)(?P<q2>[\"']?)"
    # Not a %-placeholder of a log message's template ("token=%s"): its argument is checked apart.
    r"(?!%(?:\(\w+\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%])"
    r"(?P<value>[^\s&,;\"'}\]]+)"
)
# An Authorization header's value, however it is written, and a bare bearer or basic credential.
_AUTHORIZATION = re.compile(r"(?i)(?P<name>\bauthorization\b[\"']?\s*[=:,]\s*[\"']?)(?P<value>[^\r\n\"',}]+)")
_BEARER = re.compile(r"(?i)\b(?P<scheme>bearer|basic)\s+(?P<value>[A-Za-z0-9._~+/=-]+)")


def _mask_param(match: re.Match[str]) -> str:
    return f"{match['name']}{match['q1']}{match['sep']}{match['q2']}{MASK}"


def redact(text: str) -> str:
    """`text` with every credential-looking value replaced by ***."""
    if not text:
        return text
    text = _AUTHORIZATION.sub(lambda m: m["name"] + MASK, text)
    text = _BEARER.sub(lambda m: f"{m['scheme']} {MASK}", text)
    return _PARAM.sub(_mask_param, text)


def principal_hash(principal: str) -> str:
    """A short, stable stand-in for a principal in logs: who, without the name."""
    return hashlib.sha256(principal.encode()).hexdigest()[:12]


@dataclass
class RequestContext:
    """What the lines logged while serving one request carry. Mutable: the middleware sets it
    for the request's task, and authentication (which FastAPI may run in a worker thread, on a
    copy of the context) fills the principal in on the same object."""

    request_id: str
    session_id: str = ""
    principal_hash: str = ""
    route: str = ""


_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "kubechat_request", default=None
)


def current_request() -> RequestContext | None:
    return _request.get()


def bind_request(context: RequestContext) -> contextvars.Token[RequestContext | None]:
    return _request.set(context)


def unbind_request(token: contextvars.Token[RequestContext | None]) -> None:
    _request.reset(token)


class RedactingFilter(logging.Filter):
    """Masks credentials in a record's message and arguments before any handler formats it.

    On a logger it covers what that logger logs itself (uvicorn's access and error loggers, whose
    records carry raw paths); on a handler, everything the handler writes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # Template and arguments apart first: uvicorn's access formatter reads the arguments.
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        # A credential split between them ("token=%s", key) shows only once they are joined.
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a broken call; logging reports it as it would have
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class PlainFormatter(logging.Formatter):
    """Text lines; the request id follows the logger's name while a request is served."""

    def __init__(self) -> None:
        super().__init__(PLAIN_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = current_request()
        if context is not None:
            head, sep, tail = line.partition(": ")
            line = f"{head} [{context.request_id}]{sep}{tail}"
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the request's context."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        context = current_request()
        if context is not None:
            entry["request_id"] = context.request_id
            if context.session_id:
                entry["session_id"] = context.session_id
            if context.principal_hash:
                entry["principal_hash"] = context.principal_hash
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return json.dumps(entry, ensure_ascii=False, default=str)


# Loggers that write raw request paths and headers themselves (not through kubechat's loggers).
_RAW_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "kopf")
_FILTER = RedactingFilter()


def install_redaction() -> None:
    """Mask credentials in what uvicorn (and the HTTP client, and kopf) log, and in everything
    the root logger's handlers write, however logging was configured. Idempotent."""
    for name in _RAW_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def configure_logging(fmt: LogFormat = "plain", level: str = "INFO") -> None:
    """One stderr handler on the root logger, in `fmt`, for every logger of the process.

    uvicorn's loggers lose their own handlers and propagate, so access lines get the same
    format, the request's context and the redaction.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    handler.addFilter(_FILTER)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "kubechat", False):
            root.removeHandler(old)
    handler.kubechat = True  # type: ignore[attr-defined]  # marks the handler this function owns
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    install_redaction()
