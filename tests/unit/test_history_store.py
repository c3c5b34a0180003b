"""What only the embedded history store does (kubechat.stores.sqlite.history.SQLiteHistoryStore): its file,
its migrations, restart handling and rows, and ties under a fake clock.

The behaviour every history store shares is tests/conformance/test_history_store.py's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from kubechat.stores.history import MessageStatus, Session
from kubechat.stores.sqlite import history
from kubechat.stores.sqlite.history import SQLiteHistoryStore


class FakeClock:
    """time.time() for the store: advances by one millisecond per call unless frozen."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.step = 0.001

    def time(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(history, "time", SimpleNamespace(time=fake.time))
    return fake


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "history.sqlite3"


@pytest.fixture
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteHistoryStore]:
    opened = await SQLiteHistoryStore.open(db_path)
    yield opened
    await opened.close()


async def _all_sessions(store: SQLiteHistoryStore, principal: str, limit: int) -> list[list[Session]]:
    pages, cursor = [], None
    while True:
        page = await store.list_sessions(principal, limit, cursor)
        pages.append(page.items)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def test_open_creates_the_folder_and_persists(db_path: Path, clock: FakeClock) -> None:
    """A store opened in a folder that does not exist yet keeps its data across reopening."""
    store = await SQLiteHistoryStore.open(db_path)
    await store.ping()
    session = await store.create_session("alice", "kept")
    await store.close()
    reopened = await SQLiteHistoryStore.open(db_path)
    try:
        assert await reopened.get_session("alice", session.id) == session
    finally:
        await reopened.close()


async def test_session_pages_with_equal_timestamps(store: SQLiteHistoryStore, clock: FakeClock) -> None:
    """Sessions updated at the same instant are still paged exactly once (ties broken by id)."""
    clock.step = 0.0
    created = {(await store.create_session("alice", f"s{i}")).id for i in range(5)}
    pages = await _all_sessions(store, "alice", limit=2)
    listed = [s.id for page in pages for s in page]
    assert len(listed) == 5
    assert set(listed) == created


async def test_reopening_interrupts_streaming_messages(db_path: Path, clock: FakeClock) -> None:
    """After a restart, answers that were streaming are INTERRUPTED with their checkpoint kept."""
    store = await SQLiteHistoryStore.open(db_path)
    session = await store.create_session("alice", "s")
    question = await store.add_message("alice", session.id, "user", "Tell me a story")
    answer = await store.add_message("alice", session.id, "assistant", "", status=MessageStatus.STREAMING)
    await store.update_message(answer.id, "Once upon a", MessageStatus.STREAMING)
    await store.close()

    reopened = await SQLiteHistoryStore.open(db_path)
    try:
        items = (await reopened.list_messages("alice", session.id, 10, None)).items
    finally:
        await reopened.close()
    assert [(m.id, m.status, m.content) for m in items] == [
        (question.id, MessageStatus.COMPLETE, "Tell me a story"),
        (answer.id, MessageStatus.INTERRUPTED, "Once upon a"),
    ]


async def test_deleting_a_session_deletes_its_message_rows(db_path: Path, clock: FakeClock) -> None:
    """The rows go by cascade, not just out of sight (what readers see is the conformance
    suite's test_deleting_a_session_deletes_its_messages)."""
    store = await SQLiteHistoryStore.open(db_path)
    doomed = await store.create_session("alice", "doomed")
    kept = await store.create_session("alice", "kept")
    for i in range(3):
        await store.add_message("alice", doomed.id, "user", f"m{i}")
    await store.add_message("alice", kept.id, "user", "stay")
    await store.delete_session("alice", doomed.id)
    await store.close()

    with sqlite3.connect(db_path) as raw:
        rows = raw.execute("SELECT session_id, content FROM messages").fetchall()
    assert rows == [(kept.id, "stay")]


async def test_a_database_from_before_sources_is_migrated(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db_path) as raw:  # the messages table as the first release created it
        raw.executescript(
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, principal TEXT NOT NULL, title TEXT NOT NULL, "
            "created_at REAL NOT NULL, updated_at REAL NOT NULL);"
            "CREATE TABLE messages (id TEXT PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions(id) "
            "ON DELETE CASCADE, seq INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, "
            "status TEXT NOT NULL, model TEXT NOT NULL, created_at REAL NOT NULL, prompt_tokens INTEGER "
            "NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0, error_code TEXT NOT NULL "
            "DEFAULT '', UNIQUE (session_id, seq));"
            "INSERT INTO sessions VALUES ('s1', 'alice', 'old', 1, 1);"
            "INSERT INTO messages VALUES ('m1', 's1', 1, 'user', 'kept', 'complete', '', 1, 0, 0, '');"
        )
    store = await SQLiteHistoryStore.open(db_path)
    (old,) = await store.recent_messages("alice", "s1", 10)
    assert (old.content, old.sources, old.images) == ("kept", [], [])
    user, reply = await store.start_exchange(
        "alice", "s1", "new", model="m", prompt_tokens=1, sources=[{"n": 1}], images=[{"id": "i"}]
    )
    *_, stored_user, stored_reply = await store.recent_messages("alice", "s1", 10)
    assert stored_reply.sources == [{"n": 1}] == reply.sources
    assert stored_user.images == [{"id": "i"}] == user.images
    await store.close()


async def test_a_late_checkpoint_leaves_a_finished_answer_as_it_is(store: SQLiteHistoryStore) -> None:
    """A checkpoint that lands after the answer's final state (a batch written as it ended)
    must not take the answer back to streaming nor shorten its text."""
    session = await store.create_session("alice", "s")
    answer = await store.add_message("alice", session.id, "assistant", "", status=MessageStatus.STREAMING)
    await store.update_message(answer.id, "Once upon a time", MessageStatus.COMPLETE, completion_tokens=4)
    await store.checkpoint({answer.id: "Once upon"})
    (stored,) = (await store.list_messages("alice", session.id, 10, None)).items
    assert (stored.content, stored.status) == ("Once upon a time", MessageStatus.COMPLETE)
