"""Chat through the ingress: readiness, the WebSocket protocol, history, OpenAI-style SSE."""

from __future__ import annotations

import json

import httpx

from tests.e2e.cluster import CHAT_MODEL, E2E_URL, GREEDY, chatting, new_session, requires_cluster

pytestmark = requires_cluster


async def test_the_api_is_ready_with_every_example_model(http: httpx.AsyncClient) -> None:
    ready = (await http.get("/ready")).json()
    assert ready["status"] == "ready", ready
    assert ready["discovery"] == {"chatmodels": "watching", "knowledgebases": "watching"}
    models = {m["name"]: m for m in (await http.get("/models")).json()["items"]}
    for name in ("smollm2", "minilm", "ocr"):
        assert models[name]["ready"], models[name]


async def test_requests_without_a_key_are_refused() -> None:
    async with httpx.AsyncClient(base_url=E2E_URL, timeout=30) as anonymous:
        response = await anonymous.get("/sessions")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_an_answer_streams_over_the_websocket_and_is_kept(http: httpx.AsyncClient) -> None:
    session = await new_session(http)
    async with chatting(session) as chat:
        await chat.ask(
            "What is the capital of France? Answer with one word.", model=CHAT_MODEL, options=GREEDY
        )
        turn = await chat.turn()
    assert turn.done is not None and turn.done["status"] == "complete", turn.errors
    # A frame may carry several tokens ready together: seq counts them, rising frame to frame.
    seqs = [t["seq"] for t in turn.tokens]
    assert seqs == sorted(set(seqs)) and seqs[0] >= 1
    assert "paris" in turn.text.lower()
    assert turn.done["usage"]["completion_tokens"] > 0
    messages = (await http.get(f"/sessions/{session}/messages")).json()["items"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["content"] == turn.text and messages[1]["status"] == "complete"


async def test_openai_streaming_arrives_in_pieces_through_the_ingress(http: httpx.AsyncClient) -> None:
    """Server-sent events are not buffered by the ingress (proxy-buffering off)."""
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "Name three colours."}],
        "max_tokens": 32,
        "temperature": 0,
        "stream": True,
    }
    chunks = []
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line.removeprefix("data: ")))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len(chunks) > 2 and text.strip()
