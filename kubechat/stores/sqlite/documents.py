"""The embedded document catalog: one durable SQLite file."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from kubechat.core.errors import DocumentNotFoundError
from kubechat.core.pagination import Page, page_of, parse_time_cursor, time_cursor
from kubechat.stores.documents import PENDING, PROGRESS_FIELDS, Document, DocumentStatus
from kubechat.stores.sqlite.database import SQLiteDatabase

_COLUMNS = [f.name for f in fields(Document)]
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM documents"
_INSERT = f"INSERT INTO documents ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    knowledge_base TEXT NOT NULL,
    name TEXT NOT NULL,
    format TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    object_key TEXT NOT NULL,
    uploaded_by TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    chunks INTEGER NOT NULL DEFAULT 0,
    chunks_indexed INTEGER NOT NULL DEFAULT 0,
    pages INTEGER,
    error_code TEXT NOT NULL DEFAULT '',
    error_message TEXT NOT NULL DEFAULT '',
    indexed_at REAL,
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_expires REAL NOT NULL DEFAULT 0,
    epoch INTEGER NOT NULL DEFAULT 0,
    UNIQUE (knowledge_base, sha256)
);
CREATE INDEX IF NOT EXISTS documents_by_kb ON documents (knowledge_base, created_at, id);
CREATE INDEX IF NOT EXISTS documents_by_status ON documents (status, created_at);
CREATE TABLE IF NOT EXISTS rebuilds (
    knowledge_base TEXT PRIMARY KEY,
    index_name TEXT NOT NULL
);
"""


def _document(row: tuple[Any, ...]) -> Document:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["status"] = DocumentStatus(values["status"])
    return Document(**values)


class SQLiteDocumentCatalog:
    def __init__(self, database: SQLiteDatabase) -> None:
        self._database = database
        self._db = database.db

    @classmethod
    async def open(cls, path: Path) -> SQLiteDocumentCatalog:
        # Durable: a `queued` row stands for an acknowledged upload.
        catalog = cls(await SQLiteDatabase.open(path, _SCHEMA, durable=True))
        # One process owns an embedded catalog: leases of a previous run are void.
        await catalog._database.run(
            catalog._db.execute, "UPDATE documents SET lease_owner = '', lease_expires = 0"
        )
        return catalog

    async def close(self) -> None:
        await self._database.close()

    async def add(self, document: Document) -> tuple[Document, bool]:
        def add() -> tuple[Document, bool]:
            with self._database.transaction():
                row = self._db.execute(
                    f"{_SELECT} WHERE knowledge_base = ? AND sha256 = ?",
                    (document.knowledge_base, document.sha256),
                ).fetchone()
                if row is not None:
                    return _document(row), False
                values = [getattr(document, c) for c in _COLUMNS]
                self._db.execute(_INSERT, values)
                return document, True

        return await self._database.run(add)

    async def get(self, knowledge_base: str, document_id: str) -> Document:
        def get() -> Document:
            row = self._db.execute(
                f"{_SELECT} WHERE knowledge_base = ? AND id = ?",
                (knowledge_base, document_id),
            ).fetchone()
            if row is None:
                raise DocumentNotFoundError(f"document {document_id} not found in {knowledge_base}")
            return _document(row)

        return await self._database.run(get)

    async def find(self, document_id: str) -> Document | None:
        row = await self._database.run(
            lambda: self._db.execute(f"{_SELECT} WHERE id = ?", (document_id,)).fetchone()
        )
        return None if row is None else _document(row)

    async def list_documents(
        self, knowledge_base: str, limit: int, cursor: str | None, status: DocumentStatus | None = None
    ) -> Page[Document]:
        sql = f"{_SELECT} WHERE knowledge_base = ?"
        args: list[object] = [knowledge_base]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if cursor:
            created, last_id = parse_time_cursor(cursor)
            args += [created, created, last_id]
            sql += " AND (created_at > ? OR (created_at = ? AND id > ?))"
        sql += " ORDER BY created_at, id LIMIT ?"
        args.append(limit + 1)
        rows = await self._database.run(lambda: self._db.execute(sql, args).fetchall())
        documents = [_document(r) for r in rows]
        return page_of(documents, limit, lambda last: time_cursor(last.created_at, last.id))

    async def update(self, document_id: str, status: DocumentStatus, **progress: Any) -> None:
        unknown = set(progress) - PROGRESS_FIELDS
        if unknown:
            raise TypeError(f"not progress fields: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in ["status", "updated_at", *progress])
        await self._database.run(
            self._db.execute,
            f"UPDATE documents SET {assignments} WHERE id = ?",
            [status, time.time(), *progress.values(), document_id],
        )

    async def requeue(self, knowledge_base: str, document_ids: list[str] | None = None) -> int:
        sql = (
            "UPDATE documents SET status = ?, updated_at = ?, chunks_indexed = 0, error_code = '', "
            "error_message = '', epoch = epoch + 1 WHERE knowledge_base = ? AND status != 'deleting'"
        )
        args: list[object] = [DocumentStatus.QUEUED, time.time(), knowledge_base]
        if document_ids is not None:
            sql += f" AND id IN ({', '.join('?' * len(document_ids))})"
            args += document_ids
        return await self._database.run(lambda: self._db.execute(sql, args).rowcount)

    async def claim(self, document_id: str, worker: str, lease_s: float) -> Document | None:
        def claim() -> Document | None:
            now = time.time()
            row = self._db.execute(
                "UPDATE documents SET lease_owner = ?, lease_expires = ? "
                "WHERE id = ? AND status IN (?, ?, ?) AND (lease_owner IN ('', ?) OR lease_expires < ?) "
                f"RETURNING {', '.join(_COLUMNS)}",
                (worker, now + lease_s, document_id, *PENDING, worker, now),
            ).fetchone()
            return None if row is None else _document(row)

        return await self._database.run(claim)

    async def release(self, document_id: str, worker: str) -> None:
        await self._database.run(
            self._db.execute,
            "UPDATE documents SET lease_owner = '', lease_expires = 0 WHERE id = ? AND lease_owner = ?",
            (document_id, worker),
        )

    async def pending(self) -> list[Document]:
        rows = await self._database.run(
            lambda: self._db.execute(
                f"{_SELECT} WHERE status IN (?, ?, ?) AND (lease_owner = '' OR lease_expires < ?) "
                "ORDER BY created_at",
                (*PENDING, time.time()),
            ).fetchall()
        )
        return [_document(r) for r in rows]

    async def count_pending(self, knowledge_base: str) -> int:
        row = await self._database.run(
            lambda: self._db.execute(
                "SELECT COUNT(*) FROM documents WHERE knowledge_base = ? AND status IN (?, ?, ?)",
                (knowledge_base, *PENDING),
            ).fetchone()
        )
        return int(row[0])

    async def status_counts(self, knowledge_base: str) -> dict[str, int]:
        rows = await self._database.run(
            lambda: self._db.execute(
                "SELECT status, COUNT(*) FROM documents WHERE knowledge_base = ? GROUP BY status",
                (knowledge_base,),
            ).fetchall()
        )
        return {str(status): int(count) for status, count in rows}

    async def delete(self, document_id: str) -> None:
        await self._database.run(self._db.execute, "DELETE FROM documents WHERE id = ?", (document_id,))

    async def set_rebuild(self, knowledge_base: str, index: str | None) -> None:
        if index is None:
            await self._database.run(
                self._db.execute, "DELETE FROM rebuilds WHERE knowledge_base = ?", (knowledge_base,)
            )
        else:
            await self._database.run(
                self._db.execute, "INSERT OR REPLACE INTO rebuilds VALUES (?, ?)", (knowledge_base, index)
            )

    async def rebuilds(self) -> dict[str, str]:
        rows = await self._database.run(
            lambda: self._db.execute("SELECT knowledge_base, index_name FROM rebuilds").fetchall()
        )
        return {str(kb): str(index) for kb, index in rows}
