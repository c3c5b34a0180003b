"""The WebSocket chat in process: each domain event of a turn as its frame of docs/websocket.md."""

from __future__ import annotations

from typing import Any

from starlette.testclient import WebSocketTestSession

from kubechat.chat.generation import nothing_found_answer
from kubechat.core.errors import ModelUnavailableError
from kubechat.knowledge.attribution import SentenceSources
from tests.api.conftest import InProcessApi, receive_json, turn_frames
from tests.scripted import HOLD

TOOL_CALL = '<tool_call>\n{"name": "demo__add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'


def turn(socket: WebSocketTestSession) -> list[dict[str, Any]]:
    """The frames of one turn, through its done."""
    frames = []
    while True:
        frame: dict[str, Any] = socket.receive_json()
        frames.append(frame)
        if frame["type"] == "done":
            return frames


def until_text(socket: WebSocketTestSession, text: str) -> list[dict[str, Any]]:
    """The token frames until their deltas make `text` (one frame or several)."""
    frames: list[dict[str, Any]] = []
    while "".join(f["delta"] for f in frames) != text:
        frame: dict[str, Any] = receive_json(socket)
        assert frame["type"] == "token", frame
        frames.append(frame)
        assert len("".join(f["delta"] for f in frames)) <= len(text), frames
    return frames


def test_a_turn_is_start_tokens_done_and_is_stored(api: InProcessApi) -> None:
    session = api.session()
    # The socket keeps the client's request id, which the start event names.
    with api.client.websocket_connect(f"/ws/chat/{session}", headers={"X-Request-ID": "req-42"}) as socket:
        history = socket.receive_json()
        assert (history["type"], history["messages"]) == ("history", [])
        socket.send_json({"type": "message", "content": "Say hello."})
        frames = turn(socket)

    start, *tokens, done = frames
    stored = api.messages(session)
    assert start == {
        "type": "start", "message_id": stored[1]["id"], "user_message_id": stored[0]["id"],
        "model": "synthetic", "turns_dropped": 0, "request_id": "req-42",
    }  # fmt: skip
    # Tokens ready together share a frame (the scripted model yields its three at once); `seq`
    # counts the answer's tokens, so the last frame's is 3 whatever the frames.
    assert {(t["type"], t["message_id"]) for t in tokens} == {("token", start["message_id"])}
    assert "".join(t["delta"] for t in tokens) == "Hello there."
    seqs = [t["seq"] for t in tokens]
    assert seqs == sorted(set(seqs)) and seqs[-1] == 3
    assert (done["message_id"], done["status"]) == (start["message_id"], "complete")
    assert set(done["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert set(done["timings"]) == {"time_to_first_token_ms", "total_ms", "tokens_per_second"}
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [
        ("user", "Say hello.", "complete"), ("assistant", "Hello there.", "complete"),
    ]  # fmt: skip


def test_a_stop_ends_with_done_stopped_and_the_socket_stays_usable(api: InProcessApi) -> None:
    api.triton.answer(["Once", " upon", HOLD, " a time"])
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        socket.send_json({"type": "message", "content": "Tell a story."})
        assert socket.receive_json()["type"] == "start"
        assert until_text(socket, "Once upon")[-1]["seq"] == 2
        socket.send_json({"type": "stop"})
        (done,) = turn(socket)
        socket.send_json({"type": "ping"})
        assert socket.receive_json() == {"type": "pong"}
    assert done["status"] == "stopped"
    assert (api.messages(session)[-1]["status"], api.messages(session)[-1]["content"]) == (
        "stopped",
        "Once upon",
    )


def test_a_model_failure_is_an_error_frame_then_done_failed(api: InProcessApi) -> None:
    api.triton.answer(["token0 ", ModelUnavailableError("model synthetic failed: gone")])
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        socket.send_json({"type": "message", "content": "go"})
        *_, error, done = turn(socket)
    body = {
        "code": "model_unavailable",
        "message": "model synthetic failed: gone",
        "type": "server_error",
        "param": None,
    }
    assert error == {"type": "error", "message_id": done["message_id"], "error": body}
    assert done["status"] == "failed"
    assert api.messages(session)[-1]["error_code"] == "model_unavailable"


def test_sources_follow_start_and_are_stored(api: InProcessApi) -> None:
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        socket.send_json({"type": "message", "content": "Codename?", "knowledge_bases": ["handbook"]})
        start, sources, *_ = turn(socket)
    assert sources["type"] == "sources" and sources["message_id"] == start["message_id"]
    assert [(s["n"], s["text"]) for s in sources["sources"]] == [(1, "The codename is Heron.")]
    assert api.messages(session)[-1]["sources"] == sources["sources"]


def test_done_carries_the_attribution_and_the_history_keeps_it(api: InProcessApi) -> None:
    api.knowledge.attribution = [SentenceSources(start=0, end=12, sources=[1], cited=[], similarity=0.7)]
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        socket.send_json({"type": "message", "content": "Codename?", "knowledge_bases": ["handbook"]})
        *_, done = turn(socket)
        socket.send_json({"type": "message", "content": "Say hello."})  # no sources: no attribution
        *_, plain = turn(socket)
    expected = [{"start": 0, "end": 12, "sources": [1], "cited": [], "similarity": 0.7}]
    assert done["attribution"] == expected and plain["attribution"] == []
    assert api.knowledge.attributed == ["Hello there."]  # asked once, with the answer the client got
    answer = api.messages(session)[1]
    assert answer["attribution"] == expected


def test_nothing_found_is_said_by_the_sources_event_and_the_answer(api: InProcessApi) -> None:
    api.knowledge.sources = []  # no knowledge base holds anything above its relevance floor
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        socket.send_json({"type": "message", "content": "Moons of Jupiter?", "knowledge_bases": ["handbook"]})
        start, sources, token, done = turn(socket)
    assert sources == {
        "type": "sources",
        "message_id": start["message_id"],
        "sources": [],
        "nothing_found": True,
    }
    assert token["delta"] == nothing_found_answer(["handbook"])
    assert "handbook holds nothing on this question" in token["delta"]
    assert done["status"] == "complete"
    assert api.triton.requests == []  # the model is not asked: it would invent an answer
    stored = api.messages(session)[-1]
    assert (stored["content"], stored["sources"]) == (token["delta"], [])


def test_found_sources_say_something_was_found(api: InProcessApi) -> None:
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        socket.send_json({"type": "message", "content": "Codename?", "knowledge_bases": ["handbook"]})
        _, sources, *_ = turn(socket)
    assert sources["nothing_found"] is False and len(api.triton.requests) == 1


def test_tool_calls_and_results_are_frames_between_the_tokens(api: InProcessApi) -> None:
    api.triton.answer([TOOL_CALL], ["demo__add: 5"])
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        socket.send_json({"type": "message", "content": "add", "model": "tool-caller", "tools": True})
        frames = turn(socket)
    assert [f["type"] for f in frames] == ["start", "tool_call", "tool_result", "token", "done"]
    call, result = frames[1], frames[2]
    assert (call["name"], call["arguments"]) == ("demo__add", {"a": 2, "b": 3})
    assert result == {
        "type": "tool_result", "message_id": call["message_id"], "id": call["id"], "name": "demo__add",
        "ok": True, "content": "5", "error_code": "", "truncated": False,
    }  # fmt: skip
    stored = api.messages(session)[-1]["tool_calls"]
    assert isinstance(stored, list) and [(t["name"], t["content"]) for t in stored] == [("demo__add", "5")]


def test_bad_messages_get_error_frames_and_store_nothing(api: InProcessApi) -> None:
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        for payload, code in [
            ({"type": "message"}, "malformed_message"),
            ({"type": "message", "content": "x" * 2001}, "message_too_large"),
            ({"type": "message", "content": "hi", "model": "nope"}, "model_not_found"),
            ({"type": "message", "content": "hi", "tools": True}, "invalid_request"),
            ({"type": "message", "content": "hi", "knowledge_bases": ["nope"]}, "knowledge_base_not_found"),
        ]:
            socket.send_json(payload)
            error = socket.receive_json()
            assert (error["type"], error["error"]["code"]) == ("error", code), payload
    assert api.messages(session) == []
    assert api.triton.requests == []


def test_a_message_while_an_answer_streams_is_busy(api: InProcessApi) -> None:
    api.triton.answer(["one", HOLD, " two"])
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        socket.send_json({"type": "message", "content": "first"})
        assert [socket.receive_json()["type"] for _ in range(2)] == ["start", "token"]
        socket.send_json({"type": "message", "content": "second"})
        assert socket.receive_json()["error"]["code"] == "busy"
        socket.send_json({"type": "stop"})
        assert turn(socket)[-1]["status"] == "stopped"


def test_tokens_ready_together_go_out_as_one_frame_and_the_stored_text_is_theirs(api: InProcessApi) -> None:
    """A model faster than its reader: the 50 deltas it yields at once reach the socket in fewer
    frames, whose seq numbers rise to 50 and whose deltas make exactly the stored answer."""
    deltas = [f"w{n} " for n in range(50)]
    api.triton.answer(deltas)
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        socket.send_json({"type": "message", "content": "Count."})
        start, *tokens, done = turn_frames(socket)
    assert (start["type"], done["type"], done["status"]) == ("start", "done", "complete")
    assert all(t["type"] == "token" for t in tokens)
    assert len(tokens) < len(deltas)
    seqs = [t["seq"] for t in tokens]
    assert seqs == sorted(set(seqs)) and seqs[-1] == len(deltas)
    assert "".join(t["delta"] for t in tokens) == "".join(deltas) == api.messages(session)[-1]["content"]


def test_the_first_token_goes_out_alone_without_waiting_for_more(api: InProcessApi) -> None:
    """Coalescing takes what is ready and never waits for more: while the model holds after its
    first delta, that delta has reached the client on its own, with seq 1."""
    api.triton.answer(["Once", HOLD, " upon", " a", " time"])
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        socket.receive_json()
        socket.send_json({"type": "message", "content": "Tell a story."})
        assert receive_json(socket)["type"] == "start"
        first = receive_json(socket)
        assert (first["type"], first["seq"], first["delta"]) == ("token", 1, "Once")
        assert api.triton.holding.is_set() and not api.triton.release.is_set()
        assert api.client.portal is not None
        api.client.portal.call(api.triton.release.set)
        *rest, done = turn_frames(socket)
    assert done["status"] == "complete"
    assert [t["seq"] for t in rest][-1] == 4
    assert (
        "Once" + "".join(t["delta"] for t in rest)
        == "Once upon a time"
        == api.messages(session)[-1]["content"]
    )
