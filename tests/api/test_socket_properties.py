"""Properties of the WebSocket protocol under arbitrary client behaviour (Hypothesis).

A client sends any interleaving of good messages, bad frames (not JSON, binary, too large, of
an unknown type, with options the engine cannot take, for a model that does not exist), stops
and pings, pausing at random, while the scripted model answers at its own pace and sometimes
fails (as a model does, or as nothing expects). Whatever the sequence:

* every answer that starts ends with exactly one `done`, after its own events;
* every message is either answered (`start`) or refused with one `error` (no `message_id`);
  every other bad frame gets one `error`; every ping gets its pong; stops get nothing;
* the socket is never closed by the server (it closes only for authentication, tested in
  test_chat_socket.py);
* a refused message stores nothing; an answered one stores the question and an answer whose
  final status is its `done` status and whose content is its tokens.

In process (TestClient, tests/scripted.py's Triton), derandomized: the same examples each run,
so CI is reproducible. docs/reliability.md lists what these hold the API to.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from starlette.testclient import WebSocketTestSession

from kubechat.core.errors import ModelUnavailableError
from tests.api.conftest import InProcessApi, receive_json
from tests.scripted import Pause

LIMIT = 256 * 1024  # KUBECHAT_MAX_WS_FRAME_BYTES's default, which the in-process app keeps


@dataclass(frozen=True)
class Ask:
    """A good message; `reply` is what the scripted model answers if the message is taken."""

    content: str
    reply: tuple[object, ...]


@dataclass(frozen=True)
class Bad:
    """A frame the server must refuse; `message` when it is a `message` (refused, not stored)."""

    frame: str | bytes
    message: bool


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Wait:
    seconds: float


Action = Ask | Bad | Stop | Ping | Wait

failures = st.sampled_from(
    [ModelUnavailableError("model synthetic failed: gone"), RuntimeError("a bug"), OverflowError("too big")]
)
replies = st.tuples(
    st.lists(
        st.one_of(st.text(min_size=1, max_size=8), st.builds(Pause, st.floats(0, 0.02))),
        min_size=0,
        max_size=6,
    ),
    st.one_of(st.none(), failures),
).map(lambda r: (*r[0], *([r[1]] if r[1] is not None else [])))
asks = st.builds(Ask, st.text(min_size=1, max_size=40), replies)


def message(**fields: Any) -> str:
    return json.dumps({"type": "message", **fields})


bad_messages = st.sampled_from(
    [
        message(content="x", options={"seed": 2**64}),
        message(content="x", options={"top_k": 2**31}),
        message(content="x", options={"seed": False}),
        message(content="x", options={"max_tokens": -1}),
        message(content=""),
        message(content="x", model=""),
        message(content="x", model="no-such-model"),
        message(content="x", knowledge_bases=["no-such-base"]),
        message(content="x", unknown="field"),
        message(content=["not", "text"]),
        json.dumps({"type": "message"}),
        message(content="x" * (LIMIT + 1)),
    ]
).map(lambda frame: Bad(frame, message=True))
bad_frames = st.one_of(
    st.sampled_from(
        ["", "{", "null", "[1, 2]", '"message"', '{"type": "nope"}', '{"no": "type"}', "x" * (LIMIT + 1)]
    ),
    st.binary(max_size=64),
    st.text(max_size=30).filter(lambda t: not t.strip().startswith("{")),
).map(lambda frame: Bad(frame, message=False))
actions = st.lists(
    st.one_of(
        asks,
        bad_messages,
        bad_frames,
        st.just(Stop()),
        st.just(Ping()),
        st.builds(Wait, st.floats(0, 0.03)),
    ),
    min_size=1,
    max_size=10,
)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    # No shrinking: a turn that never ends costs a receive deadline per try, and shrinking
    # would try hundreds of times. The failing example is printed as drawn (and, derandomized,
    # comes back on every run); add Phase.shrink locally to minimize it.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=actions)
def test_every_turn_ends_and_nothing_refused_is_stored(api: InProcessApi, script: list[Action]) -> None:
    note(f"script: {script!r}")
    api.triton.replies.clear()
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        assert receive_json(socket)["type"] == "history"
        for action in script:
            send(api, socket, action)
        socket.send_json({"type": "ping"})
        frames = read_until_settled(socket, script)
        # Nothing is left to come: the next frame answers the next ping.
        socket.send_json({"type": "ping"})
        assert receive_json(socket) == {"type": "pong"}
    check(api, session, script, frames)


def send(api: InProcessApi, socket: WebSocketTestSession, action: Action) -> None:
    match action:
        case Ask(content=content, reply=reply):
            api.triton.answer(reply)
            socket.send_json({"type": "message", "content": content})
        case Bad(frame=bytes() as frame):
            socket.send_bytes(frame)
        case Bad(frame=str() as frame):
            socket.send_text(frame)
        case Stop():
            socket.send_json({"type": "stop"})
        case Ping():
            socket.send_json({"type": "ping"})
        case Wait(seconds=seconds):
            time.sleep(seconds)


def read_until_settled(socket: WebSocketTestSession, script: list[Action]) -> list[dict[str, Any]]:
    """Frames until every message and bad frame is answered, every ping ponged and every
    started answer done. Each frame must come within receive_json's deadline: a turn that
    never ends fails the test instead of hanging it."""
    answerable = sum(isinstance(a, Ask | Bad) for a in script)
    pings = sum(isinstance(a, Ping) for a in script) + 1
    frames: list[dict[str, Any]] = []
    while True:
        kinds = Counter(f["type"] for f in frames)
        refusals = sum(f["type"] == "error" and f["message_id"] is None for f in frames)
        settled = kinds["start"] + refusals == answerable and kinds["done"] == kinds["start"]
        if settled and kinds["pong"] == pings:
            return frames
        frames.append(receive_json(socket, timeout=5))


def check(api: InProcessApi, session: str, script: list[Action], frames: list[dict[str, Any]]) -> None:
    starts = [f for f in frames if f["type"] == "start"]
    answers: dict[str, list[dict[str, Any]]] = {s["message_id"]: [] for s in starts}
    open_answers: set[str] = set()
    for frame in frames:
        message_id: str | None = frame.get("message_id")
        if frame["type"] == "start":
            assert message_id is not None
            assert message_id not in open_answers
            open_answers.add(message_id)
        elif message_id is not None:
            assert message_id in open_answers, f"{frame['type']} outside its answer"
            answers[message_id].append(frame)
            if frame["type"] == "done":
                open_answers.remove(message_id)
    assert not open_answers, "an answer without its done"

    stored = api.messages(session)
    questions = [m for m in stored if m["role"] == "user"]
    assert len(questions) == len(starts), "a refused message was stored (or an answered one was not)"
    assert all(q["content"] for q in questions)
    by_id = {m["id"]: m for m in stored if m["role"] == "assistant"}
    for message_id, events in answers.items():
        *body, done = events
        assert done["type"] == "done" and [e for e in body if e["type"] == "done"] == []
        errors = [e for e in body if e["type"] == "error"]
        assert (done["status"] == "failed") == bool(errors), events
        tokens = [e for e in body if e["type"] == "token"]
        # A frame may carry several tokens: seq counts them, rising from frame to frame.
        seqs = [t["seq"] for t in tokens]
        assert seqs == sorted(set(seqs)) and all(s >= 1 for s in seqs)
        answer = by_id[message_id]
        assert answer["status"] == done["status"] in ("complete", "stopped", "failed")
        assert answer["content"] == "".join(t["delta"] for t in tokens)
        assert answer["error_code"] == (errors[0]["error"]["code"] if errors else "")
