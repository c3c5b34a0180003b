"""Embedded chat history: sessions and messages in one SQLite file."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kubechat.core.errors import SessionNotFoundError
from kubechat.core.pagination import (
    Page,
    page_of,
    parse_seq_cursor,
    parse_time_cursor,
    seq_cursor,
    time_cursor,
)
from kubechat.stores.history import Message, MessageStatus, Session
from kubechat.stores.sqlite.database import SQLiteDatabase

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_principal ON sessions (principal, updated_at DESC, id);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    status TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at REAL NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    error_code TEXT NOT NULL DEFAULT '',
    sources TEXT NOT NULL DEFAULT '[]',
    images TEXT NOT NULL DEFAULT '[]',
    tool_calls TEXT NOT NULL DEFAULT '[]',
    attribution TEXT NOT NULL DEFAULT '[]',
    UNIQUE (session_id, seq)
);
"""

_MESSAGE_COLUMNS = (
    "id, session_id, seq, role, content, status, model, created_at, "
    "prompt_tokens, completion_tokens, error_code, sources, images, tool_calls, attribution"
)


def _message(row: tuple[Any, ...]) -> Message:
    return Message(
        id=row[0], session_id=row[1], seq=row[2], role=row[3], content=row[4],
        status=MessageStatus(row[5]), model=row[6], created_at=row[7],
        prompt_tokens=row[8], completion_tokens=row[9], error_code=row[10], sources=json.loads(row[11]),
        images=json.loads(row[12]), tool_calls=json.loads(row[13]), attribution=json.loads(row[14]),
    )  # fmt: skip


class SQLiteHistoryStore:
    """Embedded history: one SQLite file, one row per message (see kubechat.stores.sqlite.database)."""

    def __init__(self, database: SQLiteDatabase) -> None:
        self._database = database
        self._db = database.db
        self._run = database.run
        self._transaction = database.transaction

    @classmethod
    async def open(cls, path: Path) -> SQLiteHistoryStore:
        store = cls(await SQLiteDatabase.open(path, _SCHEMA))
        await store._run(store._migrate)
        # Answers that were streaming when a previous process died keep what was checkpointed.
        await store._run(
            store._db.execute,
            "UPDATE messages SET status = ? WHERE status = ?",
            (MessageStatus.INTERRUPTED, MessageStatus.STREAMING),
        )
        return store

    def _migrate(self) -> None:
        """Columns added after a database was created (CREATE TABLE IF NOT EXISTS skips them)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
        if "sources" not in columns:
            self._db.execute("ALTER TABLE messages ADD COLUMN sources TEXT NOT NULL DEFAULT '[]'")
        for column in ("images", "tool_calls", "attribution"):
            if column not in columns:
                self._db.execute(f"ALTER TABLE messages ADD COLUMN {column} TEXT NOT NULL DEFAULT '[]'")

    async def close(self) -> None:
        await self._database.close()

    async def ping(self) -> None:
        await self._run(self._db.execute, "SELECT 1")

    async def create_session(self, principal: str, title: str) -> Session:
        now = time.time()
        session = Session(uuid.uuid4().hex, principal, title, now, now)
        await self._run(
            self._db.execute,
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
            (session.id, principal, title, now, now),
        )
        return session

    async def get_session(self, principal: str, session_id: str) -> Session:
        return await self._run(self._get_session, principal, session_id)

    def _get_session(self, principal: str, session_id: str) -> Session:
        row = self._db.execute(
            "SELECT id, principal, title, created_at, updated_at FROM sessions "
            "WHERE id = ? AND principal = ?",
            (session_id, principal),
        ).fetchone()
        # Another principal's session is indistinguishable from a missing one.
        if row is None:
            raise SessionNotFoundError(f"session {session_id} not found")
        return Session(*row)

    async def list_sessions(self, principal: str, limit: int, cursor: str | None) -> Page[Session]:
        query = "SELECT id, principal, title, created_at, updated_at FROM sessions WHERE principal = ?"
        args: list[object] = [principal]
        if cursor:
            updated, last_id = parse_time_cursor(cursor)
            query += " AND (updated_at < ? OR (updated_at = ? AND id > ?))"
            args += [updated, updated, last_id]
        query += " ORDER BY updated_at DESC, id LIMIT ?"
        args.append(limit + 1)
        rows = await self._run(lambda: self._db.execute(query, args).fetchall())
        sessions = [Session(*row) for row in rows]
        return page_of(sessions, limit, lambda last: time_cursor(last.updated_at, last.id))

    async def rename_session(self, principal: str, session_id: str, title: str) -> Session:
        def rename() -> Session:
            self._get_session(principal, session_id)
            self._db.execute(
                "UPDATE sessions SET title = ?, updated_at = ? WHERE id = ?",
                (title, time.time(), session_id),
            )
            return self._get_session(principal, session_id)

        return await self._run(rename)

    async def delete_session(self, principal: str, session_id: str) -> None:
        def delete() -> None:
            self._get_session(principal, session_id)
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

        await self._run(delete)

    async def add_message(
        self,
        principal: str,
        session_id: str,
        role: str,
        content: str,
        *,
        model: str = "",
        status: MessageStatus = MessageStatus.COMPLETE,
        prompt_tokens: int = 0,
    ) -> Message:
        def add() -> Message:
            self._get_session(principal, session_id)
            with self._transaction():
                return self._insert(session_id, role, content, model, status, prompt_tokens)

        return await self._run(add)

    async def start_exchange(
        self,
        principal: str,
        session_id: str,
        content: str,
        *,
        model: str,
        prompt_tokens: int,
        sources: Sequence[Mapping[str, Any]] = (),
        images: Sequence[Mapping[str, Any]] = (),
    ) -> tuple[Message, Message]:
        def start() -> tuple[Message, Message]:
            self._get_session(principal, session_id)
            with self._transaction():  # both rows or neither
                user = self._insert(session_id, "user", content, "", MessageStatus.COMPLETE, 0, images=images)
                reply = self._insert(
                    session_id, "assistant", "", model, MessageStatus.STREAMING, prompt_tokens, sources
                )
            return user, reply

        return await self._run(start)

    def _insert(
        self,
        session_id: str,
        role: str,
        content: str,
        model: str,
        status: MessageStatus,
        prompt_tokens: int,
        sources: Sequence[Mapping[str, Any]] = (),
        images: Sequence[Mapping[str, Any]] = (),
    ) -> Message:
        now = time.time()
        message_id = uuid.uuid4().hex
        (seq,) = self._db.execute(
            f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, "
            "(SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = ?), "
            "?, ?, ?, ?, ?, ?, 0, '', ?, ?, '[]', '[]') RETURNING seq",
            (
                message_id,
                session_id,
                session_id,
                role,
                content,
                status,
                model,
                now,
                prompt_tokens,
                json.dumps(list(sources), ensure_ascii=False),
                json.dumps(list(images), ensure_ascii=False),
            ),
        ).fetchone()
        self._db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, session_id))
        return Message(
            id=message_id, session_id=session_id, seq=seq, role=role, content=content,
            status=status, model=model, created_at=now, prompt_tokens=prompt_tokens,
            sources=[dict(s) for s in sources], images=[dict(i) for i in images],
        )  # fmt: skip

    async def update_message(
        self,
        message_id: str,
        content: str,
        status: MessageStatus,
        *,
        completion_tokens: int = 0,
        error_code: str = "",
    ) -> None:
        await self._run(
            self._db.execute,
            "UPDATE messages SET content = ?, status = ?, completion_tokens = ?, error_code = ? WHERE id = ?",
            (content, status, completion_tokens, error_code, message_id),
        )

    async def checkpoint(self, texts: Mapping[str, str]) -> None:
        rows = [(content, message_id) for message_id, content in texts.items()]

        def write() -> None:
            with self._transaction():
                self._db.executemany(
                    "UPDATE messages SET content = ? WHERE id = ? AND status = 'streaming'", rows
                )

        await self._run(write)

    async def set_context(
        self, message_id: str, prompt_tokens: int, sources: Sequence[Mapping[str, Any]]
    ) -> None:
        await self._run(
            self._db.execute,
            "UPDATE messages SET prompt_tokens = ?, sources = ? WHERE id = ?",
            (prompt_tokens, json.dumps(list(sources), ensure_ascii=False), message_id),
        )

    async def set_images(self, message_id: str, images: Sequence[Mapping[str, Any]]) -> None:
        await self._run(
            self._db.execute,
            "UPDATE messages SET images = ? WHERE id = ?",
            (json.dumps(list(images), ensure_ascii=False), message_id),
        )

    async def set_tool_calls(self, message_id: str, calls: Sequence[Mapping[str, Any]]) -> None:
        await self._run(
            self._db.execute,
            "UPDATE messages SET tool_calls = ? WHERE id = ?",
            (json.dumps(list(calls), ensure_ascii=False), message_id),
        )

    async def set_attribution(self, message_id: str, attribution: Sequence[Mapping[str, Any]]) -> None:
        await self._run(
            self._db.execute,
            "UPDATE messages SET attribution = ? WHERE id = ?",
            (json.dumps(list(attribution), ensure_ascii=False), message_id),
        )

    async def list_messages(
        self, principal: str, session_id: str, limit: int, cursor: str | None
    ) -> Page[Message]:
        after = parse_seq_cursor(cursor) if cursor else 0

        def select() -> list[Message]:
            self._get_session(principal, session_id)
            rows = self._db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (session_id, after, limit + 1),
            ).fetchall()
            return [_message(row) for row in rows]

        messages = await self._run(select)
        return page_of(messages, limit, lambda last: seq_cursor(last.seq))

    async def recent_messages(self, principal: str, session_id: str, limit: int) -> list[Message]:
        def select() -> list[Message]:
            self._get_session(principal, session_id)
            rows = self._db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? ORDER BY seq DESC LIMIT ?",
                (session_id, limit),
            ).fetchall()
            return [_message(row) for row in rows[::-1]]

        return await self._run(select)
