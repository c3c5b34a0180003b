"""Hybrid retrieval: kNN and BM25 ranked lists fused with reciprocal-rank fusion, as citations.

A question is embedded once per embedding model; each knowledge base returns two ranked lists
(vector similarity and BM25), and the lists of every selected knowledge base are fused here.
Fusion happens here rather than in Elasticsearch because ES's built-in RRF retriever needs a
paid licence; ranks (not raw scores, which are on different scales) are what RRF combines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from kubechat.core.errors import InvalidVectorError, KnowledgeBaseUnavailableError, StorageUnavailableError
from kubechat.core.metrics import RETRIEVAL_DURATION
from kubechat.core.resources import KnowledgeBase
from kubechat.core.tracing import tracer
from kubechat.knowledge.inference import Embedder
from kubechat.stores import errors as store_errors
from kubechat.stores.chunks import ChunkRecord, ChunkStore, RankedChunk, Vector
from kubechat.stores.errors import EmbeddingMismatchError, StoreError

T = TypeVar("T")

RRF_K = 60  # the constant of Cormack et al. (2009), also Elasticsearch's default rank_constant
SNIPPET_CHARS = 240


class Citation(BaseModel):
    """One numbered source given to the model; the answer refers to it as [n]."""

    model_config = ConfigDict(frozen=True)

    n: int
    knowledge_base: str
    document_id: str
    document_name: str
    chunk_id: str
    page: int | None
    section: str
    score: float = Field(description="Reciprocal-rank-fusion score of kNN and BM25 ranks.")
    snippet: str
    text: str


class HybridSearch:
    def __init__(self, chunks: ChunkStore, embedder: Embedder) -> None:
        self.chunks = chunks
        self.embedder = embedder

    async def search(
        self,
        kbs: Sequence[KnowledgeBase],
        query: str,
        *,
        limit: int,
        candidates: int,
        document_ids: Sequence[str] | None = None,
    ) -> list[Citation]:
        """The `limit` best chunks of the knowledge bases, from `candidates` per ranked list.

        Each step is timed (kubechat_retrieval_duration_seconds{step}) and, when traced, a span.
        """
        started = time.perf_counter()
        vectors: dict[str, Vector] = {}
        for model in {kb.spec.embedding.model for kb in kbs}:
            vectors[model] = (await _step("embed", self.embedder.embed(model, [query])))[0]
        try:
            lists = await asyncio.gather(
                *(
                    search
                    for kb in kbs
                    for search in (
                        _step(
                            "knn",
                            self.chunks.knn(kb, vectors[kb.spec.embedding.model], candidates, document_ids),
                        ),
                        _step("bm25", self.chunks.text_search(kb, query, candidates, document_ids)),
                    )
                )
            )
        except EmbeddingMismatchError as exc:
            raise KnowledgeBaseUnavailableError(str(exc)) from exc
        except store_errors.InvalidVectorError as exc:
            raise InvalidVectorError(f"the embedding of the question cannot be searched: {exc}") from exc
        except StoreError as exc:
            raise StorageUnavailableError(f"search failed: {exc}") from exc
        tagged: list[tuple[str, Sequence[RankedChunk]]] = [
            (kb.name, ranked) for kb, ranked in zip([kb for kb in kbs for _ in (0, 1)], lists, strict=True)
        ]
        found = citations(reciprocal_rank_fusion(tagged), limit)
        RETRIEVAL_DURATION.labels("total").observe(time.perf_counter() - started)
        return found


async def _step(step: str, work: Awaitable[T]) -> T:
    """One retrieval step, timed and traced (`knowledge.<step>`), failures included."""
    started = time.perf_counter()
    with tracer.start_as_current_span(f"knowledge.{step}"):
        try:
            return await work
        finally:
            RETRIEVAL_DURATION.labels(step).observe(time.perf_counter() - started)


def reciprocal_rank_fusion(
    ranked_lists: Sequence[tuple[str, Sequence[RankedChunk]]], k: int = RRF_K
) -> list[tuple[str, ChunkRecord, float]]:
    """Fuse ranked lists (each tagged with its knowledge base) into one, best first.

    A chunk's fused score is the sum over lists of 1 / (k + rank), rank starting at 1; ties
    keep the order in which chunks were first seen, so results are deterministic.
    """
    scores: dict[tuple[str, str], float] = {}
    chunks: dict[tuple[str, str], ChunkRecord] = {}
    for knowledge_base, ranked in ranked_lists:
        for rank, hit in enumerate(ranked, start=1):
            key = (knowledge_base, hit.chunk.chunk_id)
            chunks.setdefault(key, hit.chunk)
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    order = sorted(scores, key=lambda key: -scores[key])  # sorted() is stable
    return [(key[0], chunks[key], scores[key]) for key in order]


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit] + "…"


def citations(fused: Sequence[tuple[str, ChunkRecord, float]], limit: int) -> list[Citation]:
    return [
        Citation(
            n=n, knowledge_base=kb, document_id=chunk.document_id, document_name=chunk.document_name,
            chunk_id=chunk.chunk_id, page=chunk.page, section=chunk.section, score=round(score, 6),
            snippet=snippet(chunk.text), text=chunk.text,
        )
        for n, (kb, chunk, score) in enumerate(fused[:limit], start=1)
    ]  # fmt: skip


def sources_prompt(sources: Sequence[Citation], question: str) -> str:
    """The user turn the model sees: numbered sources, then the question, asking for [n] cites."""
    if not sources:
        return question
    blocks = []
    for source in sources:
        where = source.document_name
        if source.page is not None:
            where += f", page {source.page}"
        if source.section:
            where += f", {source.section}"
        blocks.append(f"[{source.n}] ({where})\n{source.text.strip()}")
    return (
        "Answer the question using the numbered sources below. Cite the sources you use as [n]. "
        "If they do not contain the answer, say so.\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"
    )
