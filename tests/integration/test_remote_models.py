"""Remote ChatModels (backend openai) against real OpenAI-compatible servers: llama.cpp's server
serving the SmolLM2 GGUF, and a first kubechat API's /v1 as a peer (tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ApiProcess, auth
from tests.integration.conftest import chatting, new_session
from tests.integration.test_knowledge_bases import indexed, settled
from tests.llama_server import API_KEY as LLAMA_KEY
from tests.llama_server import UPSTREAM_MODEL, LlamaServer
from tests.polling import eventually

pytestmark = pytest.mark.triton

QUESTION = "What is the capital of France? Answer in one sentence."
# The remote models' defaults (tests/conftest.py's remote_model_document), sent the way the
# adapter sends them, for asking the server directly.
DEFAULTS: dict[str, Any] = {"temperature": 0, "top_p": 0.9, "extra_body": {"repetition_penalty": 1.1}}


@pytest.fixture
async def http(remote_api: ApiProcess) -> Any:
    async with httpx.AsyncClient(base_url=remote_api.url, headers=auth(), timeout=120) as client:
        yield client


def direct_llama(server: LlamaServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url, api_key=LLAMA_KEY, max_retries=0)


async def test_models_and_ready_say_which_endpoints_answer(http: httpx.AsyncClient) -> None:
    models = {m["name"]: m for m in (await http.get("/models")).json()["items"]}
    assert models["llama"]["ready"] is True
    assert models["peer"]["ready"] is True
    assert (models["llama-wrong-key"]["ready"], models["llama-wrong-key"]["reason"]) == (
        False,
        "EndpointUnauthorized",
    )
    assert (models["llama-unlisted"]["ready"], models["llama-unlisted"]["reason"]) == (
        False,
        "ModelNotListed",
    )
    assert "no-such-model" in models["llama-unlisted"]["message"]
    assert (models["nowhere"]["ready"], models["nowhere"]["reason"]) == (False, "EndpointUnavailable")

    ready = await http.get("/ready")
    checks = ready.json()["checks"]
    assert ready.status_code == 503  # a model that cannot answer makes the API not ready, as Triton's do
    assert checks["model:llama"] == "ready" and checks["model:smollm2"] == "ready"
    assert checks["model:nowhere"].startswith("not ready (EndpointUnavailable")
    assert checks["model:llama-wrong-key"].startswith("not ready (EndpointUnauthorized")


async def test_a_websocket_answer_is_what_the_server_says_directly(
    remote_api: ApiProcess, http: httpx.AsyncClient, llama_server: LlamaServer
) -> None:
    direct = await direct_llama(llama_server).chat.completions.create(
        model=UPSTREAM_MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=48, **DEFAULTS
    )
    expected = direct.choices[0].message.content
    assert expected and "Paris" in expected

    session = await new_session(http)
    async with chatting(remote_api, session) as chat:
        await chat.ask(QUESTION, model="llama")
        turn = await chat.turn()
    assert turn.start["model"] == "llama"
    assert turn.text == expected  # greedy: the same text, streamed delta by delta
    # A frame may carry several tokens ready together: seq counts them, rising frame to frame.
    seqs = [t["seq"] for t in turn.tokens]
    assert seqs == sorted(set(seqs)) and seqs[0] >= 1
    assert turn.done is not None and turn.done["status"] == "complete" and not turn.errors
    stored = (await http.get(f"/sessions/{session}/messages")).json()["items"]
    assert [(m["role"], m["content"]) for m in stored] == [("user", QUESTION), ("assistant", expected)]


async def test_history_reaches_the_remote_model(remote_api: ApiProcess, http: httpx.AsyncClient) -> None:
    session = await new_session(http)
    plain = {"repetition_penalty": 1.0}
    async with chatting(remote_api, session) as chat:
        await chat.ask("My name is Zorblax. Remember it.", model="llama", options=plain)
        await chat.turn()
        await chat.ask("What is my name?", model="llama", options=plain)
        second = await chat.turn()
    assert "Zorblax" in second.text


async def test_v1_streams_a_remote_model_with_stop_sequences(
    remote_api: ApiProcess, llama_server: LlamaServer
) -> None:
    messages: Any = [{"role": "user", "content": QUESTION}]
    llama = direct_llama(llama_server)
    asked: dict[str, Any] = {"model": UPSTREAM_MODEL, "messages": messages, "max_tokens": 48, **DEFAULTS}
    whole = await llama.chat.completions.create(**asked)
    direct = await llama.chat.completions.create(**asked, stop=["Paris"])
    unstopped, expected = whole.choices[0].message.content, direct.choices[0].message.content
    assert unstopped and "Paris" in unstopped
    assert expected is not None and "Paris" not in expected and unstopped.startswith(expected)

    client = openai.AsyncOpenAI(base_url=f"{remote_api.url}/v1", api_key=auth()["Authorization"][7:])
    stream = await client.chat.completions.create(
        model="llama", messages=messages, max_tokens=48, stop=["Paris"], stream=True,
        stream_options={"include_usage": True}, temperature=0,
    )  # fmt: skip
    pieces, usage, finish = [], None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == expected
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


async def test_usage_is_the_upstreams_own(remote_api: ApiProcess, api: ApiProcess) -> None:
    """The peer (kubechat's /v1) reports streamed usage: the remote model's done event carries
    those counts, not kubechat's own estimate."""
    messages: Any = [{"role": "user", "content": QUESTION}]
    peer = openai.AsyncOpenAI(base_url=f"{api.url}/v1", api_key=auth()["Authorization"][7:])
    direct = await peer.chat.completions.create(
        model="smollm2", messages=messages, max_tokens=48, temperature=0
    )
    assert direct.usage is not None

    client = openai.AsyncOpenAI(base_url=f"{remote_api.url}/v1", api_key=auth()["Authorization"][7:])
    through = await client.chat.completions.create(
        model="peer", messages=messages, max_tokens=48, temperature=0
    )
    assert through.choices[0].message.content == direct.choices[0].message.content
    assert through.usage is not None
    assert (through.usage.prompt_tokens, through.usage.completion_tokens) == (
        direct.usage.prompt_tokens,
        direct.usage.completion_tokens,
    )


@pytest.mark.parametrize(
    ("model", "code", "status"),
    [
        ("llama-wrong-key", "upstream_auth_failed", 502),
        ("nowhere", "model_unavailable", 503),
    ],
)
async def test_upstream_failures_have_stable_codes(
    remote_api: ApiProcess, http: httpx.AsyncClient, model: str, code: str, status: int
) -> None:
    session = await new_session(http)
    async with chatting(remote_api, session) as chat:
        await chat.ask("hello", model=model)
        turn = await chat.turn()
    assert [e["error"]["code"] for e in turn.errors] == [code]
    assert turn.done is not None and turn.done["status"] == "failed"
    stored = (await http.get(f"/sessions/{session}/messages")).json()["items"]
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "failed")]

    reply = await http.post(
        "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hello"}]}
    )
    assert reply.status_code == status
    assert reply.json()["error"]["code"] == code


def _disconnects(server: LlamaServer) -> int:
    """Streams llama.cpp's server saw its client close (sse-starlette's report, after which the
    server's generator is cancelled and stops generating)."""
    return server.log.read_text(errors="replace").count("Disconnected from client")


async def test_stop_closes_the_upstream_stream(
    remote_api: ApiProcess, http: httpx.AsyncClient, llama_server: LlamaServer
) -> None:
    before = _disconnects(llama_server)
    session = await new_session(http)
    async with chatting(remote_api, session) as chat:
        await chat.ask("Write a very long story about a dragon.", model="llama", options={"max_tokens": 250})
        turn = await chat.turn(stop_after=3)
    assert turn.done is not None and turn.done["status"] == "stopped"
    assert 3 <= len(turn.tokens) < 250
    stored = (await http.get(f"/sessions/{session}/messages")).json()["items"][-1]
    assert stored["status"] == "stopped" and stored["content"] == turn.text
    # kubechat closed the HTTP stream: the server saw its client go.
    await eventually(lambda: _disconnects(llama_server) == before + 1, "the server to see the stream closed")


async def test_a_remote_embedder_indexes_and_answers_with_citations(
    remote_api: ApiProcess, http: httpx.AsyncClient
) -> None:
    """remote-handbook embeds with remote-minilm: MiniLM served by the peer's /v1/embeddings."""
    runbook = b"# Runbook\n\nTo restart the frobnicator, hold the blue button for nine seconds.\n"
    await indexed(http, "remote-handbook", ("frobnicator.md", runbook))
    found = await http.post(
        "/knowledge-bases/remote-handbook/search", json={"query": "how do I restart the frobnicator?", "k": 3}
    )
    assert found.status_code == 200, found.text
    top = found.json()["sources"][0]
    assert top["document_name"] == "frobnicator.md" and "blue button" in top["text"]

    session = await new_session(http)
    async with chatting(remote_api, session) as chat:
        await chat.ask(
            "How do I restart the frobnicator?", model="llama", knowledge_bases=["remote-handbook"]
        )
        turn = await chat.turn()
    assert turn.sources is not None and turn.sources["sources"][0]["document_name"] == "frobnicator.md"
    assert turn.done is not None and turn.done["status"] == "complete"


async def test_a_remote_model_answers_as_a_specialist_tool(
    remote_api: ApiProcess, http: httpx.AsyncClient, llama_server: LlamaServer
) -> None:
    """The tool-caller supervises the llama.cpp model: the call runs it on the arguments, and its
    answer is the tool result the supervisor quotes, the same text the server gives directly."""
    direct = await direct_llama(llama_server).chat.completions.create(
        model=UPSTREAM_MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=64, **DEFAULTS
    )
    expected = direct.choices[0].message.content
    assert expected
    session = await new_session(http)
    async with chatting(remote_api, session) as chat:
        await chat.ask(f'call llama {{"prompt": "{QUESTION}"}}', model="tool-caller", tools=True)
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] != "done":
            events.append(await chat.event())
    kinds = [e["type"] for e in events if e["type"] != "token"]
    assert kinds == ["start", "tool_call", "tool_result", "done"], events
    (called,) = [e for e in events if e["type"] == "tool_call"]
    (result,) = [e for e in events if e["type"] == "tool_result"]
    assert (called["name"], called["arguments"]) == ("llama", {"prompt": QUESTION})
    assert result["ok"] is True and expected.startswith(result["content"][:20])
    answer = "".join(e["delta"] for e in events if e["type"] == "token")
    assert answer == f"Tool results: llama: {result['content']}"
    assert events[-1]["status"] == "complete"


async def test_a_remote_embedder_of_another_size_fails_the_document(http: httpx.AsyncClient) -> None:
    """The dimension check is the same as for a Triton embedder: 384 is not the declared 512."""
    response = await http.post(
        "/knowledge-bases/remote-misdeclared/documents", files=[("files", ("a.md", b"# A\n\nSome text.\n"))]
    )
    assert response.status_code == 202, response.text
    document = await settled(http, "remote-misdeclared", response.json()["documents"][0]["id"])
    assert document["status"] == "failed" and document["error_code"] == "embedding_mismatch"
    assert "384" in document["error_message"] and "512" in document["error_message"]
