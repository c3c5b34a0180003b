"""/v1/chat/completions in process: the same domain events as one chat.completion or as
server-sent chunks, read back by the official `openai` client where it can."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from kubechat.chat.generation import nothing_found_answer
from kubechat.api.errors import BUSY_RETRY_AFTER_S
from kubechat.core.errors import ModelBusyError, ModelUnavailableError
from tests.api.conftest import InProcessApi
from tests.conftest import ALICE_KEY

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name three colours."}]
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
WEATHER_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


def events(body: str) -> list[Any]:
    """The data of each server-sent event, JSON-decoded but for `[DONE]`."""
    assert body.endswith("\n\n")
    data = [event.removeprefix("data: ") for event in body[:-2].split("\n\n")]
    return [d if d == "[DONE]" else json.loads(d) for d in data]


@pytest.fixture
def client(api: InProcessApi) -> openai.OpenAI:
    # The TestClient is an httpx.Client: the official client talks to the app in process.
    return openai.OpenAI(base_url="http://testserver/v1", api_key=ALICE_KEY, http_client=api.client)


def test_plain_and_streamed_completions_agree(api: InProcessApi, client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="synthetic", messages=QUESTION)
    assert plain.choices[0].message.content == "Hello there."
    assert plain.choices[0].finish_reason == "stop"
    assert plain.usage is not None and plain.usage.total_tokens == plain.usage.prompt_tokens + 2

    stream = client.chat.completions.create(
        model="synthetic", messages=QUESTION, stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage == plain.usage
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert api.messages(api.session()) == []  # stateless: nothing is stored


def test_the_stream_is_server_sent_events_ending_with_done(api: InProcessApi) -> None:
    response = api.client.post(
        "/v1/chat/completions", json={"model": "synthetic", "messages": QUESTION, "stream": True}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    first, *content, finish, done = events(response.text)
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    assert "sources" not in first
    # Deltas ready together share a chunk (kubechat.chat.coalesce): the scripted model's three do.
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in content)
    assert "".join(c["choices"][0]["delta"]["content"] for c in content) == "Hello there."
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert done == "[DONE]"


def test_a_failure_after_the_stream_started_is_reported_in_band(api: InProcessApi) -> None:
    api.triton.answer(["token0 ", ModelUnavailableError("model synthetic failed: gone")])
    response = api.client.post(
        "/v1/chat/completions", json={"model": "synthetic", "messages": QUESTION, "stream": True}
    )
    assert response.status_code == 200
    *_, error, done = events(response.text)
    assert error == {
        "error": {
            "code": "model_unavailable",
            "message": "model synthetic failed: gone",
            "type": "server_error",
            "param": None,
        }
    }
    assert done == "[DONE]"


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (ModelBusyError("model synthetic is at capacity; retry shortly"), 429, "busy"),
        (ModelUnavailableError("model synthetic failed: gone"), 503, "model_unavailable"),
    ],
)
def test_a_failure_before_the_first_token_of_a_stream_is_an_error_response(
    api: InProcessApi, failure: Exception, status: int, code: str
) -> None:
    """No header goes out before the first token: a full queue is a 429 with Retry-After that
    OpenAI clients back off on and retry, not a 200 stream carrying an error."""
    api.triton.answer([failure])
    response = api.client.post(
        "/v1/chat/completions", json={"model": "synthetic", "messages": QUESTION, "stream": True}
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    if status == 429:
        assert response.headers["Retry-After"] == str(BUSY_RETRY_AFTER_S)


def test_the_openai_client_retries_a_busy_stream(api: InProcessApi, client: openai.OpenAI) -> None:
    """The official client retries a 429 (after Retry-After) and then gets the stream."""
    api.triton.answer([ModelBusyError("model synthetic is at capacity; retry shortly")])
    stream = client.with_options(max_retries=1).chat.completions.create(
        model="synthetic", messages=QUESTION, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello there."


def test_a_failure_without_a_stream_is_an_error_response(api: InProcessApi) -> None:
    api.triton.answer(["token0 ", ModelUnavailableError("model synthetic failed: gone")])
    response = api.client.post("/v1/chat/completions", json={"model": "synthetic", "messages": QUESTION})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"


@pytest.mark.parametrize("stream", [False, True])
def test_refusals_are_json_errors_before_any_stream(api: InProcessApi, stream: bool) -> None:
    refusals: list[tuple[dict[str, Any], int, str]] = [
        ({"model": "nope"}, 404, "model_not_found"),
        ({"max_tokens": 10**6}, 400, "invalid_request"),
        ({"knowledge_bases": ["nope"]}, 404, "knowledge_base_not_found"),
        ({"model": "synthetic", "tools": [WEATHER]}, 400, "invalid_request"),
        ({"messages": [{"role": "user", "content": "x" * 2001}]}, 413, "message_too_large"),
    ]
    for body, status, code in refusals:
        response = api.client.post(
            "/v1/chat/completions",
            json={"model": "synthetic", "messages": QUESTION, "stream": stream, **body},
        )
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
    api.knowledge.failure = ModelUnavailableError("embedder minilm failed")
    response = api.client.post(
        "/v1/chat/completions",
        json={"model": "synthetic", "messages": QUESTION, "stream": stream, "knowledge_bases": ["handbook"]},
    )
    assert (response.status_code, response.json()["error"]["code"]) == (503, "model_unavailable")
    assert api.triton.requests == []


def test_sources_come_with_the_response_or_the_first_chunk(api: InProcessApi) -> None:
    body = {"model": "synthetic", "messages": QUESTION, "knowledge_bases": ["handbook"]}
    plain = api.client.post("/v1/chat/completions", json=body).json()
    assert [s["text"] for s in plain["sources"]] == ["The codename is Heron."]
    streamed = api.client.post("/v1/chat/completions", json={**body, "stream": True})
    first, *_ = events(streamed.text)
    assert first["sources"] == plain["sources"]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "[1] (doc1.md)" in api.triton.requests[0].prompt
    assert plain["nothing_found"] is False and first["nothing_found"] is False


def test_nothing_found_is_said_without_asking_the_model(api: InProcessApi) -> None:
    api.knowledge.sources = []
    body = {"model": "synthetic", "messages": QUESTION, "knowledge_bases": ["handbook"]}
    plain = api.client.post("/v1/chat/completions", json=body).json()
    assert (plain["sources"], plain["nothing_found"]) == ([], True)
    assert plain["choices"][0]["message"]["content"] == nothing_found_answer(["handbook"])
    first, *_ = events(api.client.post("/v1/chat/completions", json={**body, "stream": True}).text)
    assert (first["sources"], first["nothing_found"]) == ([], True)
    assert api.triton.requests == []


def test_calls_of_the_clients_tools_are_handed_back(api: InProcessApi) -> None:
    body = {"model": "tool-caller", "messages": QUESTION, "tools": [WEATHER]}
    api.triton.answer([WEATHER_CALL], [WEATHER_CALL])
    plain = api.client.post("/v1/chat/completions", json=body).json()["choices"][0]
    assert plain["finish_reason"] == "tool_calls" and plain["message"]["content"] is None
    (call,) = plain["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}

    chunks = events(api.client.post("/v1/chat/completions", json={**body, "stream": True}).text)
    deltas = [c["choices"][0] for c in chunks[:-1]]
    (streamed,) = [t for d in deltas for t in d["delta"].get("tool_calls", [])]
    assert (streamed["index"], streamed["function"]["name"]) == (0, "get_weather")
    assert deltas[-1]["finish_reason"] == "tool_calls"
    assert api.tools.calls == []  # the client runs its own tools


# Every field OpenAI defines that kubechat does not do: refused with a 400 naming it.
UNSUPPORTED: list[tuple[dict[str, Any], str, str]] = [
    ({"n": 2}, "n", "unsupported_value"),
    ({"frequency_penalty": 0.5}, "frequency_penalty", "unsupported_parameter"),
    ({"presence_penalty": -1.0}, "presence_penalty", "unsupported_parameter"),
    ({"logit_bias": {"42": 5}}, "logit_bias", "unsupported_parameter"),
    ({"tools": [WEATHER], "tool_choice": "required"}, "tool_choice", "unsupported_value"),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        "tool_choice",
        "unsupported_value",
    ),
    ({"tools": [WEATHER], "parallel_tool_calls": False}, "parallel_tool_calls", "unsupported_value"),
    ({"store": True}, "store", "unsupported_value"),
    ({"service_tier": "flex"}, "service_tier", "unsupported_value"),
    ({"modalities": ["text", "audio"]}, "modalities", "unsupported_value"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio", "unsupported_parameter"),
    ({"reasoning_effort": "low"}, "reasoning_effort", "unsupported_parameter"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction", "unsupported_parameter"),
    ({"functions": [{"name": "f", "parameters": {}}]}, "functions", "unsupported_parameter"),
]


@pytest.mark.parametrize(("fields", "param", "code"), UNSUPPORTED, ids=[u[1] for u in UNSUPPORTED])
def test_unsupported_fields_are_refused_naming_them(
    api: InProcessApi, client: openai.OpenAI, fields: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tool-caller", messages=QUESTION, **fields)
    assert (refused.value.param, refused.value.code) == (param, code)
    assert refused.value.type == "invalid_request_error"
    assert param in refused.value.message
    assert api.triton.requests == []  # refused before any generation


def test_defaults_sent_explicitly_are_accepted(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="synthetic", messages=QUESTION, n=1, frequency_penalty=0, presence_penalty=0,
        logprobs=False, store=False, service_tier="auto", modalities=["text"], logit_bias={},
        parallel_tool_calls=True, user="u-1", metadata={"k": "v"}, response_format={"type": "text"},
    )  # fmt: skip
    assert reply.choices[0].message.content == "Hello there."


def test_validation_errors_are_openai_400s_naming_the_field(api: InProcessApi, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as hot:
        client.chat.completions.create(model="synthetic", messages=QUESTION, temperature=9)
    assert (hot.value.param, hot.value.code) == ("temperature", "invalid_request")
    with pytest.raises(openai.BadRequestError) as nested:
        client.chat.completions.create(model="synthetic", messages=[{"role": "wizard", "content": "hi"}])  # type: ignore[misc,list-item]
    assert nested.value.param == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model="synthetic", messages=QUESTION, extra_body={"best_of": 3})
    assert (unknown.value.param, unknown.value.code) == ("best_of", "unknown_parameter")
    assert unknown.value.body == {
        "message": "Unrecognized request argument supplied: best_of",
        "type": "invalid_request_error",
        "param": "best_of",
        "code": "unknown_parameter",
    }
    # The raw body is exactly OpenAI's error object.
    raw = api.client.post("/v1/chat/completions", json={"model": "synthetic", "messages": QUESTION, "n": "2"})
    assert raw.status_code == 400
    assert raw.json() == {
        "error": {
            "message": "n: Input should be a valid integer",
            "type": "invalid_request_error",
            "param": "n",
            "code": "invalid_request",
        }
    }
    # Outside /v1 the API keeps its 422, in the same shape.
    session = api.client.patch("/sessions/x", json={"title": 5})
    assert session.status_code == 422 and session.json()["error"]["param"] == "title"


def test_models_are_listed_and_retrieved(client: openai.OpenAI) -> None:
    listed = sorted(m.id for m in client.models.list())
    assert listed == ["minilm", "smollm2", "synthetic", "tool-caller"]  # chat and embeddings
    model = client.models.retrieve("smollm2")
    assert (model.id, model.object, model.owned_by) == ("smollm2", "model", "kubechat")
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert (missing.value.code, missing.value.param) == ("model_not_found", "model")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("ocr")  # the vision model is reached through chat, not /v1


def test_a_path_v1_does_not_serve_is_an_openai_404(api: InProcessApi) -> None:
    response = api.client.post("/v1/completions", json={"model": "synthetic", "prompt": "hi"})
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "no route /v1/completions",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
    }


def test_embeddings_in_both_encodings(client: openai.OpenAI, api: InProcessApi) -> None:
    floats = client.embeddings.create(model="minilm", input=["a", "b c"], encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.data[0].embedding == [1.0, 1.0, 1.0, 1.0]  # the scripted embedder's vector
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0
    # The client's default asks for base64 and decodes it: the same floats come back.
    decoded = client.embeddings.create(model="minilm", input="a")
    assert decoded.data[0].embedding == [1.0, 1.0, 1.0, 1.0]
    raw = api.client.post(
        "/v1/embeddings", json={"model": "minilm", "input": "a", "encoding_format": "base64"}
    )
    assert raw.json()["data"][0]["embedding"] == "AACAPwAAgD8AAIA/AACAPw=="  # four little-endian 1.0f
    assert client.embeddings.create(model="minilm", input="a", dimensions=4).data[0].embedding


EMBEDDING_REFUSALS: list[tuple[dict[str, Any], type[openai.APIStatusError], str | None, str]] = [
    ({"dimensions": 3}, openai.BadRequestError, "dimensions", "unsupported_value"),
    ({"input": [[1, 2, 3]]}, openai.BadRequestError, "input", "unsupported_value"),
    ({"input": [1, 2, 3]}, openai.BadRequestError, "input", "unsupported_value"),
    ({"input": ""}, openai.BadRequestError, "input", "invalid_request"),
    ({"input": []}, openai.BadRequestError, "input", "invalid_request"),
    ({"input": ["x"] * 2049}, openai.BadRequestError, "input", "invalid_request"),
    ({"encoding_format": "int8"}, openai.BadRequestError, "encoding_format", "invalid_request"),
    ({"model": "smollm2"}, openai.NotFoundError, "model", "model_not_found"),
]


@pytest.mark.parametrize(("fields", "error", "param", "code"), EMBEDDING_REFUSALS)
def test_embedding_requests_kubechat_cannot_honour_are_refused(
    client: openai.OpenAI, fields: dict[str, Any], error: type[openai.APIStatusError], param: str, code: str
) -> None:
    with pytest.raises(error) as refused:
        client.embeddings.create(**{"model": "minilm", "input": "a", **fields})
    assert (refused.value.param, refused.value.code) == (param, code)


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_response_formats_reach_the_engine_as_guides(api: InProcessApi, client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="smollm2", messages=QUESTION, response_format={"type": "json_object"}
    )
    person: Any = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    client.chat.completions.create(model="smollm2", messages=QUESTION, response_format=person)
    client.chat.completions.create(model="smollm2", messages=QUESTION, response_format={"type": "text"})
    guides = [r.params.guide for r in api.triton.requests]
    assert guides[0] is not None and (guides[0].type, json.loads(guides[0].text)) == (
        "json_schema",
        {"type": "object"},
    )
    assert guides[1] is not None and json.loads(guides[1].text) == PERSON
    assert guides[2] is None


@pytest.mark.parametrize("model", ["synthetic", "tool-caller"])
def test_a_model_that_cannot_enforce_a_response_format_refuses_it(
    api: InProcessApi, client: openai.OpenAI, model: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=model, messages=QUESTION, response_format={"type": "json_object"}
        )
    assert (refused.value.param, refused.value.code) == ("response_format", "unsupported_value")
    assert api.triton.requests == []


def test_a_schema_that_is_no_json_schema_is_refused(api: InProcessApi, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="smollm2", messages=QUESTION,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}},
        )  # fmt: skip
    assert refused.value.param == "response_format.json_schema.schema"
    nameless_format: Any = {"type": "json_schema", "json_schema": {"schema": PERSON}}
    with pytest.raises(openai.BadRequestError) as nameless:
        client.chat.completions.create(model="smollm2", messages=QUESTION, response_format=nameless_format)
    assert nameless.value.param == "response_format.json_schema.name"
    assert api.triton.requests == []


def test_logprobs_come_with_the_answer_and_with_each_chunk(api: InProcessApi, client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="smollm2", messages=QUESTION, logprobs=True, top_logprobs=2)
    assert api.triton.requests[-1].params.logprobs == 2
    choice = plain.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert [e.token for e in choice.logprobs.content] == ["Hello", " there", "."]
    assert all(e.logprob == -0.5 and len(e.top_logprobs) == 2 for e in choice.logprobs.content)

    stream = client.chat.completions.create(
        model="smollm2", messages=QUESTION, logprobs=True, top_logprobs=0, stream=True
    )
    scored = [(c.choices[0].delta.content, c.choices[0].logprobs) for c in stream if c.choices]
    assert [(text, [e.token for e in lp.content or []]) for text, lp in scored if lp] == [
        ("Hello", ["Hello"]), (" there", [" there"]), (".", ["."]),
    ]  # fmt: skip
    # Without logprobs the answer carries none.
    assert client.chat.completions.create(model="smollm2", messages=QUESTION).choices[0].logprobs is None


def test_logprobs_are_refused_where_the_model_cannot_give_them(
    api: InProcessApi, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="synthetic", messages=QUESTION, logprobs=True)
    assert (refused.value.param, refused.value.code) == ("logprobs", "unsupported_parameter")
    with pytest.raises(openai.BadRequestError) as alone:
        client.chat.completions.create(model="smollm2", messages=QUESTION, top_logprobs=2)
    assert alone.value.param == "top_logprobs"
    assert api.triton.requests == []
