"""Logging: credentials masked in every line, plain and JSON; JSON lines carry the request's context."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from kubechat.core.logs import (
    MASK,
    JsonFormatter,
    PlainFormatter,
    RedactingFilter,
    RequestContext,
    bind_request,
    install_redaction,
    principal_hash,
    redact,
    unbind_request,
)

KEY = "sk-live-0123456789abcdef"


@pytest.mark.parametrize(
    "line",
    [
        f'127.0.0.1:51234 - "WebSocket /ws/chat/3f9c?token={KEY}" [accepted]',
        f'127.0.0.1:51234 - "GET /ws/chat/3f9c?model=x&token={KEY}&n=1 HTTP/1.1" 101',
        f"Authorization: Bearer {KEY}",
        f'{{"authorization": "Bearer {KEY}", "host": "chat"}}',
        f"calling with bearer {KEY}",
        f"KUBECHAT_API_KEYS={KEY}=alice",
        f"api_key={KEY}",
        f'"x-api-key": "{KEY}"',
        f"s3 secret_key: {KEY}",
        f"AWS_SECRET_ACCESS_KEY={KEY}",
        f"password={KEY}",
        f"https://hook.example.com/?sig={KEY}",
    ],
)
def test_credentials_are_masked(line: str) -> None:
    masked = redact(line)
    assert KEY not in masked and MASK in masked, masked


@pytest.mark.parametrize(
    "line",
    [
        "turn 3f9c complete: 42 tokens in 880 ms",
        "prompt_tokens=12 max_tokens=64 completion_tokens: 7",
        "model=smollm2 session_id=abc message_id=def",
        'GET /sessions/abc/messages?cursor=xyz&limit=20 HTTP/1.1" 200',
    ],
)
def test_ordinary_lines_are_left_alone(line: str) -> None:
    assert redact(line) == line


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)


def test_json_lines_carry_the_request_context_and_no_credentials(captured: tuple) -> None:  # type: ignore[type-arg]
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())
    context = RequestContext("req-1", session_id="s-9", principal_hash=principal_hash("alice"))
    token = bind_request(context)
    try:
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("turn") as span:
            logger.info("asked with %s", f"token={KEY}")
        try:
            raise ValueError(f"Authorization: Bearer {KEY}")
        except ValueError:
            logger.exception("failed")
    finally:
        unbind_request(token)
    logger.info("outside a request")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == f"asked with token={MASK}"
    assert (first["request_id"], first["session_id"]) == ("req-1", "s-9")
    assert first["principal_hash"] == principal_hash("alice") != "alice"
    assert first["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert (first["level"], first["logger"]) == ("INFO", "tests.logs")
    assert first["time"].endswith("Z")
    assert KEY not in second["exception"] and "ValueError" in second["exception"]
    assert "request_id" not in third


def test_plain_lines_name_the_request_and_mask(captured: tuple) -> None:  # type: ignore[type-arg]
    logger, stream, handler = captured
    handler.setFormatter(PlainFormatter())
    token = bind_request(RequestContext("req-2"))
    try:
        logger.info("key=%s", KEY)
    finally:
        unbind_request(token)
    line = stream.getvalue()
    assert "[req-2]" in line and KEY not in line


def test_uvicorns_own_lines_are_masked_whatever_handler_writes_them(caplog: pytest.LogCaptureFixture) -> None:
    """uvicorn formats the WebSocket path with its query string itself; the filter sits on its
    loggers, so even a handler that is not ours (pytest's, uvicorn's default) never sees the key."""
    install_redaction()
    assert any(isinstance(f, RedactingFilter) for f in logging.getLogger("uvicorn.error").filters)
    with (
        caplog.at_level(logging.INFO, logger="uvicorn.error"),
        caplog.at_level(logging.INFO, logger="uvicorn.access"),
    ):
        logging.getLogger("uvicorn.error").info(
            '%s - "WebSocket %s" [accepted]', "127.0.0.1:5", f"/ws/chat/3f9c?token={KEY}"
        )
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/ws/chat/x?token={KEY}", "1.1", 403
        )
    assert KEY not in caplog.text
    assert "token=***" in caplog.text and "403" in caplog.text


def test_a_credential_split_between_template_and_argument_is_masked() -> None:
    """`log("token=%s", key)`: the template's placeholder is no credential; the joined line is."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s user=%s", (KEY, "alice"), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "token=*** user=alice"
    access = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/ws/chat/x?token={KEY}", "1.1", 101), None,
    )  # fmt: skip
    RedactingFilter().filter(access)
    # uvicorn's access formatter unpacks the arguments: they stay five, the path masked.
    assert isinstance(access.args, tuple) and access.args[2] == "/ws/chat/x?token=***"
