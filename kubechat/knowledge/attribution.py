"""Which sources support each sentence of an answer: citations that hold when the model forgets them.

A small model often writes no `[n]` at all (issue 20). After the answer, each of its sentences
is embedded with the embedder of the sources' knowledge base, as is each sentence of each source
the model was given; a source supports an answer sentence when its closest sentence is similar
enough (MIN_SIMILARITY) and within MARGIN of the best source's. Sentence against sentence, not
against the whole chunk: a chunk's one vector blurs the one sentence an answer paraphrases.
The model's own `[n]` markers are kept beside the attribution (`cited`), never replaced.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kubechat.knowledge.inference import Embedder
from kubechat.knowledge.retrieval import Citation

MIN_SIMILARITY = 0.45  # cosine of MiniLM sentence embeddings; unrelated sentences stay below ~0.3
MARGIN = 0.05  # sources this close to the best one support the sentence too
MIN_WORDS = 3  # shorter "sentences" (a list marker, "Yes.") are not attributed

_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s*\[\d+\])*\s+|\s*\n\s*")  # a line break ends one too
_MARKER = re.compile(r"\[(\d+)\]")


class SentenceSources(BaseModel):
    """One sentence of an answer and the sources that support it."""

    model_config = ConfigDict(frozen=True)

    start: int = Field(description="Offset of the sentence's first character in the answer.")
    end: int = Field(description="Offset just past its last character.")
    sources: list[int] = Field(description="`n` of the sources that support it, best first (by similarity).")
    cited: list[int] = Field(description="`n` the model itself wrote in it as [n].")
    similarity: float = Field(
        description="Cosine similarity of the sentence to its best source's closest sentence."
    )


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """The sentences of `text` as (start, end) offsets, stripped of surrounding whitespace; a
    sentence keeps the [n] markers that follow its full stop."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.start() + len(match.group(0).rstrip())))
        start = match.end()
    spans.append((start, len(text)))
    result = []
    for begin, end in spans:
        piece = text[begin:end]
        stripped = piece.strip()
        if stripped:
            offset = begin + piece.index(stripped)
            result.append((offset, offset + len(stripped)))
    return result


async def attribute(
    embedder: Embedder, model: str, answer: str, sources: Sequence[Citation]
) -> list[SentenceSources]:
    """Each sentence of `answer` with the `sources` (all embedded by `model`) that support it."""
    spans = sentence_spans(answer)
    if not spans or not sources:
        return []
    said = [_MARKER.sub("", answer[a:b]).strip() for a, b in spans]
    pieces: list[tuple[int, str]] = []  # (source n, one of its sentences)
    for source in sources:
        for a, b in sentence_spans(source.text):
            pieces.append((source.n, source.text[a:b]))
    if not pieces:
        return []
    vectors = await embedder.embed(model, [*said, *(text for _, text in pieces)])
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similarity = vectors[: len(said)] @ vectors[len(said) :].T  # answer sentences x source sentences
    owners = np.array([n for n, _ in pieces])
    numbers = [s.n for s in sources]
    attributed = []
    for row, (a, b) in enumerate(spans):
        cited = [int(n) for n in _MARKER.findall(answer[a:b]) if int(n) in numbers]
        best = {n: float(similarity[row][owners == n].max()) for n in numbers if (owners == n).any()}
        top = max(best.values())
        supporting: list[int] = []
        if len(said[row].split()) >= MIN_WORDS and top >= MIN_SIMILARITY:
            supporting = sorted((n for n, s in best.items() if s >= top - MARGIN), key=lambda n: -best[n])
        attributed.append(
            SentenceSources(start=a, end=b, sources=supporting, cited=cited, similarity=round(top, 4))
        )
    return attributed
