"""The OpenAI-compatible endpoints, driven by the official `openai` client."""

from __future__ import annotations

from typing import Any

import numpy as np
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import ALICE_KEY, ApiProcess

pytestmark = pytest.mark.triton

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name three colours."}]


# Content kubechat cannot take yet, typed loosely on purpose.
AUDIO_MESSAGE: Any = {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}


@pytest.fixture
def client(api: ApiProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=ALICE_KEY, max_retries=0)


def test_models(client: openai.OpenAI) -> None:
    # Chat and embedding models; the vision model is reached through chat only.
    assert sorted(m.id for m in client.models.list()) == ["minilm", "smollm2", "synthetic", "tool-caller"]
    assert client.models.retrieve("minilm").id == "minilm"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("ocr")
    assert (missing.value.code, missing.value.param) == ("model_not_found", "model")


def test_streaming_and_plain_completions_agree(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        max_tokens=30,
        temperature=0,
    )
    text = plain.choices[0].message.content
    assert text and plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage is not None and plain.usage.prompt_tokens > 0

    stream = client.chat.completions.create(
        model="smollm2", messages=QUESTION, max_tokens=30, temperature=0,
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    # Greedy decoding: token-by-token streaming must reproduce the same text exactly.
    assert "".join(pieces) == text
    assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens
    assert finish == plain.choices[0].finish_reason


def test_stop_sequences_and_system_messages(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="synthetic",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "go"}],
        max_tokens=50,
        stop=["token3"],
    )
    assert reply.choices[0].message.content == "token0 token1 token2 "


def test_errors_are_openai_shaped(api: ApiProcess, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=QUESTION)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as invalid:
        client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=9)
    assert (invalid.value.param, invalid.value.code) == ("temperature", "invalid_request")
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.chat.completions.create(model="smollm2", messages=QUESTION, n=2)
    assert (unsupported.value.param, unsupported.value.code) == ("n", "unsupported_value")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="smollm2",
            messages=[AUDIO_MESSAGE],
        )
    stranger = openai.OpenAI(base_url=f"{api.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()


def test_embeddings_of_the_real_embedder(client: openai.OpenAI) -> None:
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'finance'}" for i in range(150)]
    # More inputs than the embedder's maxBatchSize (64): sent in batches, answered in order.
    batch = client.embeddings.create(model="minilm", input=texts)
    assert [d.index for d in batch.data] == list(range(150))
    assert {len(d.embedding) for d in batch.data} == {384}
    single = client.embeddings.create(model="minilm", input=texts[7], encoding_format="float")
    assert np.allclose(single.data[0].embedding, batch.data[7].embedding, atol=1e-5)
    assert batch.usage.prompt_tokens == batch.usage.total_tokens > 150 * 5
    # Unit vectors whose similarity means something: cats are nearer cats than finance.
    cat, kitten, bank = (
        np.array(d.embedding) for d in client.embeddings.create(
            model="minilm", input=["a cat sleeps", "a kitten naps", "the bank raised rates"]
        ).data
    )  # fmt: skip
    assert np.isclose(np.linalg.norm(cat), 1.0, atol=1e-4)
    assert cat @ kitten > cat @ bank + 0.2
    assert client.embeddings.create(model="minilm", input="x", dimensions=384).data
    with pytest.raises(openai.BadRequestError) as shortened:
        client.embeddings.create(model="minilm", input="x", dimensions=128)
    assert shortened.value.param == "dimensions"
    with pytest.raises(openai.BadRequestError) as long:
        client.embeddings.create(model="minilm", input="word " * 400)  # past its 256-token window
    assert long.value.param == "input" and "256" in long.value.message


def test_logprobs_of_the_real_model_streamed_and_not(client: openai.OpenAI) -> None:
    request: Any = {"model": "smollm2", "messages": QUESTION, "max_tokens": 12, "temperature": 0}
    plain = client.chat.completions.create(logprobs=True, top_logprobs=3, **request)
    text = plain.choices[0].message.content
    scored = plain.choices[0].logprobs
    assert text and scored is not None and scored.content
    assert "".join(e.token for e in scored.content) == text
    for entry in scored.content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        ranked = [t.logprob for t in entry.top_logprobs]
        assert ranked == sorted(ranked, reverse=True)
        # Greedy decoding takes the likeliest token: the first alternative is the token itself.
        assert (entry.top_logprobs[0].token, entry.top_logprobs[0].logprob) == (entry.token, entry.logprob)
    streamed = [
        e
        for chunk in client.chat.completions.create(stream=True, logprobs=True, top_logprobs=3, **request)
        for choice in chunk.choices
        if choice.logprobs and choice.logprobs.content
        for e in choice.logprobs.content
    ]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [
        (e.token, round(e.logprob, 4)) for e in scored.content
    ]
