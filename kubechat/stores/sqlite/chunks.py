"""The embedded chunk store: chunks and their vectors in SQLite, BM25 in tantivy beside it.

The chunks table is the source of truth. Each index's BM25 side is a tantivy index derived from
it (kubechat.stores.sqlite.text_index), rebuilt from the table when missing or stale (a
database from before tantivy, or a crash between the SQLite and the tantivy commit).

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
(1 + dot) / 2, l2_norm: 1 / (1 + d²)) and its BM25 (Lucene's, which tantivy implements) so that
both stores report comparable numbers.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kubechat.core.resources import IndexSpec, KnowledgeBase, Similarity
from kubechat.stores.chunks import ChunkRecord, RankedChunk, SpecDrift, Vector, check_vector
from kubechat.stores.errors import EmbeddingMismatchError, IndexMissingError, StoreError
from kubechat.stores.sqlite.database import SQLiteDatabase
from kubechat.stores.sqlite.text_index import TextIndex, query_words

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS indices (
    name TEXT PRIMARY KEY,
    alias TEXT NOT NULL,
    generation INTEGER NOT NULL,
    active INTEGER NOT NULL,
    embedding_model TEXT NOT NULL,
    dimensions INTEGER NOT NULL,
    similarity TEXT NOT NULL,
    analyzer TEXT NOT NULL,
    stemming INTEGER NOT NULL DEFAULT 0,
    text_synced INTEGER NOT NULL DEFAULT 0
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

# Before tantivy each index had an FTS5 table (`fts_<rowid of its indices row>`) kept in step
# with the chunks table by two triggers; `_migrate` drops them from older databases.
_LEGACY_FTS = "fts_{rowid}"

# The analyzer of the spec, as close as tantivy gets: `english` stems and drops Lucene's English
# stop words; a custom analyzer with a stemming filter stems too; anything else
# splits on Unicode word boundaries, as `standard` does.
_STEMMING_FILTERS = frozenset({"porter_stem", "stemmer", "kstem", "snowball"})


def stems(index: IndexSpec) -> bool:
    """Whether the spec's analyzer stems words (the text index is built accordingly)."""
    if index.analyzer == "english":
        return True
    custom = index.analyzers.get(index.analyzer)
    return custom is not None and bool(_STEMMING_FILTERS & set(custom.filter))


_COLUMNS = "chunk_id, document_id, document_name, ordinal, text, page, section"
_INSERT = f"INSERT INTO chunks (index_name, {_COLUMNS}, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _record(row: Sequence[Any]) -> ChunkRecord:
    return ChunkRecord(
        document_id=row[1], document_name=row[2], ordinal=row[3], text=row[4], page=row[5], section=row[6]
    )


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
    """Chunks and vectors in SQLite; BM25 in a tantivy index per chunk index under `text_dir`
    (derived from the chunks table, rebuilt from it when missing or stale).

    One process uses a store's files at a time (the vector matrices and text indices it keeps
    in memory follow its own writes only), as the embedded runtime runs.
    """

    def __init__(self, database: SQLiteDatabase, text_dir: Path | None = None) -> None:
        self._database = database
        self._db = database.db
        self._text_dir = text_dir
        self._matrices: dict[str, _Matrix] = {}
        self._texts: dict[str, TextIndex] = {}

    @classmethod
    async def open(cls, path: Path) -> SQLiteChunkStore:
        store = cls(await SQLiteDatabase.open(path, _SCHEMA), path.with_name(f"{path.stem}.tantivy"))
        await store._database.run(store._migrate)
        return store

    async def close(self) -> None:
        def close() -> None:
            for name in list(self._texts):
                self._commit_text(name)
                self._texts.pop(name).close()

        await self._database.run(close)
        await self._database.close()

    def _migrate(self) -> None:
        """Bring a database written by an older kubechat up to this schema, on the database thread.

        Before tantivy, BM25 lived in one FTS5 table per index kept by triggers: the stemming
        choice is read from its tokenizer, then the table and triggers go (their text is in the
        chunks table, and the text index is built from there on first use)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(indices)")}
        if "text_synced" in columns:
            return
        with self._database.transaction():
            self._db.execute("ALTER TABLE indices ADD COLUMN stemming INTEGER NOT NULL DEFAULT 0")
            self._db.execute("ALTER TABLE indices ADD COLUMN text_synced INTEGER NOT NULL DEFAULT 0")
            for rowid, name in self._db.execute("SELECT rowid, name FROM indices").fetchall():
                fts = _LEGACY_FTS.format(rowid=rowid)
                row = self._db.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (fts,)
                ).fetchone()
                stemming = row is not None and "porter" in str(row[0])
                self._db.execute("UPDATE indices SET stemming = ? WHERE rowid = ?", (int(stemming), rowid))
                self._db.execute(f"DROP TRIGGER IF EXISTS {fts}_ai")
                self._db.execute(f"DROP TRIGGER IF EXISTS {fts}_ad")
                self._db.execute(f"DROP TABLE IF EXISTS {fts}")
                logger.info("index %s: FTS5 table dropped; its text index is built on first use", name)

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
        self._db.execute(
            "INSERT INTO indices (name, alias, generation, active, embedding_model, dimensions, similarity, "
            "analyzer, stemming, text_synced) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (
                name, kb.index_alias, generation, int(active), kb.spec.embedding.model,
                kb.spec.embedding.dimensions, kb.spec.index.similarity.value, kb.spec.index.analyzer,
                int(stems(kb.spec.index)),
            ),
        )  # fmt: skip
        self._discard_text(name, files=True)  # leftovers of an index of that name, if any
        return name

    def _drop_index(self, name: str) -> None:
        """On the database thread, in a transaction: the index, its chunks, its text index."""
        self._db.execute("DELETE FROM chunks WHERE index_name = ?", (name,))
        self._db.execute("DELETE FROM indices WHERE name = ?", (name,))
        self._discard_text(name, files=True)

    # -- the text index ---------------------------------------------------------------------

    def _text_folder(self, index: str) -> Path | None:
        # Index names are RFC 1123 labels, dots and digits: safe as folder names.
        return None if self._text_dir is None else self._text_dir / index

    def _text(self, index: str) -> TextIndex:
        """The text index of `index`, opened (or rebuilt from the chunks table) on first use."""
        text = self._texts.get(index)
        if text is not None:
            return text
        stemming, synced, analyzer = self._db.execute(
            "SELECT stemming, text_synced, analyzer FROM indices WHERE name = ?", (index,)
        ).fetchone()
        analysis = {"stemming": bool(stemming), "stop_words": analyzer == "english"}
        folder = self._text_folder(index)
        (count,) = self._db.execute("SELECT COUNT(*) FROM chunks WHERE index_name = ?", (index,)).fetchone()
        if synced and folder is not None and folder.is_dir():
            try:
                text = TextIndex(folder, **analysis)
            except ValueError:
                logger.warning("index %s: text index unreadable, rebuilding it", index, exc_info=True)
            else:
                if text.count == count:
                    self._texts[index] = text
                    return text
                logger.warning(
                    "index %s: text index holds %d chunks of %d, rebuilding it", index, text.count, count
                )
                text.close()
        return self._rebuild_text(index, analysis, folder)

    def _rebuild_text(self, index: str, analysis: dict[str, bool], folder: Path | None) -> TextIndex:
        text = TextIndex(folder, **analysis, fresh=True)
        rows = self._db.execute("SELECT id, document_id, text FROM chunks WHERE index_name = ?", (index,))
        text.add((int(r[0]), str(r[1]), str(r[2])) for r in rows)
        text.commit()
        self._db.execute("UPDATE indices SET text_synced = 1 WHERE name = ?", (index,))
        self._texts[index] = text
        logger.info("index %s: text index built (%d chunks)", index, text.count)
        return text

    def _commit_text(self, index: str) -> None:
        """Make the text index's pending writes searchable, then record it as in step."""
        text = self._texts.get(index)
        if text is None:
            return
        try:
            text.commit()
        except BaseException:
            self._discard_text(index)  # still marked stale: rebuilt on next use
            raise
        self._db.execute("UPDATE indices SET text_synced = 1 WHERE name = ?", (index,))

    def _discard_text(self, index: str, *, files: bool = False) -> None:
        text = self._texts.pop(index, None)
        if text is not None:
            text.close()
        folder = self._text_folder(index)
        if files and folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def _write_text(self, index: str, write: Callable[[TextIndex], None]) -> None:
        """Apply a write to the text index of `index` after its SQLite transaction committed (which
        marked it stale); a failure discards the open index, so the next use rebuilds it."""
        text = self._text(index)
        try:
            write(text)
        except BaseException:
            self._discard_text(index)
            raise

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
            self._commit_text(index)  # a re-index writes unrefreshed batches
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
        # Vectors are searchable once the SQLite transaction commits; text once the text index
        # commits, which `visible=False` leaves to make_visible (a tantivy commit syncs files).
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
            # A chunk twice in one batch: the last one wins, as in an Elasticsearch bulk request (and
            # every id deleted below is then one the text index already holds).
            rows = list({row[1]: row for row in rows}.values())
            self._text(index)  # built (if it must be) before this write, which it then follows
            replaced: list[int] = []
            added: list[tuple[int, str, str]] = []
            with self._database.transaction():
                self._db.execute("UPDATE indices SET text_synced = 0 WHERE name = ?", (index,))
                for row in rows:
                    found = self._db.execute(
                        "DELETE FROM chunks WHERE index_name = ? AND chunk_id = ? RETURNING id", row[:2]
                    ).fetchone()
                    if found is not None:
                        replaced.append(int(found[0]))
                    cursor = self._db.execute(_INSERT, row)
                    added.append((int(cursor.lastrowid or 0), row[2], row[5]))
            self._matrices.pop(index, None)

            def write(text: TextIndex) -> None:
                text.delete(replaced)
                text.add(added)

            self._write_text(index, write)
            if visible:
                self._commit_text(index)

        await self._database.run(upsert)

    async def make_visible(self, index: str) -> None:
        await self._database.run(self._commit_text, index)

    async def delete_document(self, index: str, document_id: str) -> None:
        def delete() -> None:
            if self._db.execute("SELECT 1 FROM indices WHERE name = ?", (index,)).fetchone() is None:
                return
            self._text(index)
            with self._database.transaction():
                self._db.execute("UPDATE indices SET text_synced = 0 WHERE name = ?", (index,))
                self._db.execute(
                    "DELETE FROM chunks WHERE index_name = ? AND document_id = ?", (index, document_id)
                )
            self._matrices.pop(index, None)
            self._write_text(index, lambda text: text.delete_document(document_id))
            self._commit_text(index)

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
            index = active[0]
            (analyzer,) = self._db.execute("SELECT analyzer FROM indices WHERE name = ?", (index,)).fetchone()
            words = query_words(query, str(analyzer))
            if not words:
                return []
            try:
                hits = self._text(index).search(words, k, document_ids)
            except ValueError as exc:
                raise StoreError(f"text search failed: {exc}") from exc
            records = self._records([chunk_id for chunk_id, _ in hits])
            return [RankedChunk(records[chunk_id], score) for chunk_id, score in hits if chunk_id in records]

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
