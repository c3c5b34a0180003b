"""Token-window chunking of parsed document sections for embedding and retrieval.

Chunks are measured in the embedding model's own tokens, so a chunk of `size` tokens fits
the model's input. Each section is encoded once and windows are cut from its token offsets,
so chunk text is an exact slice of the section text (never re-decoded from tokens, which
would lowercase it, drop accents or turn characters into [UNK]). Chunks never span
sections, so the page and heading of a chunk are exact for citations.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from kubechat.knowledge.parsing import Section

# Long texts are encoded in pieces of about this many characters, cut at whitespace: one
# huge encode call is several times slower than a batch of pieces (which also runs in
# parallel), and tokens never cross whitespace in the tokenizers embedding models use.
_PIECE_CHARS = 8192
# A window may end early, at the best boundary within its last fifth.
_BOUNDARY_SEARCH_FRACTION = 5
_SENTENCE_STOPS = frozenset(".!?…。！？")  # noqa: RUF001 (fullwidth CJK stops on purpose)
_FULLWIDTH_STOPS = frozenset("。！？")  # noqa: RUF001 (these need no space after them)
_CLOSERS = frozenset("\"')]}»”’")  # noqa: RUF001 (closing quotes on purpose)


@dataclass(frozen=True)
class TextChunk:
    """A window of a section's text.

    `tokens` counts the tokens of the window as encoded within the whole section; encoding
    `text` alone can differ by a token or two where the window starts inside a word.
    """

    text: str
    page: int | None
    section: str
    tokens: int


def chunk_sections(
    sections: Sequence[Section], tokenizer: Tokenizer, size: int, overlap: int
) -> list[TextChunk]:
    """Windows of at most `size` tokens of each section, neighbours sharing `overlap` tokens.

    A window ends at a paragraph or sentence end (else a line or word end) when there is one
    in its last fifth. The tokenizer is copied when it truncates or pads (embedding tokenizers
    usually do); pass one without truncation and padding to skip that copy.
    """
    if size < 1:
        raise ValueError(f"chunk size must be at least 1 token, not {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap must be at least 0 and less than the size ({size}), not {overlap}")
    tokenizer = _without_truncation(tokenizer)
    chunks = []
    for section in sections:
        spans, word_starts = _token_spans(tokenizer, section.text)
        for start, end in _windows(section.text, spans, word_starts, size, overlap):
            chunks.append(
                TextChunk(
                    text=section.text[spans[start][0] : spans[end - 1][1]],
                    page=section.page,
                    section=section.heading,
                    tokens=end - start,
                )
            )
    return chunks


def _without_truncation(tokenizer: Tokenizer) -> Tokenizer:
    if tokenizer.truncation is None and tokenizer.padding is None:
        return tokenizer
    # A copy: the caller's tokenizer may be shared with other threads and needs its settings.
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_truncation()
    plain.no_padding()
    return plain


def _token_spans(tokenizer: Tokenizer, text: str) -> tuple[list[tuple[int, int]], list[bool]]:
    """Character spans of the tokens of `text`, and whether each token starts a word."""
    bounds = _piece_bounds(text)
    pieces = [text[start:end] for start, end in itertools.pairwise(bounds)]
    spans: list[tuple[int, int]] = []
    word_starts: list[bool] = []
    for base, encoding in zip(bounds, tokenizer.encode_batch(pieces, add_special_tokens=False), strict=False):
        previous_word: int | None = None
        for (start, end), word in zip(encoding.offsets, encoding.word_ids, strict=True):
            spans.append((base + start, base + end))
            word_starts.append(word is None or word != previous_word)
            previous_word = word
    return spans, word_starts


def _piece_bounds(text: str) -> list[int]:
    """Cut points (including 0 and len(text)) splitting `text` at whitespace into encode pieces."""
    bounds = [0]
    start = 0
    while len(text) - start > _PIECE_CHARS:
        limit = start + _PIECE_CHARS
        floor = start + _PIECE_CHARS // 2
        cut = -1
        for separator in ("\n\n", "\n", " ", "\t"):
            cut = text.rfind(separator, floor, limit)
            if cut != -1:
                break
        if cut == -1:
            cut = limit  # no whitespace at all (a blob, or CJK text): cut anywhere
        bounds.append(cut)
        start = cut
    bounds.append(len(text))
    return bounds


def _windows(
    text: str, spans: Sequence[tuple[int, int]], word_starts: Sequence[bool], size: int, overlap: int
) -> Iterator[tuple[int, int]]:
    """Token index ranges [start, end) of the windows over `spans`."""
    count = len(spans)
    start = 0
    while start < count:
        end = min(start + size, count)
        if end < count:
            # Ending after start + overlap keeps the next window moving forward.
            earliest = max(start + overlap + 1, end - size // _BOUNDARY_SEARCH_FRACTION)
            end = _best_end(text, spans, word_starts, earliest, end)
        yield start, end
        if end >= count:
            return
        start = end - overlap


def _best_end(
    text: str, spans: Sequence[tuple[int, int]], word_starts: Sequence[bool], earliest: int, latest: int
) -> int:
    """The window end in [earliest, latest] at the strongest boundary, the latest one on ties."""
    best, best_score = latest, -1
    for end in range(latest, earliest - 1, -1):
        score = _boundary_score(text, spans[end - 1][1], spans[end][0], word_starts[end])
        if score > best_score:
            best, best_score = end, score
    return best


def _boundary_score(text: str, previous_end: int, next_start: int, word_start: bool) -> int:
    """How good a cut between two tokens is: 4 paragraph, 3 sentence, 2 line, 1 word, 0 none."""
    gap = text[previous_end:next_start]
    if gap.count("\n") >= 2:
        return 4
    if previous_end > 0 and (gap or text[previous_end - 1] in _FULLWIDTH_STOPS):
        index = previous_end - 1
        while index > 0 and text[index] in _CLOSERS:
            index -= 1
        if text[index] in _SENTENCE_STOPS:
            return 3
    if "\n" in gap:
        return 2
    return 1 if word_start else 0
