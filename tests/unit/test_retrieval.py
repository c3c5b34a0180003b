"""Fusion, the relevance floor, citations and the sources prompt."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from kubechat.core.metrics import REGISTRY
from kubechat.core.resources import KnowledgeBase, RetrievalSpec
from kubechat.knowledge.inference import Embedder
from kubechat.knowledge.retrieval import (
    HybridSearch,
    RankedList,
    Retriever,
    above_floor,
    citations,
    reciprocal_rank_fusion,
    score_fusion,
    snippet,
    sources_prompt,
)
from kubechat.stores.chunks import ChunkRecord, ChunkStore, RankedChunk
from kubechat.stores.sqlite.chunks import SQLiteChunkStore
from tests.conformance.test_chunk_store import filled, knowledge_base
from tests.tracing import spans

__all__ = ["spans"]  # the fixture


def ranked(
    *ids: str, scores: Sequence[float] = (), kb: str = "kb", retriever: Retriever = "knn"
) -> RankedList:
    return RankedList(kb, retriever, [
        RankedChunk(ChunkRecord(document_id=i.split(":")[0], document_name=f"{i[0]}.pdf", ordinal=int(i[-1]),
                                text=f"text of {i}", page=int(i[-1]) + 1), scores[n] if scores else 1.0)
        for n, i in enumerate(ids)
    ])  # fmt: skip


def test_fusion_rewards_agreement_between_lists() -> None:
    fused = reciprocal_rank_fusion(
        [ranked("a:0", "b:0", "c:0"), ranked("c:0", "d:0", "b:0", retriever="bm25")]
    )
    order = [chunk.chunk_id for _, chunk, _ in fused]
    # b and c appear in both lists and beat a, which only one list ranked first.
    assert order[:2] == ["c:0", "b:0"] and set(order) == {"a:0", "b:0", "c:0", "d:0"}
    scores = {chunk.chunk_id: score for _, chunk, score in fused}
    assert abs(scores["c:0"] - (1 / 63 + 1 / 61)) < 1e-12
    assert abs(scores["a:0"] - 1 / 61) < 1e-12


def test_fusion_keeps_knowledge_bases_apart_and_is_deterministic() -> None:
    lists = [ranked("a:0", kb="one"), ranked("a:0", kb="two")]
    for fuse in (reciprocal_rank_fusion, score_fusion):
        fused = fuse(lists)
        assert [kb for kb, _, _ in fused] == ["one", "two"]  # same chunk id, two knowledge bases
        assert fuse(lists) == fused


def test_score_fusion_keeps_a_passage_one_list_puts_far_first() -> None:
    # BM25 finds p far above everything else; kNN ranks it fifth. m, n and o are mediocre in
    # both lists. RRF ranks m first (2/62 > 1/61 + 1/65); score fusion keeps p's lead.
    knn = ranked("x:0", "m:0", "n:0", "o:0", "p:0", "z:0", scores=[0.80, 0.78, 0.77, 0.76, 0.74, 0.70])
    bm25 = ranked("p:0", "m:0", "n:0", "o:0", "y:0", scores=[25.0, 4.0, 3.9, 3.8, 2.0], retriever="bm25")
    assert reciprocal_rank_fusion([knn, bm25])[0][1].chunk_id == "m:0"
    fused = score_fusion([knn, bm25])
    assert [chunk.chunk_id for _, chunk, _ in fused][:3] == ["p:0", "x:0", "m:0"]
    scores = {chunk.chunk_id: score for _, chunk, score in fused}
    assert scores["p:0"] == pytest.approx(0.5 * 0.4 + 0.5 * 1.0)
    assert scores["m:0"] == pytest.approx(0.5 * 0.8 + 0.5 * 2.0 / 23.0)
    assert min(scores.values()) >= 0.0 and max(scores.values()) <= 1.0


def test_score_fusion_weighs_the_retrievers() -> None:
    knn = ranked("a:0", "b:0", scores=[0.9, 0.5])
    bm25 = ranked("b:0", "a:0", scores=[10.0, 1.0], retriever="bm25")
    assert score_fusion([knn, bm25], knn_weight=0.8)[0][1].chunk_id == "a:0"
    assert score_fusion([knn, bm25], knn_weight=0.2)[0][1].chunk_id == "b:0"


def test_score_fusion_of_equal_scores_or_one_hit_gives_full_credit() -> None:
    fused = score_fusion(
        [ranked("a:0", "b:0", scores=[0.6, 0.6]), ranked("c:0", scores=[3.0], retriever="bm25")]
    )
    assert {chunk.chunk_id: score for _, chunk, score in fused} == {"a:0": 0.5, "b:0": 0.5, "c:0": 0.5}
    assert score_fusion([ranked(), ranked(retriever="bm25")]) == []


def test_a_knowledge_base_is_above_its_floor_by_its_best_knn_score() -> None:
    hits = ranked("a:0", "b:0", scores=[0.70, 0.60]).hits
    assert above_floor(hits, 0.70) and above_floor(hits, 0.5)
    assert not above_floor(hits, 0.71)
    assert not above_floor([], 0.5)  # nothing to compare: nothing found
    assert above_floor([], 0.0)  # the floor is off: BM25 alone may still answer


def test_a_knowledge_base_floor_overrides_the_default() -> None:
    search = HybridSearch(cast(ChunkStore, None), cast(Embedder, None), min_score=0.68)
    kb = KnowledgeBase.model_validate(
        {
            "apiVersion": "kubechat.io/v1alpha1",
            "kind": "KnowledgeBase",
            "metadata": {"name": "kb"},
            "spec": {"embedding": {"model": "m", "dimensions": 4}, "access": {"owners": ["*"]}},
        }
    )
    assert search.floor(kb) == 0.68
    own = kb.model_copy(
        update={"spec": kb.spec.model_copy(update={"retrieval": RetrievalSpec(min_score=0.0)})}
    )
    assert search.floor(own) == 0.0
    assert RetrievalSpec.model_validate({"minScore": 0.5, "reranker": "bge"}).min_score == 0.5
    with pytest.raises(ValidationError):
        RetrievalSpec.model_validate({"minScore": 1.5})


def test_citations_are_numbered_from_one_and_limited() -> None:
    fused = reciprocal_rank_fusion([ranked("a:0", "b:1", "c:2")])
    cited = citations(fused, limit=2)
    assert [(c.n, c.chunk_id, c.page) for c in cited] == [(1, "a:0", 1), (2, "b:1", 2)]
    assert cited[0].document_name == "a.pdf" and cited[0].text == "text of a:0"


def test_snippet_cuts_at_a_word() -> None:
    text = "word " * 100
    cut = snippet(text, limit=42)
    assert cut.endswith("…") and len(cut) <= 43 and not cut[:-1].endswith(" ")
    assert snippet("  short\n text ") == "short text"


def test_sources_prompt_numbers_sources_and_keeps_the_question_last() -> None:
    cited = citations(reciprocal_rank_fusion([ranked("a:0", "b:1")]), limit=5)
    prompt = sources_prompt(cited, "What now?")
    assert prompt.index("[1] (a.pdf, page 1)") < prompt.index("[2] (b.pdf, page 2)")
    assert prompt.endswith("Question: What now?") and "[n]" in prompt
    assert sources_prompt([], "What now?") == "What now?"


def _step_counts() -> dict[str, float]:
    name = "kubechat_retrieval_duration_seconds_count"
    return {s: REGISTRY.get_sample_value(name, {"step": s}) or 0.0 for s in ("embed", "knn", "bm25", "total")}


class _Embedder:
    async def embed(self, model: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return np.array([[1, 0, 0, 0]] * len(texts), dtype=np.float32)


async def test_each_retrieval_step_is_timed_and_traced(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    """embed once, kNN and BM25 per knowledge base (concurrently), fusion in the total."""
    store = await SQLiteChunkStore.open(tmp_path / "chunks.sqlite3")
    try:
        kbs = [knowledge_base("handbook"), knowledge_base("runbooks")]
        for kb in kbs:
            await filled(store, kb)
        steps = ("embed", "knn", "bm25", "total")
        counts = {
            s: REGISTRY.get_sample_value("kubechat_retrieval_duration_seconds_count", {"step": s}) or 0
            for s in steps
        }
        found = await HybridSearch(store, _Embedder()).search(kbs, "pods on nodes", limit=3, candidates=10)
    finally:
        await store.close()
    assert found and found[0].chunk_id in {"d1:0", "d2:1"}  # the two chunks on pods and nodes
    after = {
        s: REGISTRY.get_sample_value("kubechat_retrieval_duration_seconds_count", {"step": s}) for s in steps
    }
    assert after == {
        "embed": counts["embed"] + 1,
        "knn": counts["knn"] + 2,
        "bm25": counts["bm25"] + 2,
        "total": counts["total"] + 1,
    }
    assert sorted(s.name for s in spans.get_finished_spans()) == [
        "knowledge.bm25", "knowledge.bm25", "knowledge.embed", "knowledge.knn", "knowledge.knn",
    ]  # fmt: skip
