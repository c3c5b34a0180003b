"""Pure parts of remote ChatModels: the messages an endpoint is sent, the RemoteModel of a spec,
the operator's status of a probed endpoint, and the word-level tokenizer remote models count with."""

from __future__ import annotations

import base64

import pytest

from kubechat.catalog import ChatTurn, _entry, word_tokenizer
from kubechat.core.resources import ChatModel, parse_resource
from kubechat.operator.status import remote_model_conditions
from kubechat.remote.openai import chat_messages
from kubechat.remote.router import env_api_key, remote_model

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 8


def remote(**endpoint: object) -> ChatModel:
    return parse_resource(
        ChatModel,
        {
            "apiVersion": "kubechat.io/v1alpha1",
            "kind": "ChatModel",
            "metadata": {"name": "qwen"},
            "spec": {
                "engine": {"backend": "openai", "maxInputTokens": 16},
                "endpoint": {"url": "http://vllm:8000/v1/", **endpoint},
                "capabilities": ["chat", "vision"],
            },
        },
    )


def test_turns_become_messages_and_tool_formats_roles_become_user() -> None:
    turns = [("system", "be brief"), ("user", "hi"), ("assistant", "hello"), ("ipython", '{"output": 5}')]
    assert chat_messages(turns) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": '{"output": 5}'},
    ]


def test_an_image_goes_with_the_last_user_turn_as_a_data_url() -> None:
    messages = chat_messages([("user", "first"), ("assistant", "ok"), ("user", "what is this?")], PNG)
    assert messages[0] == {"role": "user", "content": "first"}
    last = messages[-1]["content"]
    assert last[0] == {"type": "text", "text": "what is this?"}
    assert last[1]["type"] == "image_url"
    prefix = "data:image/png;base64,"
    assert last[1]["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(last[1]["image_url"]["url"][len(prefix) :]) == PNG


def test_the_remote_model_of_a_spec() -> None:
    found = remote_model(remote(timeoutSeconds=5, maxRetries=0), "k")
    assert found is not None
    # The base URL without its trailing slash; no upstream model named: the resource's name.
    assert (found.url, found.model, found.api_key, found.timeout_s, found.max_retries) == (
        "http://vllm:8000/v1", "qwen", "k", 5.0, 0,
    )  # fmt: skip


def test_the_embedded_key_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_KEY", "s3cret")
    assert env_api_key(remote(apiKeyEnv="QWEN_KEY")) == "s3cret"
    monkeypatch.delenv("QWEN_KEY")
    assert env_api_key(remote(apiKeyEnv="QWEN_KEY")) is None
    assert env_api_key(remote()) is None


def test_a_probed_endpoint_sets_phase_and_conditions() -> None:
    phase, conditions = remote_model_conditions(True, "EndpointReady", "serves qwen", 3)
    assert phase == "Ready"
    assert {c.type: (c.status, c.reason, c.observed_generation) for c in conditions} == {
        "Ready": ("True", "EndpointReady", 3),
        "Progressing": ("False", "EndpointReady", 3),
        "Degraded": ("False", "EndpointReady", 3),
    }
    phase, conditions = remote_model_conditions(False, "EndpointUnauthorized", "HTTP 401", 3)
    assert phase == "Degraded"
    ready = next(c for c in conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.message) == ("False", "EndpointUnauthorized", "HTTP 401")


def test_words_and_punctuation_are_tokens_with_offsets() -> None:
    encoding = word_tokenizer().encode("Restart it, then wait.", add_special_tokens=False)
    assert [(s, e) for s, e in encoding.offsets] == [(0, 7), (8, 10), (10, 11), (12, 16), (17, 21), (21, 22)]


def test_a_remote_model_fits_its_context_counting_words() -> None:
    entry = _entry(remote(), None)
    assert entry.tokenizer is not None  # remote embedders chunk with it
    turns = [ChatTurn("user", "one two three four five six"), ChatTurn("assistant", "seven eight nine ten"),
             ChatTurn("user", "eleven twelve")]  # fmt: skip
    prompt = entry.build_prompt(turns)
    # 16 tokens cannot hold the whole ChatML conversation: the oldest exchange goes.
    assert prompt.turns_dropped == 2
    assert prompt.messages() == [("user", "eleven twelve")]
