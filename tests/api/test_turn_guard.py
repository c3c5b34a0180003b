"""Whatever fails inside a turn, the turn ends: `error` then `done` on the socket (the answer
stored as `failed`), an error response or an in-band error and `[DONE]` on /v1. The causes here
are ones no code path expects (an OverflowError, a RuntimeError, a store that breaks), which is
the point: one guard per turn, not one except clause per known cause."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubechat.stores.errors import StoreUnavailableError
from tests.api.conftest import InProcessApi, receive_json
from tests.api.conftest import turn_frames as turn

QUESTION = [{"role": "user", "content": "Name three colours."}]
INTERNAL = {
    "code": "internal_error",
    "message": "an internal error occurred; it has been logged",
    "param": None,
}


@pytest.mark.parametrize("failure", [OverflowError("Python int too large to convert"), RuntimeError("bug")])
def test_an_unexpected_failure_mid_answer_ends_the_turn_failed(api: InProcessApi, failure: Exception) -> None:
    api.triton.answer(["token0 ", failure])
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        receive_json(socket)
        socket.send_json({"type": "message", "content": "go"})
        start, token, error, done = turn(socket)
        # The socket is still served: the next turn completes.
        socket.send_json({"type": "message", "content": "again"})
        *_, after = turn(socket)

    assert (start["type"], token["delta"]) == ("start", "token0 ")
    assert error == {
        "type": "error",
        "message_id": start["message_id"],
        "error": {**INTERNAL, "type": "server_error"},
    }
    assert (done["message_id"], done["status"]) == (start["message_id"], "failed")
    assert after["status"] == "complete"
    stored = api.messages(session)
    assert [(m["role"], m["status"], m["error_code"]) for m in stored[:2]] == [
        ("user", "complete", ""), ("assistant", "failed", "internal_error"),
    ]  # fmt: skip
    assert stored[1]["content"] == "token0 "


def test_a_failure_before_the_model_is_asked_still_starts_and_ends_the_turn(
    api: InProcessApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grounding stores the sources before generation: a store that fails there is not the
    model's failure, and the turn still gets its start, an error and its done."""

    async def broken(*_args: Any, **_kwargs: Any) -> None:
        raise StoreUnavailableError("the history store went away")

    monkeypatch.setattr(api.services.store, "set_context", broken)
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        receive_json(socket)
        socket.send_json(
            {"type": "message", "content": "What is the codename?", "knowledge_bases": ["handbook"]}
        )
        start, error, done = turn(socket)
    assert start["type"] == "start" and start["model"] == "synthetic"
    assert error["message_id"] == start["message_id"] and error["error"]["code"] == "storage_unavailable"
    assert done["status"] == "failed" and done["usage"]["completion_tokens"] == 0
    assert [(m["role"], m["status"]) for m in api.messages(session)] == [
        ("user", "complete"),
        ("assistant", "failed"),
    ]


def test_an_unexpected_refusal_is_an_error_event_and_the_socket_stays(
    api: InProcessApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure before anything is stored (here a bug while planning) is an error event of its
    own; the turn task does not die unobserved and the socket keeps serving."""

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(api.services.chat, "offered_tools", broken)
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        receive_json(socket)
        socket.send_json({"type": "message", "content": "go"})
        error = receive_json(socket)
        socket.send_json({"type": "ping"})
        assert receive_json(socket) == {"type": "pong"}
    assert error == {"type": "error", "message_id": None, "error": {**INTERNAL, "type": "server_error"}}
    assert api.messages(session) == []


def test_an_unexpected_failure_of_a_completion_is_a_json_500(api: InProcessApi) -> None:
    api.triton.answer(["token0 ", OverflowError("Python int too large to convert")])
    response = api.client.post("/v1/chat/completions", json={"model": "synthetic", "messages": QUESTION})
    assert response.status_code == 500
    assert response.json() == {"error": {**INTERNAL, "type": "server_error"}}


def test_an_unexpected_failure_of_a_stream_is_in_band_then_done(api: InProcessApi) -> None:
    api.triton.answer(["token0 ", OverflowError("Python int too large to convert")])
    response = api.client.post(
        "/v1/chat/completions", json={"model": "synthetic", "messages": QUESTION, "stream": True}
    )
    assert response.status_code == 200
    data = [e.removeprefix("data: ") for e in response.text.strip().split("\n\n")]
    *_, error, done = data
    assert json.loads(error) == {"error": {**INTERNAL, "type": "server_error"}}
    assert done == "[DONE]"
