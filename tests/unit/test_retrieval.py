"""Reciprocal-rank fusion, citations and the sources prompt."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kubechat.core.metrics import REGISTRY
from kubechat.knowledge.retrieval import (
    HybridSearch,
    citations,
    reciprocal_rank_fusion,
    snippet,
    sources_prompt,
)
from kubechat.stores.chunks import ChunkRecord, RankedChunk
from kubechat.stores.sqlite.chunks import SQLiteChunkStore
from tests.conformance.test_chunk_store import filled, knowledge_base
from tests.tracing import spans

__all__ = ["spans"]  # the fixture


def ranked(*ids: str) -> list[RankedChunk]:
    return [
        RankedChunk(ChunkRecord(document_id=i.split(":")[0], document_name=f"{i[0]}.pdf", ordinal=int(i[-1]),
                                text=f"text of {i}", page=int(i[-1]) + 1), 1.0)
        for i in ids
    ]  # fmt: skip


def test_fusion_rewards_agreement_between_lists() -> None:
    fused = reciprocal_rank_fusion([("kb", ranked("a:0", "b:0", "c:0")), ("kb", ranked("c:0", "d:0", "b:0"))])
    order = [chunk.chunk_id for _, chunk, _ in fused]
    # b and c appear in both lists and beat a, which only one list ranked first.
    assert order[:2] == ["c:0", "b:0"] and set(order) == {"a:0", "b:0", "c:0", "d:0"}
    scores = {chunk.chunk_id: score for _, chunk, score in fused}
    assert abs(scores["c:0"] - (1 / 63 + 1 / 61)) < 1e-12
    assert abs(scores["a:0"] - 1 / 61) < 1e-12


def test_fusion_keeps_knowledge_bases_apart_and_is_deterministic() -> None:
    lists = [("one", ranked("a:0")), ("two", ranked("a:0"))]
    fused = reciprocal_rank_fusion(lists)
    assert [kb for kb, _, _ in fused] == ["one", "two"]  # same chunk id, two knowledge bases
    assert reciprocal_rank_fusion(lists) == fused


def test_citations_are_numbered_from_one_and_limited() -> None:
    fused = reciprocal_rank_fusion([("kb", ranked("a:0", "b:1", "c:2"))])
    cited = citations(fused, limit=2)
    assert [(c.n, c.chunk_id, c.page) for c in cited] == [(1, "a:0", 1), (2, "b:1", 2)]
    assert cited[0].document_name == "a.pdf" and cited[0].text == "text of a:0"


def test_snippet_cuts_at_a_word() -> None:
    text = "word " * 100
    cut = snippet(text, limit=42)
    assert cut.endswith("…") and len(cut) <= 43 and not cut[:-1].endswith(" ")
    assert snippet("  short\n text ") == "short text"


def test_sources_prompt_numbers_sources_and_keeps_the_question_last() -> None:
    cited = citations(reciprocal_rank_fusion([("kb", ranked("a:0", "b:1"))]), limit=5)
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
    assert found and found[0].document_id == "d1"
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
