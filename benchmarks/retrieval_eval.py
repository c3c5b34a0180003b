"""Retrieval quality on real documents nobody here wrote: does the right passage come back?

The corpus is six documents copied verbatim from Debian packages installed on the development
machines (benchmarks/data/retrieval/, provenance and checksums in its SOURCES.md): two licences,
two dpkg specifications, the base-passwd manual (HTML) and zlib's usage example (HTML). Each is
parsed and chunked by ingestion's own code (the KnowledgeBase of examples/knowledge-bases, 200
MiniLM tokens sharing 40), embedded by the real MiniLM through tritonserver and written to the
embedded chunk store (SQLite: brute-force kNN; BM25 in tantivy).

Each answerable question names its document and marks the passage that answers it by a
distinctive substring (whitespace-normalised); unanswerable questions have no answer in any of
the six, some of them on purpose close to their vocabulary (a licence they do not contain,
PostgreSQL tuning beside a "postgres" user entry).

Metrics, through the production path (KnowledgeService.search → HybridSearch):
- document hit@1: the first source is from the question's document;
- passage@1: the first source holds the marked passage;
- passage recall@5: one of the sources given to the model (5) holds the marked passage;
- passage MRR: 1 / rank of the first source holding it (0 if none of the 5);
- no-answer rate: the share of unanswerable questions that get no sources at all;
- false no-answer rate: the share of answerable questions that get no sources (the cost of a floor).

With --ablation it also scores every fusion this module knows on the same two ranked lists
per question (kNN and BM25, 20 candidates each), and prints the best kNN score of answerable
and unanswerable questions, which is what a relevance floor can separate them by.

Prints a table and writes benchmarks/results/retrieval-eval-<time>.json.

    make bench
    python -m benchmarks.retrieval_eval --ablation
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from tokenizers import Tokenizer

from benchmarks.streaming import ROOT, machine, write_report
from kubechat.api.settings import Settings
from kubechat.catalog import load_catalog
from kubechat.core.resources import Capability, KnowledgeBase
from kubechat.core.settings import StoreSettings
from kubechat.embedded.launcher import TritonPorts, start_triton
from kubechat.knowledge import parsing, retrieval
from kubechat.knowledge.chunking import chunk_sections
from kubechat.knowledge.service import KnowledgeService
from kubechat.stores.chunks import ChunkRecord, ChunkStore
from kubechat.stores.open import open_stores
from kubechat.triton.client import TritonGateway
from tests.conftest import free_port

DATA = ROOT / "benchmarks" / "data" / "retrieval"
KNOWLEDGE_BASE = yaml.safe_load((ROOT / "examples" / "knowledge-bases" / "docs.yaml").read_text())
PRINCIPAL = "eval"
CANDIDATES = Settings.model_fields["retrieval_candidates"].default
SOURCES = Settings.model_fields["retrieval_sources"].default
MIN_SCORE = Settings.model_fields["retrieval_min_score"].default
FLOORS = (0.0, 0.6, 0.65, 0.68, 0.7, 0.72, 0.75)  # swept with --ablation
EMBEDDER = "minilm.yaml"


@dataclass(frozen=True)
class Question:
    text: str
    document: str  # file name under DATA
    marker: str  # a distinctive substring of the answering passage


def load_questions() -> tuple[list[Question], list[str]]:
    data = yaml.safe_load((DATA / "questions.yaml").read_text())
    return [Question(q["question"], q["document"], q["marker"]) for q in data["answerable"]], data[
        "unanswerable"
    ]


QUESTIONS, UNANSWERABLE = load_questions()


def normalise(text: str) -> str:
    return " ".join(text.split())


def holds(chunk_text: str, marker: str) -> bool:
    return normalise(marker) in normalise(chunk_text)


def corpus_records(kb: KnowledgeBase, tokenizer: Tokenizer) -> list[tuple[str, list[ChunkRecord]]]:
    """Each document's chunks, without vectors, as ingestion's parse and chunk steps cut them."""
    documents = []
    for path in sorted(DATA.iterdir()):
        if path.suffix not in {".txt", ".html"}:
            continue
        data = path.read_bytes()
        sections = parsing.parse_document(data, parsing.detect_format(path.name, data[:8192]))
        chunking = kb.spec.chunking
        pieces = chunk_sections(sections, tokenizer, chunking.size, chunking.overlap)
        records = [
            ChunkRecord(path.stem, path.name, i, p.text, page=p.page, section=p.section)
            for i, p in enumerate(pieces)
        ]
        documents.append((path.name, records))
    return documents


@dataclass
class Scores:
    fusion: str
    document_hit_at_1: float
    passage_at_1: float
    passage_recall_at_5: float
    passage_mrr: float
    no_answer_rate: float
    false_no_answer_rate: float
    misses: list[str]


def score(
    fusion: str,
    answered: Sequence[Sequence[retrieval.Citation]],
    unanswered: Sequence[Sequence[retrieval.Citation]],
) -> Scores:
    hits = first = recall = rr = empty = 0.0
    misses = []
    for question, sources in zip(QUESTIONS, answered, strict=True):
        hits += bool(sources) and sources[0].document_name == question.document
        rank = next((s.n for s in sources if holds(s.text, question.marker)), None)
        recall += rank is not None
        first += rank == 1
        rr += 1 / rank if rank else 0.0
        empty += not sources
        if rank is None:
            misses.append(question.text)
    count = len(QUESTIONS)
    return Scores(
        fusion, hits / count, first / count, recall / count, rr / count,
        sum(not s for s in unanswered) / len(unanswered), empty / count, misses,
    )  # fmt: skip


async def evaluate(args: argparse.Namespace) -> dict[str, object]:
    kb = KnowledgeBase.model_validate({**KNOWLEDGE_BASE, "metadata": {"name": "eval"}})
    scratch = tempfile.TemporaryDirectory(prefix="kubechat-retrieval-eval-")
    work = Path(scratch.name)
    # Only the embedder: the eval needs no chat model, and tritonserver starts in seconds.
    (work / "models").mkdir()
    shutil.copy(ROOT / "examples" / "models" / EMBEDDER, work / "models" / EMBEDDER)
    catalog = load_catalog(work / "models", work / "state")
    embedder = catalog.get(kb.spec.embedding.model, Capability.EMBEDDINGS)
    assert embedder.tokenizer is not None
    load_before = os.getloadavg()
    triton = start_triton(
        work / "models", work / "state", TritonPorts(free_port(), free_port(), free_port()), 300
    )
    gateway = TritonGateway(triton.grpc_url)
    stores = await open_stores(StoreSettings(state_dir=work / "stores", elasticsearch_url="", s3_endpoint=""))
    try:
        documents = corpus_records(kb, embedder.tokenizer)
        index = await stores.chunks.ensure_index(kb)
        for _, records in documents:
            vectors = await gateway.embed(embedder.name, [r.text for r in records])
            await stores.chunks.upsert(
                index,
                [ChunkRecord(**{**asdict(r), "vector": v}) for r, v in zip(records, vectors, strict=True)],
            )
        service = KnowledgeService(
            [kb], catalog, stores.documents, stores.objects, stores.chunks, gateway, min_score=MIN_SCORE
        )
        await service.start()
        try:
            answered = [
                await service.search(PRINCIPAL, [kb.name], q.text, limit=SOURCES, candidates=CANDIDATES)
                for q in QUESTIONS
            ]
            unanswered = [
                await service.search(PRINCIPAL, [kb.name], q, limit=SOURCES, candidates=CANDIDATES)
                for q in UNANSWERABLE
            ]
        finally:
            await service.stop()
        results = [score("production", answered, unanswered)]
        floors: dict[str, list[float]] = {}
        if args.ablation:
            results += await ablation(kb, stores.chunks, gateway, embedder.name, floors)
    finally:
        await stores.close()
        await gateway.close()
        triton.stop()
        scratch.cleanup()
    print_table(results)
    if floors:
        print_floors(floors)
    return {
        "benchmark": "retrieval-eval",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(
            load_average_before=load_before,
            load_average_after=os.getloadavg(),
        ),
        "corpus": {
            "documents": [name for name, _ in documents],
            "chunks": sum(len(records) for _, records in documents),
            "chunking": KNOWLEDGE_BASE["spec"]["chunking"],
            "embedder": embedder.name,
            "answerable_questions": len(QUESTIONS),
            "unanswerable_questions": len(UNANSWERABLE),
            "sources": SOURCES,
            "candidates_per_list": CANDIDATES,
            "relevance_floor": MIN_SCORE,
        },
        "results": [asdict(r) for r in results],
        "best_knn_score": floors,
        "floor_sweep": floor_sweep(floors) if floors else [],
    }


async def ablation(
    kb: KnowledgeBase, store: ChunkStore, gateway: TritonGateway, model: str, floors: dict[str, list[float]]
) -> list[Scores]:
    """Every fusion on the same ranked lists; the best kNN score of each question for the floor."""

    async def lists(question: str) -> list[retrieval.RankedList]:
        vector = (await gateway.embed(model, [question]))[0]
        knn = await store.knn(kb, vector, CANDIDATES)
        bm25 = await store.text_search(kb, question, CANDIDATES)
        return [retrieval.RankedList(kb.name, "knn", knn), retrieval.RankedList(kb.name, "bm25", bm25)]

    answerable = [await lists(q.text) for q in QUESTIONS]
    unanswerable = [await lists(q) for q in UNANSWERABLE]
    floors["answerable"] = [round(ls[0].hits[0].score, 4) if ls[0].hits else 0.0 for ls in answerable]
    floors["unanswerable"] = [round(ls[0].hits[0].score, 4) if ls[0].hits else 0.0 for ls in unanswerable]
    scores = []
    for name, fuse in retrieval.FUSIONS.items():
        scores.append(
            score(
                name,
                [retrieval.citations(fuse(ls), SOURCES) for ls in answerable],
                [retrieval.citations(fuse(ls), SOURCES) for ls in unanswerable],
            )
        )
    return scores


COLUMNS = ("doc hit@1", "passage@1", "recall@5", "MRR", "no-answer", "false n/a")


def print_table(results: Sequence[Scores]) -> None:
    print(f"{'fusion':<22}" + "".join(f"{c:>11}" for c in COLUMNS))
    for r in results:
        values = (
            r.document_hit_at_1, r.passage_at_1, r.passage_recall_at_5, r.passage_mrr,
            r.no_answer_rate, r.false_no_answer_rate,
        )  # fmt: skip
        print(f"{r.fusion:<22}" + "".join(f"{v:>11.3f}" for v in values))
    for miss in results[0].misses:
        print(f"  production missed: {miss}")


def floor_sweep(floors: dict[str, list[float]]) -> list[dict[str, float]]:
    """No-answer and false no-answer rates of each floor in FLOORS, from the best kNN scores."""
    return [
        {
            "floor": floor,
            "no_answer_rate": sum(s < floor for s in floors["unanswerable"]) / len(floors["unanswerable"]),
            "false_no_answer_rate": sum(s < floor for s in floors["answerable"]) / len(floors["answerable"]),
        }
        for floor in FLOORS
    ]


def print_floors(floors: dict[str, list[float]]) -> None:
    for row in floor_sweep(floors):
        print(
            f"floor {row['floor']:.2f}: no-answer {row['no_answer_rate']:.3f}, "
            f"false no-answer {row['false_no_answer_rate']:.3f}"
        )
    for kind, values in floors.items():
        ordered = sorted(values)
        print(
            f"best kNN score, {kind:<12} min {ordered[0]:.4f}  median {statistics.median(ordered):.4f}  "
            f"max {ordered[-1]:.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ablation", action="store_true", help="also score every fusion and print kNN scores"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    write_report(args.out, "retrieval-eval", asyncio.run(evaluate(args)))


if __name__ == "__main__":
    main()
