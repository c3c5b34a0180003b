"""One SQLite database used from asyncio: a connection owned by one dedicated thread.

Every embedded store (history, documents, chunks) runs each operation whole on that thread
(one hop per call, not one per statement), which keeps the event loop free. WAL journaling
keeps committed rows through a crash.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

R = TypeVar("R")


class SQLiteDatabase:
    def __init__(self, db: sqlite3.Connection, name: str) -> None:
        self.db = db
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    @classmethod
    async def open(cls, path: Path, schema: str, *, durable: bool = False) -> SQLiteDatabase:
        """`durable`: every commit survives a power loss too (one fsync per commit), for what
        has been acknowledged to a client, like an upload."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit per statement; multi-statement writes use transaction().
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        database = cls(connection, path.stem)

        def setup() -> None:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            connection.executescript(schema)

        await database.run(setup)
        return database

    async def run(self, function: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """On the database thread: both writes or neither."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    async def close(self) -> None:
        await self.run(self.db.close)
        self._thread.shutdown(wait=True)
