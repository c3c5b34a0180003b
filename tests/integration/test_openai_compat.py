"""The OpenAI-compatible endpoints, driven by the official `openai` client."""

from __future__ import annotations

from typing import Any

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
    # Chat and embedding models (OpenAI lists both); the OCR describer is neither.
    assert sorted(m.id for m in client.models.list()) == ["minilm", "smollm2", "synthetic", "tool-caller"]


def test_embeddings_in_both_encodings(client: openai.OpenAI) -> None:
    texts = ["The frobnicator restarts in nine seconds.", "Paris is the capital of France."]
    # The official client asks for base64 unless told otherwise, and decodes it.
    packed = client.embeddings.create(model="minilm", input=texts)
    plain = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    assert [d.index for d in plain.data] == [0, 1] and plain.model == "minilm"
    assert all(len(d.embedding) == 384 for d in plain.data)
    for a, b in zip(packed.data, plain.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    # Different texts, different vectors; all-MiniLM's are unit length.
    assert plain.data[0].embedding != plain.data[1].embedding
    assert sum(x * x for x in plain.data[0].embedding) == pytest.approx(1.0, abs=1e-3)
    assert plain.usage.prompt_tokens > 0
    with pytest.raises(openai.NotFoundError) as chat_model:
        client.embeddings.create(model="smollm2", input="x")
    assert chat_model.value.code == "model_not_found"


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
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=9)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="smollm2",
            messages=[AUDIO_MESSAGE],
        )
    stranger = openai.OpenAI(base_url=f"{api.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()
