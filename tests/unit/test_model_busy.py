"""A model's full queue on the wire: the stable code `busy`, HTTP 429 with Retry-After (what
OpenAI clients back off on), and the same body in WebSocket error events."""

from __future__ import annotations

import json

from kubechat.api.errors import BUSY_RETRY_AFTER_S, error_body, error_response, http_status
from kubechat.core.errors import BusyError, ModelBusyError, ModelUnavailableError
from kubechat.triton.client import QUEUE_FULL_MESSAGE, _stream_error


def test_tritons_queue_full_error_is_busy_and_anything_else_unavailable() -> None:
    """The message Triton's dynamic batcher (and kubechat's GPU model) answers a full queue with."""
    busy = _stream_error("llama", f"in ensemble 'llama', {QUEUE_FULL_MESSAGE}")
    assert isinstance(busy, ModelBusyError) and busy.code == "busy"
    other = _stream_error("llama", "Error generating request: CUDA out of memory")
    assert type(other) is ModelUnavailableError and other.code == "model_unavailable"


def test_busy_is_429_with_retry_after() -> None:
    response = error_response(ModelBusyError("model llama is at capacity; retry shortly"))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == str(BUSY_RETRY_AFTER_S)
    body = json.loads(bytes(response.body))
    assert body["error"]["code"] == "busy"
    assert body["error"]["type"] == "rate_limit_error"


def test_websocket_events_carry_the_same_code() -> None:
    assert error_body(ModelBusyError("full")).code == "busy"


def test_a_session_already_streaming_keeps_its_409() -> None:
    """The other `busy` (a session streaming an answer) is a conflict, not a capacity refusal."""
    assert http_status(BusyError("streaming")) == 409
    assert "Retry-After" not in error_response(BusyError("streaming")).headers
