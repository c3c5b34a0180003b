"""Hybrid retrieval: kNN and BM25 ranked lists fused by their normalised scores, as citations.

A question is embedded once per embedding model; each knowledge base returns two ranked lists
(vector similarity and BM25), and the lists of every selected knowledge base are fused here,
for the embedded store and Elasticsearch alike (ES's own RRF retriever needs a paid licence,
and its linear retriever came only in 8.18). Fusion is a convex combination of each list's
min-max normalised scores (`score_fusion`): unlike reciprocal-rank fusion it keeps the margin
by which one retriever puts a passage first, so that passage is not buried under chunks both
lists find mediocre (docs/design-decisions.md has the evaluation that chose it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from kubechat.core.errors import (
    InvalidRequestError,
    InvalidVectorError,
    KnowledgeBaseUnavailableError,
    ModelUnavailableError,
    StorageUnavailableError,
)
from kubechat.core.metrics import RETRIEVAL_DURATION
from kubechat.core.resources import KnowledgeBase
from kubechat.core.tracing import tracer
from kubechat.knowledge.inference import Embedder, Reranker
from kubechat.stores import errors as store_errors
from kubechat.stores.chunks import ChunkRecord, ChunkStore, RankedChunk, Vector
from kubechat.stores.errors import EmbeddingMismatchError, StoreError

T = TypeVar("T")
Retriever = Literal["knn", "bm25"]
KNN_WEIGHT = 0.5
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
    score: float = Field(
        description="Fused relevance, 0 to 1: the mean of the chunk's min-max normalised kNN and BM25 "
        "scores among the candidates (or the reranker's score, when the knowledge base names one)."
    )
    snippet: str
    text: str


class HybridSearch:
    """kNN and BM25 in each knowledge base, each knowledge base above its relevance floor, fused.

    `min_score` is the floor of knowledge bases whose spec.retrieval.minScore is unset.
    """

    def __init__(
        self,
        chunks: ChunkStore,
        embedder: Embedder,
        *,
        min_score: float = 0.0,
        reranker: Reranker | None = None,
    ) -> None:
        self.chunks = chunks
        self.embedder = embedder
        self.min_score = min_score
        self.reranker = reranker

    def floor(self, kb: KnowledgeBase) -> float:
        own = kb.spec.retrieval.min_score
        return self.min_score if own is None else own

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
        ranked_lists = []
        for index, kb in enumerate(kbs):
            knn, bm25 = lists[2 * index], lists[2 * index + 1]
            if not above_floor(knn, self.floor(kb)):
                continue  # nothing in this knowledge base is about the question, whatever BM25 says
            ranked_lists += [RankedList(kb.name, "knn", knn), RankedList(kb.name, "bm25", bm25)]
        fused = score_fusion(ranked_lists)
        searched = {r.knowledge_base for r in ranked_lists}
        rerankers = {kb.spec.retrieval.reranker for kb in kbs if kb.name in searched} - {""}
        if rerankers and fused:
            fused = await _step("rerank", self._rerank(rerankers, query, fused[:candidates]))
        found = citations(fused, limit)
        RETRIEVAL_DURATION.labels("total").observe(time.perf_counter() - started)
        return found

    async def _rerank(self, rerankers: set[str], query: str, pool: Fused) -> Fused:
        """The pool reordered by the reranker's relevance, which becomes each chunk's score."""
        if len(rerankers) > 1:
            raise InvalidRequestError(
                f"the knowledge bases name different rerankers ({', '.join(sorted(rerankers))}); "
                "search them separately"
            )
        if self.reranker is None:
            raise ModelUnavailableError("no reranker is reachable from this search")
        (model,) = rerankers
        scores = await self.reranker.rerank(model, query, [chunk.text for _, chunk, _ in pool])
        ranked = sorted(zip(pool, scores.tolist(), strict=True), key=lambda pair: -pair[1])
        return [(kb, chunk, float(score)) for (kb, chunk, _), score in ranked]


async def _step(step: str, work: Awaitable[T]) -> T:
    """One retrieval step, timed and traced (`knowledge.<step>`), failures included."""
    started = time.perf_counter()
    with tracer.start_as_current_span(f"knowledge.{step}"):
        try:
            return await work
        finally:
            RETRIEVAL_DURATION.labels(step).observe(time.perf_counter() - started)


def above_floor(knn: Sequence[RankedChunk], floor: float) -> bool:
    """Whether a knowledge base's kNN list says it holds something on the question: its best
    similarity reaches `floor` (0: always, even with no hits, so BM25 alone may still answer).

    The floor looks at kNN only: BM25 scores depend on the corpus and the query's length and
    have no scale a threshold could mean the same on; a question that shares only common words
    with a document gets BM25 hits all the same. On the retrieval evaluation the best kNN score
    of answerable questions was 0.70 to 0.91, of unanswerable ones 0.55 to 0.75
    (docs/design-decisions.md).
    """
    if floor <= 0.0:
        return True
    return bool(knn) and knn[0].score >= floor


@dataclass(frozen=True)
class RankedList:
    """One retriever's hits in one knowledge base, best first, with the retriever's scores."""

    knowledge_base: str
    retriever: Retriever
    hits: Sequence[RankedChunk]


Fused = list[tuple[str, ChunkRecord, float]]  # (knowledge base, chunk, fused score), best first
Fusion = Callable[[Sequence[RankedList]], Fused]


def _ordered(scores: dict[tuple[str, str], float], chunks: dict[tuple[str, str], ChunkRecord]) -> Fused:
    order = sorted(scores, key=lambda key: -scores[key])  # sorted() is stable: ties keep first-seen order
    return [(key[0], chunks[key], scores[key]) for key in order]


def reciprocal_rank_fusion(ranked_lists: Sequence[RankedList], k: int = RRF_K) -> Fused:
    """Fuse ranked lists (each tagged with its knowledge base) into one, best first.

    A chunk's fused score is the sum over lists of 1 / (k + rank), rank starting at 1; ties
    keep the order in which chunks were first seen, so results are deterministic.
    """
    scores: dict[tuple[str, str], float] = {}
    chunks: dict[tuple[str, str], ChunkRecord] = {}
    for ranked in ranked_lists:
        for rank, hit in enumerate(ranked.hits, start=1):
            key = (ranked.knowledge_base, hit.chunk.chunk_id)
            chunks.setdefault(key, hit.chunk)
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return _ordered(scores, chunks)


def score_fusion(ranked_lists: Sequence[RankedList], knn_weight: float = KNN_WEIGHT) -> Fused:
    """Fuse by a convex combination of each list's min-max normalised scores, best first.

    Within a list the best hit scores 1 and the worst 0 (a list of one hit, or of equal scores,
    scores them all 1); a chunk absent from a list gets 0 from it. A chunk's fused score is
    `knn_weight` times its kNN part plus `1 - knn_weight` times its BM25 part, so a passage that
    one retriever ranks far above the rest keeps most of that lead, where RRF would give it no
    more than the rank difference (1/61 against 1/62). Knowledge bases are fused alike: each of
    their lists is normalised on its own.
    """
    scores: dict[tuple[str, str], float] = {}
    chunks: dict[tuple[str, str], ChunkRecord] = {}
    for ranked in ranked_lists:
        if not ranked.hits:
            continue
        weight = knn_weight if ranked.retriever == "knn" else 1.0 - knn_weight
        values = [hit.score for hit in ranked.hits]
        low, span = min(values), max(values) - min(values)
        for hit in ranked.hits:
            key = (ranked.knowledge_base, hit.chunk.chunk_id)
            chunks.setdefault(key, hit.chunk)
            part = (hit.score - low) / span if span > 0 else 1.0
            scores[key] = scores.get(key, 0.0) + weight * part
    return _ordered(scores, chunks)


def top_slots_fusion(ranked_lists: Sequence[RankedList], k: int = RRF_K) -> Fused:
    """RRF, except that each list's first hit is moved ahead of every chunk no list ranks first."""
    fused = reciprocal_rank_fusion(ranked_lists, k)
    firsts = {(r.knowledge_base, r.hits[0].chunk.chunk_id) for r in ranked_lists if r.hits}
    return [f for f in fused if (f[0], f[1].chunk_id) in firsts] + [
        f for f in fused if (f[0], f[1].chunk_id) not in firsts
    ]


# Every fusion this module implements, by name: benchmarks/retrieval_eval.py scores each.
FUSIONS: dict[str, Fusion] = {
    "rrf": reciprocal_rank_fusion,
    "rrf+top-slots": top_slots_fusion,
    "scores knn 0.3": lambda lists: score_fusion(lists, 0.3),
    "scores knn 0.5": lambda lists: score_fusion(lists, 0.5),
    "scores knn 0.7": lambda lists: score_fusion(lists, 0.7),
}


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit] + "…"


def citations(fused: Fused, limit: int) -> list[Citation]:
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
