"""WebSocket chat against the real tritonserver and SmolLM2."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import BOB_KEY, ApiProcess
from tests.integration.conftest import ChatSocket, chatting, metric, new_session, open_socket

pytestmark = pytest.mark.triton

GREEDY = {"temperature": 0, "max_tokens": 40}


async def test_streams_a_coherent_answer_and_stores_it(api: ApiProcess, http: httpx.AsyncClient) -> None:
    session = await new_session(http)
    async with open_socket(api, session) as connection:
        chat = ChatSocket(connection)
        history = await chat.event()
        assert history["type"] == "history"
        assert history["messages"] == []
        await chat.ask("What is the capital of France? Answer in one sentence.", options=GREEDY)
        turn = await chat.turn()

    assert turn.start["model"] == "smollm2"
    # A frame may carry several tokens ready together: seq counts them, rising frame to frame.
    seqs = [t["seq"] for t in turn.tokens]
    assert seqs == sorted(set(seqs)) and seqs[0] >= 1
    assert "Paris" in turn.text
    assert "\ufffd" not in turn.text and "<|im_end|>" not in turn.text
    assert turn.done is not None and turn.done["status"] == "complete"
    usage = turn.done["usage"]
    assert usage["prompt_tokens"] > 10 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert turn.done["timings"]["time_to_first_token_ms"] is not None

    messages = (await http.get(f"/sessions/{session}/messages")).json()["items"]
    assert [(m["role"], m["status"]) for m in messages] == [("user", "complete"), ("assistant", "complete")]
    assert messages[1]["content"] == turn.text
    assert messages[1]["id"] == turn.start["message_id"] == turn.done["message_id"]


async def test_multi_turn_context_reaches_the_model(api: ApiProcess, http: httpx.AsyncClient) -> None:
    session = await new_session(http)
    async with chatting(api, session) as chat:
        # No repetition penalty here: it steers the model away from repeating the name.
        plain = {**GREEDY, "repetition_penalty": 1.0}
        await chat.ask("My name is Zorblax. Remember it.", options=plain)
        await chat.turn()
        await chat.ask("What is my name?", options=plain)
        second = await chat.turn()
    # The second prompt carries the first exchange, so it is longer than the question alone.
    assert second.done is not None
    assert second.done["usage"]["prompt_tokens"] > 40
    assert "Zorblax" in second.text


async def test_stop_keeps_the_partial_answer_and_cancels_triton(
    api: ApiProcess, http: httpx.AsyncClient, triton_metrics: str
) -> None:
    async def cancelled() -> float:
        text = (await http.get(triton_metrics)).text
        return metric(text, "kubechat_generations_cancelled_total", "smollm2")

    before = await cancelled()
    session = await new_session(http)
    async with chatting(api, session) as chat:
        await chat.ask("Write a very long story about a dragon.", options={"max_tokens": 400})
        turn = await chat.turn(stop_after=3)
        assert turn.done is not None and turn.done["status"] == "stopped"
        assert 3 <= len(turn.tokens) < 400
        # The socket stays usable after a stop.
        await chat.send({"type": "ping"})
        assert (await chat.event())["type"] == "pong"

    stored = (await http.get(f"/sessions/{session}/messages")).json()["items"][-1]
    assert stored["status"] == "stopped"
    assert stored["content"] == turn.text
    for _ in range(300):
        if await cancelled() > before:
            break
        await asyncio.sleep(0.1)
    assert await cancelled() == before + 1, "the cancellation never reached the model"


async def test_disconnect_mid_answer_stores_it_as_interrupted(
    api: ApiProcess, http: httpx.AsyncClient
) -> None:
    session = await new_session(http)
    async with chatting(api, session) as chat:
        await chat.ask("Write a very long poem about the sea.", options={"max_tokens": 400})
        assert (await chat.event())["type"] == "start"
        received = [await chat.event() for _ in range(3)]
    text = "".join(e["delta"] for e in received)

    async def stored() -> dict[str, object]:
        return dict((await http.get(f"/sessions/{session}/messages")).json()["items"][-1])

    for _ in range(100):
        message = await stored()
        if message["status"] != "streaming":
            break
        await asyncio.sleep(0.1)
    assert message["status"] == "interrupted"
    assert isinstance(message["content"], str) and message["content"].startswith(text)


async def test_reconnect_shows_history(api: ApiProcess, http: httpx.AsyncClient) -> None:
    session = await new_session(http)
    async with chatting(api, session) as chat:
        await chat.ask("Say hi.", model="synthetic", options={"max_tokens": 5})
        turn = await chat.turn()
    async with open_socket(api, session) as connection:
        history = await ChatSocket(connection).event()
    assert history["type"] == "history"
    assert [m["content"] for m in history["messages"]] == ["Say hi.", turn.text]
    assert turn.text == "token0 token1 token2 token3 token4 "


async def test_bad_input_gets_error_events_and_the_socket_survives(
    api: ApiProcess, http: httpx.AsyncClient
) -> None:
    session = await new_session(http)
    async with chatting(api, session) as chat:
        cases: list[tuple[object, str]] = [
            ("{not json", "malformed_message"),
            ({"type": "message"}, "malformed_message"),
            ({"type": "dance"}, "malformed_message"),
            ({"type": "message", "content": "hi", "surprise": 1}, "malformed_message"),
            (b"\x00\x01", "malformed_message"),
            ({"type": "message", "content": "x" * 5000}, "message_too_large"),
            ("x" * 300_000, "message_too_large"),
            ({"type": "message", "content": "hi", "model": "no-such-model"}, "model_not_found"),
            ({"type": "message", "content": "hi", "model": "minilm"}, "model_not_found"),
            ({"type": "message", "content": "hi", "options": {"max_tokens": 10**6}}, "invalid_request"),
            ({"type": "message", "content": "hi", "knowledge_bases": ["nope"]}, "knowledge_base_not_found"),
            (
                {"type": "message", "content": "hi", "knowledge_bases": ["private"]},
                "knowledge_base_not_found",
            ),
            ({"type": "message", "content": "hi", "image_ids": ["img"]}, "image_not_found"),
            ({"type": "message", "content": "hi", "image_ids": ["a"] * 9}, "malformed_message"),
            ({"type": "message", "content": "hi", "tools": True}, "invalid_request"),
        ]
        for payload, code in cases:
            await chat.send(payload)  # type: ignore[arg-type]
            event = await chat.event()
            assert event["type"] == "error", (payload, event)
            assert event["error"]["code"] == code, (payload, event)
            assert event["error"]["message"]
        await chat.send({"type": "ping"})
        assert (await chat.event())["type"] == "pong"
    # A rejected message leaves no trace.
    assert (await http.get(f"/sessions/{session}/messages")).json()["items"] == []


async def test_second_message_while_streaming_is_busy(api: ApiProcess, http: httpx.AsyncClient) -> None:
    session = await new_session(http)
    async with chatting(api, session) as chat:
        await chat.ask("Tell me a long story.", options={"max_tokens": 200})
        await chat.ask("And another one.")
        events = []
        while True:
            event = await chat.event()
            events.append(event)
            if event["type"] == "error":
                assert event["error"]["code"] == "busy"
                await chat.send({"type": "stop"})
            if event["type"] == "done":
                break
        assert any(e["type"] == "error" for e in events)


async def test_unknown_session_is_refused(api: ApiProcess) -> None:
    async with open_socket(api, uuid.uuid4().hex) as connection:
        event = await ChatSocket(connection).event()
        assert event["error"]["code"] == "session_not_found"
        with pytest.raises(ConnectionClosed) as closed:
            await connection.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


async def test_socket_needs_a_principal(api: ApiProcess, http: httpx.AsyncClient) -> None:
    session = await new_session(http)
    async with open_socket(api, session, key=None) as connection:
        event = await ChatSocket(connection).event()
        assert event["error"]["code"] == "unauthenticated"
        with pytest.raises(ConnectionClosed) as closed:
            await connection.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    # Browsers cannot set headers on a WebSocket: the key may come as ?token=.
    from websockets.asyncio.client import connect

    from tests.conftest import ALICE_KEY

    async with connect(f"{api.ws_url}/ws/chat/{session}?token={ALICE_KEY}") as connection:
        assert (await ChatSocket(connection).event())["type"] == "history"


async def test_another_principal_cannot_open_the_session(api: ApiProcess, http: httpx.AsyncClient) -> None:
    session = await new_session(http)
    async with open_socket(api, session, key=BOB_KEY) as connection:
        event = await ChatSocket(connection).event()
    assert event["error"]["code"] == "session_not_found"
