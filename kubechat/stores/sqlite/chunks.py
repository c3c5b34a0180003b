"""The embedded chunk store: SQLite with FTS5 for BM25 and the vectors beside each chunk.

Vectors are stored as float32 blobs and scored exactly (brute force) with numpy against a
per-index matrix held in memory (with each row's norm), built from the table on first use
after a write: searches between writes reuse it, the first search after one rebuilds it.
At 100k chunks of 384 dimensions that is 150 MB and one matrix-vector product per query,
which fits a laptop; a cluster uses Elasticsearch's HNSW.

An index keeps the similarity and analyzer it was created with until a full re-index builds the
next generation from the spec, as an Elasticsearch index does (`index_drift` says what differs).
Vectors are checked against the index's similarity by Elasticsearch's rules
(kubechat.stores.chunks.vector_problem) when written and when queried. `spec.index.type`, HNSW,
shards and replicas mean nothing here: vectors are float32 and searched exactly.

Scores follow Elasticsearch's kNN conventions (cosine: (1 + cos) / 2, dot product:
(1 + dot) / 2, l2_norm: 1 / (1 + d²)) so that both stores report comparable numbers.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kubechat.core.resources import IndexSpec, KnowledgeBase, Similarity
from kubechat.stores.chunks import ChunkRecord, RankedChunk, SpecDrift, Vector, check_vector
from kubechat.stores.errors import EmbeddingMismatchError, IndexMissingError, StoreError
from kubechat.stores.sqlite.database import SQLiteDatabase

_SCHEMA = """
CREATE TABLE IF NOT EXISTS indices (
    name TEXT PRIMARY KEY,
    alias TEXT NOT NULL,
    generation INTEGER NOT NULL,
    active INTEGER NOT NULL,
    embedding_model TEXT NOT NULL,
    dimensions INTEGER NOT NULL,
    similarity TEXT NOT NULL,
    analyzer TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    index_name TEXT NOT NULL REFERENCES indices(name) ON DELETE CASCADE,
    chunk_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    document_name TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    page INTEGER,
    section TEXT NOT NULL,
    vector BLOB NOT NULL,
    UNIQUE (index_name, chunk_id)
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (index_name, document_id);
"""

# Each index has its own FTS5 table (`fts_<rowid of its indices row>`), kept in step with the
# chunks table by two triggers, so BM25 statistics are per index as in Elasticsearch.
_FTS_TABLE = (
    "CREATE VIRTUAL TABLE {fts} USING fts5("
    "text, content='chunks', content_rowid='id', tokenize='{tokenizer}')",
    "CREATE TRIGGER {fts}_ai AFTER INSERT ON chunks WHEN new.index_name = '{index}' BEGIN "
    "INSERT INTO {fts} (rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER {fts}_ad AFTER DELETE ON chunks WHEN old.index_name = '{index}' BEGIN "
    "INSERT INTO {fts} ({fts}, rowid, text) VALUES ('delete', old.id, old.text); END",
)

# The analyzer of the spec, as close as FTS5 gets: `english` stems (Porter) and drops
# Lucene's English stop words from queries (FTS5 indexes them, but a query on "the" would
# score every chunk); a custom analyzer with a stemming filter stems with Porter too; anything
# else splits on Unicode word boundaries, as `standard` does.
_PORTER_TOKENIZER = "porter unicode61 remove_diacritics 2"
_DEFAULT_TOKENIZER = "unicode61 remove_diacritics 2"
_STEMMING_FILTERS = frozenset({"porter_stem", "stemmer", "kstem", "snowball"})


def fts_tokenizer(index: IndexSpec) -> str:
    """The FTS5 tokenizer that stands in for the spec's analyzer."""
    if index.analyzer == "english":
        return _PORTER_TOKENIZER
    custom = index.analyzers.get(index.analyzer)
    if custom is not None and _STEMMING_FILTERS & set(custom.filter):
        return _PORTER_TOKENIZER
    return _DEFAULT_TOKENIZER


ENGLISH_STOP_WORDS = frozenset([  # Lucene's English stop words, as Elasticsearch's `english`
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
])  # fmt: skip

_COLUMNS = "chunk_id, document_id, document_name, ordinal, text, page, section"
_WORD = re.compile(r"\w+", re.UNICODE)


def _record(row: Sequence[Any]) -> ChunkRecord:
    return ChunkRecord(
        document_id=row[1], document_name=row[2], ordinal=row[3], text=row[4], page=row[5], section=row[6]
    )


def fts_query(text: str, analyzer: str = "standard") -> str:
    """Free text as an FTS5 query: every word quoted (no operator injection), any may match."""
    words = _WORD.findall(text)
    if analyzer == "english":
        # Only stop words (say, "to be or not to be"): search for them rather than nothing.
        words = [w for w in words if w.lower() not in ENGLISH_STOP_WORDS] or words
    return " OR ".join(f'"{word}"' for word in words)


@dataclass
class _Matrix:
    """The vectors of one index, in row order, with each row's chunk table id."""

    ids: np.ndarray[Any, np.dtype[np.int64]]
    vectors: np.ndarray[Any, np.dtype[np.float32]]
    documents: np.ndarray[Any, np.dtype[np.object_]]
    norms: np.ndarray[Any, np.dtype[np.float32]]  # per row, computed once: cosine needs them


def _scores(similarity: Similarity, matrix: _Matrix, query: Vector) -> Vector:
    vectors = matrix.vectors
    if similarity is Similarity.L2_NORM:
        # |v - q|² = |v|² - 2 v·q + |q|², without a rows-by-dims temporary
        distances = matrix.norms**2 - 2.0 * (vectors @ query) + float(query @ query)
        return np.asarray(1.0 / (1.0 + np.maximum(distances, 0.0)), dtype=np.float32)
    dots = vectors @ query
    if similarity is Similarity.COSINE:
        norms = matrix.norms * max(float(np.linalg.norm(query)), 1e-12)
        return np.asarray((1.0 + dots / np.maximum(norms, 1e-12)) / 2.0, dtype=np.float32)
    if similarity is Similarity.DOT_PRODUCT:
        return np.asarray((1.0 + dots) / 2.0, dtype=np.float32)
    # max_inner_product, as Elasticsearch scales it to stay positive
    return np.asarray(np.where(dots < 0, 1.0 / (1.0 - dots), dots + 1.0), dtype=np.float32)


class SQLiteChunkStore:
    def __init__(self, database: SQLiteDatabase) -> None:
        self._database = database
        self._db = database.db
        self._matrices: dict[str, _Matrix] = {}

    @classmethod
    async def open(cls, path: Path) -> SQLiteChunkStore:
        return cls(await SQLiteDatabase.open(path, _SCHEMA))

    async def close(self) -> None:
        await self._database.close()

    # -- indices --------------------------------------------------------------------------

    async def ensure_index(self, kb: KnowledgeBase, *, create: bool = True) -> str:
        def ensure() -> str:
            with self._database.transaction():
                row = self._db.execute(
                    "SELECT name, embedding_model, dimensions FROM indices WHERE alias = ? AND active = 1",
                    (kb.index_alias,),
                ).fetchone()
                if row is None:
                    if not create:
                        raise IndexMissingError(f"knowledge base {kb.name} has no index yet")
                    return self._create(kb, 1, active=True)
            name, model, dimensions = row
            embedding = kb.spec.embedding
            if (model, dimensions) != (embedding.model, embedding.dimensions):
                raise EmbeddingMismatchError(
                    f"index {name} holds {dimensions}-dimensional vectors of {model!r}; knowledge base "
                    f"{kb.name} names {embedding.dimensions}-dimensional {embedding.model!r}: re-index it"
                )
            return str(name)

        return await self._database.run(ensure)

    def _create(self, kb: KnowledgeBase, generation: int, *, active: bool) -> str:
        name = kb.generation_index(generation)
        analyzer = kb.spec.index.analyzer
        cursor = self._db.execute(
            "INSERT INTO indices VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name, kb.index_alias, generation, int(active), kb.spec.embedding.model,
                kb.spec.embedding.dimensions, kb.spec.index.similarity.value, analyzer,
            ),
        )  # fmt: skip
        tokenizer = fts_tokenizer(kb.spec.index)
        # Index names are RFC 1123 labels, dots and digits: safe inside the quotes.
        for statement in _FTS_TABLE:
            self._db.execute(statement.format(fts=f"fts_{cursor.lastrowid}", tokenizer=tokenizer, index=name))
        return name

    def _drop_index(self, name: str) -> None:
        """On the database thread, in a transaction: the index, its FTS table, its chunks."""
        (rowid,) = self._db.execute("SELECT rowid FROM indices WHERE name = ?", (name,)).fetchone()
        fts = f"fts_{rowid}"
        # Triggers first, so deleting the chunks does not update an FTS table about to go.
        self._db.execute(f"DROP TRIGGER IF EXISTS {fts}_ai")
        self._db.execute(f"DROP TRIGGER IF EXISTS {fts}_ad")
        self._db.execute(f"DROP TABLE IF EXISTS {fts}")
        self._db.execute("DELETE FROM chunks WHERE index_name = ?", (name,))
        self._db.execute("DELETE FROM indices WHERE name = ?", (name,))

    async def create_generation(self, kb: KnowledgeBase) -> str:
        def create() -> str:
            with self._database.transaction():
                (latest,) = self._db.execute(
                    "SELECT COALESCE(MAX(generation), 0) FROM indices WHERE alias = ?", (kb.index_alias,)
                ).fetchone()
                return self._create(kb, int(latest) + 1, active=False)

        return await self._database.run(create)

    async def activate(self, kb: KnowledgeBase, index: str) -> None:
        def activate() -> list[str]:
            with self._database.transaction():
                if self._db.execute("SELECT 1 FROM indices WHERE name = ?", (index,)).fetchone() is None:
                    raise StoreError(f"index {index} does not exist")
                old = [
                    r[0]
                    for r in self._db.execute(
                        "SELECT name FROM indices WHERE alias = ? AND name != ?", (kb.index_alias, index)
                    )
                ]
                self._db.execute("UPDATE indices SET active = 1 WHERE name = ?", (index,))
                for name in old:
                    self._drop_index(name)
            return old

        for name in await self._database.run(activate):
            self._matrices.pop(name, None)

    async def drop(self, kb: KnowledgeBase) -> None:
        def drop() -> list[str]:
            with self._database.transaction():
                names = [
                    r[0]
                    for r in self._db.execute("SELECT name FROM indices WHERE alias = ?", (kb.index_alias,))
                ]
                for name in names:
                    self._drop_index(name)
            return names

        for name in await self._database.run(drop):
            self._matrices.pop(name, None)

    def _active(self, kb: KnowledgeBase) -> tuple[str, Similarity] | None:
        row = self._db.execute(
            "SELECT name, similarity FROM indices WHERE alias = ? AND active = 1", (kb.index_alias,)
        ).fetchone()
        return (str(row[0]), Similarity(row[1])) if row else None

    def _fts(self, index: str) -> tuple[str, str]:
        """The FTS table of an index and the analyzer it was built with."""
        rowid, analyzer = self._db.execute(
            "SELECT rowid, analyzer FROM indices WHERE name = ?", (index,)
        ).fetchone()
        return f"fts_{rowid}", str(analyzer)

    def _index(self, index: str) -> tuple[int, Similarity]:
        row = self._db.execute(
            "SELECT dimensions, similarity FROM indices WHERE name = ?", (index,)
        ).fetchone()
        if row is None:
            raise StoreError(f"index {index} does not exist")
        return int(row[0]), Similarity(row[1])

    async def index_drift(self, kb: KnowledgeBase) -> list[SpecDrift]:
        """Similarity and analyzer: the settings this store honours (the rest are Elasticsearch's)."""

        def drift() -> list[SpecDrift]:
            row = self._db.execute(
                "SELECT similarity, analyzer FROM indices WHERE alias = ? AND active = 1", (kb.index_alias,)
            ).fetchone()
            if row is None:
                return []
            spec = kb.spec.index
            found = []
            for field, built, wanted in (
                ("index.similarity", row[0], spec.similarity.value),
                ("index.analyzer", row[1], spec.analyzer),
            ):
                if built != wanted:
                    found.append(SpecDrift(field, str(built), wanted))
            return found

        return await self._database.run(drift)

    # -- writes ---------------------------------------------------------------------------

    async def upsert(self, index: str, chunks: Sequence[ChunkRecord], *, visible: bool = True) -> None:
        # A committed SQLite write is visible at once: `visible` changes nothing here.
        def upsert() -> None:
            dimensions, similarity = self._index(index)
            rows = []
            for chunk in chunks:
                if chunk.vector is None or chunk.vector.shape != (dimensions,):
                    shape = None if chunk.vector is None else chunk.vector.shape
                    raise EmbeddingMismatchError(
                        f"chunk {chunk.chunk_id} has a vector of shape {shape}; index {index} "
                        f"holds {dimensions} dimensions"
                    )
                check_vector(chunk.vector, similarity, f"the vector of chunk {chunk.chunk_id}")
                rows.append(
                    (
                        index, chunk.chunk_id, chunk.document_id, chunk.document_name, chunk.ordinal,
                        chunk.text, chunk.page, chunk.section,
                        np.ascontiguousarray(chunk.vector, dtype=np.float32).tobytes(),
                    )
                )  # fmt: skip
            with self._database.transaction():
                # Delete then insert (not REPLACE) so the FTS delete trigger sees the old text.
                self._db.executemany(
                    "DELETE FROM chunks WHERE index_name = ? AND chunk_id = ?", [(r[0], r[1]) for r in rows]
                )
                self._db.executemany(
                    f"INSERT INTO chunks (index_name, {_COLUMNS}, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            self._matrices.pop(index, None)

        await self._database.run(upsert)

    async def make_visible(self, index: str) -> None:
        return None

    async def delete_document(self, index: str, document_id: str) -> None:
        def delete() -> None:
            self._db.execute(
                "DELETE FROM chunks WHERE index_name = ? AND document_id = ?", (index, document_id)
            )
            self._matrices.pop(index, None)

        await self._database.run(delete)

    # -- reads ----------------------------------------------------------------------------

    def _matrix(self, index: str, dimensions: int) -> _Matrix:
        matrix = self._matrices.get(index)
        if matrix is None:
            rows = self._db.execute(
                "SELECT id, document_id, vector FROM chunks WHERE index_name = ? ORDER BY id", (index,)
            ).fetchall()
            vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(-1, dimensions)
            matrix = _Matrix(
                ids=np.array([r[0] for r in rows], dtype=np.int64),
                vectors=vectors,
                documents=np.array([r[1] for r in rows], dtype=np.object_),
                norms=np.linalg.norm(vectors, axis=1).astype(np.float32),
            )
            self._matrices[index] = matrix
        return matrix

    def _records(self, ids: Sequence[int]) -> dict[int, ChunkRecord]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(f"SELECT id, {_COLUMNS} FROM chunks WHERE id IN ({marks})", list(ids))
        return {int(r[0]): _record(r[1:]) for r in rows}

    async def knn(
        self, kb: KnowledgeBase, vector: Vector, k: int, document_ids: Sequence[str] | None = None
    ) -> list[RankedChunk]:
        def knn() -> list[RankedChunk]:
            active = self._active(kb)
            if active is None or k <= 0:
                return []
            index, similarity = active
            dimensions, _ = self._index(index)
            if vector.shape != (dimensions,):
                raise EmbeddingMismatchError(
                    f"query vector has shape {vector.shape}; index {index} holds {dimensions} dimensions"
                )
            query = np.asarray(vector, dtype=np.float32)
            check_vector(query, similarity, "the query vector")
            matrix = self._matrix(index, dimensions)
            scores = _scores(similarity, matrix, query)
            if document_ids is not None:
                scores = np.where(np.isin(matrix.documents, list(document_ids)), scores, -np.inf)
            count = min(k, int(np.isfinite(scores).sum()))
            if count == 0:
                return []
            top = np.argpartition(-scores, count - 1)[:count]
            top = top[np.argsort(-scores[top], kind="stable")]
            records = self._records([int(matrix.ids[i]) for i in top])
            return [RankedChunk(records[int(matrix.ids[i])], float(scores[i])) for i in top]

        return await self._database.run(knn)

    async def text_search(
        self, kb: KnowledgeBase, query: str, k: int, document_ids: Sequence[str] | None = None
    ) -> list[RankedChunk]:
        def search() -> list[RankedChunk]:
            active = self._active(kb)
            if active is None or k <= 0:
                return []
            fts, analyzer = self._fts(active[0])
            expression = fts_query(query, analyzer)
            if not expression:
                return []
            columns = ", ".join("c." + c for c in _COLUMNS.split(", "))
            args: list[object] = [expression]
            if document_ids is None:
                # Rank inside the FTS table first (it holds this index only), then fetch k rows.
                sql = (
                    f"SELECT c.id, {columns}, f.rank FROM (SELECT rowid, bm25({fts}) AS rank FROM {fts} "
                    f"WHERE {fts} MATCH ? ORDER BY rank LIMIT ?) f JOIN chunks c ON c.id = f.rowid "
                    "ORDER BY f.rank"
                )
            else:
                sql = (
                    f"SELECT c.id, {columns}, bm25({fts}) AS rank FROM {fts} JOIN chunks c "
                    f"ON c.id = {fts}.rowid WHERE {fts} MATCH ? "
                    f"AND c.document_id IN ({','.join('?' * len(document_ids))}) ORDER BY rank LIMIT ?"
                )
                args += list(document_ids)
            args.append(k)
            try:
                rows = self._db.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                raise StoreError(f"text search failed: {exc}") from exc
            # FTS5's bm25() is negative, lower is better; report it as Elasticsearch does.
            return [RankedChunk(_record(r[1:8]), -float(r[8])) for r in rows]

        return await self._database.run(search)

    async def get_chunk(self, kb: KnowledgeBase, chunk_id: str) -> ChunkRecord | None:
        def get() -> ChunkRecord | None:
            active = self._active(kb)
            if active is None:
                return None
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM chunks WHERE index_name = ? AND chunk_id = ?", (active[0], chunk_id)
            ).fetchone()
            return _record(row) if row else None

        return await self._database.run(get)

    async def count(self, kb: KnowledgeBase, document_id: str | None = None) -> int:
        def count() -> int:
            active = self._active(kb)
            if active is None:
                return 0
            sql, args = "SELECT COUNT(*) FROM chunks WHERE index_name = ?", [active[0]]
            if document_id is not None:
                sql += " AND document_id = ?"
                args.append(document_id)
            return int(self._db.execute(sql, args).fetchone()[0])

        return await self._database.run(count)
