"""The embedded chunk store's own behaviour beyond the conformance suite: its tantivy text index
ranks exactly (the top-k search skips nothing that belongs in the top k), is rebuilt from SQLite
when missing or stale, and a database written before tantivy (FTS5) opens and is searchable."""

from __future__ import annotations

import math
import random
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubechat.core.resources import KnowledgeBase
from kubechat.stores.chunks import ChunkRecord
from kubechat.stores.sqlite.chunks import SQLiteChunkStore
from kubechat.stores.sqlite.text_index import TextIndex


def knowledge_base(name: str = "manuals", analyzer: str = "standard") -> KnowledgeBase:
    return KnowledgeBase.model_validate(
        {
            "apiVersion": "kubechat.io/v1alpha1",
            "kind": "KnowledgeBase",
            "metadata": {"name": name},
            "spec": {
                "embedding": {"model": "minilm", "dimensions": 4},
                "index": {"analyzer": analyzer},
                "access": {"owners": ["alice"]},
            },
        }
    )


def unit(rng: np.random.Generator) -> Any:
    vector = rng.standard_normal(4).astype(np.float32)
    return vector / np.linalg.norm(vector)


# Ten common words every chunk draws from, and rare ones a few chunks hold.
COMMON = ["pod", "node", "cluster", "replica", "volume", "ingress", "service", "secret", "job", "lease"]
RARE = ["zeppelin", "quasar", "marmot"]


def corpus(size: int, seed: int = 5) -> list[ChunkRecord]:
    """Chunks of 6 to 20 words (tantivy stores lengths up to 40 exactly, so BM25 is exact)."""
    rng, vectors = random.Random(seed), np.random.default_rng(seed)
    chunks = []
    for n in range(size):
        words = [rng.choice(COMMON) for _ in range(rng.randint(6, 20))]
        if n % 97 == 0:
            words[rng.randrange(len(words))] = rng.choice(RARE)
        chunks.append(
            ChunkRecord(
                document_id=f"doc{n // 50}", document_name=f"doc{n // 50}.md", ordinal=n % 50,
                text=" ".join(words), vector=unit(vectors),
            )
        )  # fmt: skip
    return chunks


def lucene_bm25(
    chunks: list[ChunkRecord], query: list[str], k1: float = 1.2, b: float = 0.75
) -> dict[str, float]:
    """Every chunk's BM25 for the query words, computed exhaustively (Lucene's formula)."""
    docs = [Counter(c.text.split()) for c in chunks]
    lengths = [sum(d.values()) for d in docs]
    average = sum(lengths) / len(lengths)
    scores: dict[str, float] = {}
    for chunk, terms, length in zip(chunks, docs, lengths, strict=True):
        score = 0.0
        for word in dict.fromkeys(query):
            df = sum(1 for d in docs if word in d)
            if not terms[word]:
                continue
            idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            tf = terms[word]
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / average))
        if score > 0:
            scores[chunk.chunk_id] = score
    return scores


QUERIES = ["pod node", "zeppelin cluster", "quasar marmot service lease", "replica volume ingress secret job"]


@pytest.mark.parametrize("query", QUERIES)
async def test_text_scores_are_lucene_bm25(tmp_path: Path, query: str) -> None:
    """Every hit scores what Lucene's BM25 (Elasticsearch's) gives it over the whole corpus,
    written in several batches (several tantivy segments, statistics still corpus-wide), and
    the hits are the exhaustive ranking's first k."""
    kb, chunks = knowledge_base(), corpus(1500)
    store = await SQLiteChunkStore.open(tmp_path / "chunks.sqlite3")
    try:
        index = await store.ensure_index(kb)
        for first in range(0, len(chunks), 300):
            await store.upsert(index, chunks[first : first + 300])
        expected = lucene_bm25(chunks, query.split())
        hits = await store.text_search(kb, query, k=10)
        best = sorted(expected.values(), reverse=True)[:10]
        assert [h.score for h in hits] == pytest.approx(best, rel=1e-5)
        for hit in hits:  # tied scores may come in either order; each hit has its own score
            assert hit.score == pytest.approx(expected[hit.chunk.chunk_id], rel=1e-5)
        # A document filter narrows the hits and keeps each one's score (corpus-wide statistics).
        only = await store.text_search(kb, query, k=10, document_ids=["doc3", "doc7"])
        assert only and {h.chunk.document_id for h in only} <= {"doc3", "doc7"}
        for hit in only:
            assert hit.score == pytest.approx(expected[hit.chunk.chunk_id], rel=1e-5)
    finally:
        await store.close()


@pytest.mark.parametrize("query", QUERIES)
async def test_the_top_k_search_drops_no_true_top_hit(tmp_path: Path, query: str) -> None:
    """tantivy's top-k skips blocks of postings that cannot reach the k best so far (block-max
    WAND); asking for every match cannot skip anything. The first k must be the same, after
    replacements and deletions too (whose documents tantivy keeps in its statistics until a
    merge, as Lucene does)."""
    kb, chunks = knowledge_base(), corpus(3000)
    store = await SQLiteChunkStore.open(tmp_path / "chunks.sqlite3")
    try:
        index = await store.ensure_index(kb)
        for first in range(0, len(chunks), 500):
            await store.upsert(index, chunks[first : first + 500])
        await store.upsert(index, chunks[:40])
        await store.delete_document(index, "doc29")
        everything = await store.text_search(kb, query, k=len(chunks))
        assert {h.chunk.document_id for h in everything}.isdisjoint({"doc29"})
        for k in (1, 5, 20):
            top = await store.text_search(kb, query, k=k)
            assert [h.score for h in top] == [h.score for h in everything[:k]]
            assert top[0].chunk.chunk_id in {h.chunk.chunk_id for h in everything if h.score == top[0].score}
    finally:
        await store.close()


async def test_the_text_index_persists_and_is_rebuilt_when_lost_or_stale(tmp_path: Path) -> None:
    path, kb = tmp_path / "chunks.sqlite3", knowledge_base()
    store = await SQLiteChunkStore.open(path)
    index = await store.ensure_index(kb)
    await store.upsert(index, corpus(200))
    await store.close()
    folder = tmp_path / "chunks.tantivy" / index
    assert folder.is_dir()

    # A crash after the SQLite commit and before tantivy's: a row tantivy never saw, marked stale.
    with sqlite3.connect(path) as db:
        (vector,) = db.execute("SELECT vector FROM chunks LIMIT 1").fetchone()
        db.execute(
            "INSERT INTO chunks (index_name, chunk_id, document_id, document_name, ordinal, text, page, "
            "section, vector) VALUES (?, 'late:0', 'late', 'late.md', 0, 'the zeppelin landed late', "
            "NULL, '', ?)",
            (index, vector),
        )
        db.execute("UPDATE indices SET text_synced = 0 WHERE name = ?", (index,))
    store = await SQLiteChunkStore.open(path)
    try:
        hits = await store.text_search(kb, "landed", k=3)
        assert [h.chunk.chunk_id for h in hits] == ["late:0"]
    finally:
        await store.close()

    # The files lost altogether: rebuilt from the chunks table on first use.
    for child in sorted(folder.iterdir()):
        child.unlink()
    folder.rmdir()
    store = await SQLiteChunkStore.open(path)
    try:
        assert [h.chunk.chunk_id for h in await store.text_search(kb, "landed", k=3)] == ["late:0"]
        assert await store.count(kb) == 201
    finally:
        await store.close()


async def test_writes_left_unrefreshed_are_kept_at_close(tmp_path: Path) -> None:
    path, kb = tmp_path / "chunks.sqlite3", knowledge_base()
    store = await SQLiteChunkStore.open(path)
    index = await store.ensure_index(kb)
    await store.upsert(index, corpus(30), visible=False)
    await store.close()
    store = await SQLiteChunkStore.open(path)
    try:
        assert len(await store.text_search(kb, " ".join(COMMON), k=50)) == 30
    finally:
        await store.close()


# The schema and FTS5 layout of kubechat before its text index moved to tantivy, verbatim.
LEGACY_SCHEMA = """
CREATE TABLE indices (
    name TEXT PRIMARY KEY, alias TEXT NOT NULL, generation INTEGER NOT NULL, active INTEGER NOT NULL,
    embedding_model TEXT NOT NULL, dimensions INTEGER NOT NULL, similarity TEXT NOT NULL,
    analyzer TEXT NOT NULL
);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,
    index_name TEXT NOT NULL REFERENCES indices(name) ON DELETE CASCADE,
    chunk_id TEXT NOT NULL, document_id TEXT NOT NULL, document_name TEXT NOT NULL,
    ordinal INTEGER NOT NULL, text TEXT NOT NULL, page INTEGER, section TEXT NOT NULL,
    vector BLOB NOT NULL, UNIQUE (index_name, chunk_id)
);
CREATE INDEX chunks_by_document ON chunks (index_name, document_id);
"""
LEGACY_FTS = (
    "CREATE VIRTUAL TABLE fts_1 USING fts5("
    "text, content='chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER fts_1_ai AFTER INSERT ON chunks WHEN new.index_name = '{index}' BEGIN "
    "INSERT INTO fts_1 (rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER fts_1_ad AFTER DELETE ON chunks WHEN old.index_name = '{index}' BEGIN "
    "INSERT INTO fts_1 (fts_1, rowid, text) VALUES ('delete', old.id, old.text); END",
)


async def test_a_database_from_before_tantivy_opens_and_is_searchable(tmp_path: Path) -> None:
    kb = knowledge_base(analyzer="english")
    index = kb.generation_index(1)
    path = tmp_path / "chunks.sqlite3"
    texts = ["Kubernetes schedules pods onto nodes.", "Triton serves models over gRPC."]
    with sqlite3.connect(path) as db:
        db.executescript(LEGACY_SCHEMA)
        db.execute(
            "INSERT INTO indices VALUES (?, ?, 1, 1, 'minilm', 4, 'cosine', 'english')",
            (index, kb.index_alias),
        )
        for statement in LEGACY_FTS:
            db.execute(statement.format(index=index))
        for ordinal, text in enumerate(texts):
            db.execute(
                "INSERT INTO chunks (index_name, chunk_id, document_id, document_name, ordinal, text, page, "
                "section, vector) VALUES (?, ?, 'd1', 'd1.md', ?, ?, NULL, '', ?)",
                (index, f"d1:{ordinal}", ordinal, text, np.array([1, 0, 0, ordinal], np.float32).tobytes()),
            )
    store = await SQLiteChunkStore.open(path)
    try:
        assert await store.ensure_index(kb, create=False) == index
        assert await store.count(kb) == 2
        # Stemming carried over from the FTS5 tokenizer: "scheduling" finds "schedules".
        hits = await store.text_search(kb, "the scheduling of pods", k=5)
        assert [h.chunk.chunk_id for h in hits] == ["d1:0"]
        knn = await store.knn(kb, np.array([0, 0, 0, 1], np.float32), k=1)
        assert [h.chunk.chunk_id for h in knn] == ["d1:1"]
        # Writes after the migration reach the text index, and the FTS5 layout is gone.
        helm = ChunkRecord("d2", "d2.md", 0, "Helm renders charts.", vector=unit(np.random.default_rng(1)))
        await store.upsert(index, [helm])
        assert [h.chunk.chunk_id for h in await store.text_search(kb, "charts", k=5)] == ["d2:0"]
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'fts_%'").fetchall() == []
        assert db.execute("SELECT stemming, text_synced FROM indices").fetchall() == [(1, 1)]


async def test_a_chunk_twice_in_one_batch_is_indexed_once_as_its_last_version(tmp_path: Path) -> None:
    kb, rng = knowledge_base(), np.random.default_rng(3)
    store = await SQLiteChunkStore.open(tmp_path / "chunks.sqlite3")
    try:
        index = await store.ensure_index(kb)
        first = ChunkRecord("d1", "d1.md", 0, "zeppelin hangar", vector=unit(rng))
        last = ChunkRecord("d1", "d1.md", 0, "quasar telescope", vector=unit(rng))
        await store.upsert(index, [first, last])
        assert await store.count(kb) == 1
        assert await store.text_search(kb, "zeppelin", k=5) == []
        assert [h.chunk.text for h in await store.text_search(kb, "quasar", k=5)] == ["quasar telescope"]
    finally:
        await store.close()
    # The text index holds one document too (its statistics would count a stale one).
    assert TextIndex(tmp_path / "chunks.tantivy" / index, stemming=False).count == 1
