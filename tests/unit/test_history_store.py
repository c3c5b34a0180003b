"""Tests of the embedded history store (kubechat.api.history.SQLiteHistoryStore)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from kubechat.api import history
from kubechat.api.errors import InvalidRequestError, SessionNotFoundError
from kubechat.api.history import Message, MessageStatus, Session, SQLiteHistoryStore


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


async def _all_messages(
    store: SQLiteHistoryStore, principal: str, session_id: str, limit: int
) -> list[list[Message]]:
    pages, cursor = [], None
    while True:
        page = await store.list_messages(principal, session_id, limit, cursor)
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


async def test_session_round_trip(store: SQLiteHistoryStore) -> None:
    """A created session is found by its principal with the same fields."""
    created = await store.create_session("alice", "Trip plans")
    assert await store.get_session("alice", created.id) == created
    assert (created.principal, created.title) == ("alice", "Trip plans")


@pytest.mark.parametrize(
    "operation",
    [
        lambda s, sid: s.get_session("bob", sid),
        lambda s, sid: s.rename_session("bob", sid, "mine now"),
        lambda s, sid: s.delete_session("bob", sid),
        lambda s, sid: s.add_message("bob", sid, "user", "hi"),
        lambda s, sid: s.list_messages("bob", sid, 10, None),
        lambda s, sid: s.recent_messages("bob", sid, 10),
    ],
    ids=["get", "rename", "delete", "add_message", "list_messages", "recent_messages"],
)
async def test_other_principals_session_is_not_found(
    store: SQLiteHistoryStore, operation: Callable[[SQLiteHistoryStore, str], Awaitable[object]]
) -> None:
    """Every operation on another principal's session fails as if it did not exist."""
    created = await store.create_session("alice", "private")
    await store.add_message("alice", created.id, "user", "secret")
    session = await store.get_session("alice", created.id)
    with pytest.raises(SessionNotFoundError):
        await operation(store, session.id)
    # ...and leaves alice's session untouched.
    assert await store.get_session("alice", session.id) == session
    messages = await store.list_messages("alice", session.id, 10, None)
    assert [m.content for m in messages.items] == ["secret"]


async def test_sessions_are_listed_per_principal(store: SQLiteHistoryStore) -> None:
    """list_sessions shows only the caller's sessions."""
    mine = {(await store.create_session("alice", f"a{i}")).id for i in range(3)}
    await store.create_session("bob", "b0")
    page = await store.list_sessions("alice", 10, None)
    assert {s.id for s in page.items} == mine
    assert page.next_cursor is None
    assert (await store.list_sessions("carol", 10, None)).items == []


async def test_unknown_session_is_not_found(store: SQLiteHistoryStore) -> None:
    """A session id that never existed raises SessionNotFoundError."""
    with pytest.raises(SessionNotFoundError):
        await store.get_session("alice", "0" * 32)


async def test_session_pages_cover_every_session_once_newest_first(store: SQLiteHistoryStore) -> None:
    """Paging with next_cursor visits each session exactly once, most recently updated first."""
    created = [await store.create_session("alice", f"s{i}") for i in range(7)]
    pages = await _all_sessions(store, "alice", limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    listed = [s.id for page in pages for s in page]
    assert listed == [s.id for s in reversed(created)]


async def test_session_pages_with_equal_timestamps(store: SQLiteHistoryStore, clock: FakeClock) -> None:
    """Sessions updated at the same instant are still paged exactly once (ties broken by id)."""
    clock.step = 0.0
    created = {(await store.create_session("alice", f"s{i}")).id for i in range(5)}
    pages = await _all_sessions(store, "alice", limit=2)
    listed = [s.id for page in pages for s in page]
    assert len(listed) == 5
    assert set(listed) == created


async def test_activity_moves_a_session_to_the_top(store: SQLiteHistoryStore) -> None:
    """Adding a message or renaming bumps updated_at, so the session is listed first."""
    old = await store.create_session("alice", "old")
    new = await store.create_session("alice", "new")
    await store.add_message("alice", old.id, "user", "hello again")
    assert [s.id for s in (await store.list_sessions("alice", 10, None)).items] == [old.id, new.id]
    renamed = await store.rename_session("alice", new.id, "renamed")
    assert renamed.title == "renamed"
    assert renamed.updated_at > renamed.created_at
    assert [s.id for s in (await store.list_sessions("alice", 10, None)).items] == [new.id, old.id]


@pytest.mark.parametrize("cursor", ["not-a-cursor", "abc:def", ":"])
async def test_invalid_session_cursor_is_rejected(store: SQLiteHistoryStore, cursor: str) -> None:
    """A cursor the store did not hand out is an InvalidRequestError (HTTP 400)."""
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        await store.list_sessions("alice", 10, cursor)


async def test_message_seq_increments_per_session(store: SQLiteHistoryStore) -> None:
    """Messages are numbered 1, 2, 3... within their own session."""
    first = await store.create_session("alice", "one")
    second = await store.create_session("alice", "two")
    seqs = [(await store.add_message("alice", first.id, "user", f"m{i}")).seq for i in range(3)]
    other = await store.add_message("alice", second.id, "user", "x")
    assert seqs == [1, 2, 3]
    assert other.seq == 1


async def test_add_message_returns_what_was_stored(store: SQLiteHistoryStore) -> None:
    """add_message returns the stored row with its defaults filled in."""
    session = await store.create_session("alice", "s")
    message = await store.add_message(
        "alice", session.id, "assistant", "", model="smollm2", status=MessageStatus.STREAMING,
        prompt_tokens=42,
    )  # fmt: skip
    assert message.session_id == session.id
    assert (message.role, message.content, message.model) == ("assistant", "", "smollm2")
    assert message.status is MessageStatus.STREAMING
    assert (message.prompt_tokens, message.completion_tokens, message.error_code) == (42, 0, "")


async def test_message_pages_cover_every_message_once_in_order(store: SQLiteHistoryStore) -> None:
    """Paging messages with next_cursor yields each one once, oldest first."""
    session = await store.create_session("alice", "long")
    for i in range(8):
        await store.add_message("alice", session.id, "user" if i % 2 == 0 else "assistant", f"m{i}")
    pages = await _all_messages(store, "alice", session.id, limit=3)
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [m.content for page in pages for m in page] == [f"m{i}" for i in range(8)]
    assert [m.seq for page in pages for m in page] == list(range(1, 9))


async def test_exact_page_boundary_has_no_next_cursor(store: SQLiteHistoryStore) -> None:
    """When the last page is exactly full there is no cursor to an empty page."""
    session = await store.create_session("alice", "four")
    for i in range(4):
        await store.add_message("alice", session.id, "user", f"m{i}")
    pages = await _all_messages(store, "alice", session.id, limit=2)
    assert [len(p) for p in pages] == [2, 2]


async def test_recent_messages_are_the_newest_in_order(store: SQLiteHistoryStore) -> None:
    """recent_messages returns the last N messages, oldest first (prompt order)."""
    session = await store.create_session("alice", "s")
    for i in range(5):
        await store.add_message("alice", session.id, "user", f"m{i}")
    recent = await store.recent_messages("alice", session.id, 3)
    assert [m.content for m in recent] == ["m2", "m3", "m4"]


@pytest.mark.parametrize("cursor", ["abc", "1.5", "3:x"])
async def test_invalid_message_cursor_is_rejected(store: SQLiteHistoryStore, cursor: str) -> None:
    """A message cursor that is not a sequence number is an InvalidRequestError."""
    session = await store.create_session("alice", "s")
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        await store.list_messages("alice", session.id, 10, cursor)


async def test_update_message_persists(store: SQLiteHistoryStore) -> None:
    """update_message stores the new content, status, token count and error code."""
    session = await store.create_session("alice", "s")
    message = await store.add_message("alice", session.id, "assistant", "", status=MessageStatus.STREAMING)
    await store.update_message(
        message.id, "partial answer", MessageStatus.FAILED, completion_tokens=7,
        error_code="model_unavailable",
    )  # fmt: skip
    (stored,) = (await store.list_messages("alice", session.id, 10, None)).items
    assert stored.id == message.id
    assert (stored.content, stored.status) == ("partial answer", MessageStatus.FAILED)
    assert (stored.completion_tokens, stored.error_code) == (7, "model_unavailable")


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


async def test_deleting_a_session_deletes_its_messages(db_path: Path, clock: FakeClock) -> None:
    """delete_session removes the session and, by cascade, every message row it had."""
    store = await SQLiteHistoryStore.open(db_path)
    doomed = await store.create_session("alice", "doomed")
    kept = await store.create_session("alice", "kept")
    for i in range(3):
        await store.add_message("alice", doomed.id, "user", f"m{i}")
    await store.add_message("alice", kept.id, "user", "stay")
    await store.delete_session("alice", doomed.id)
    with pytest.raises(SessionNotFoundError):
        await store.get_session("alice", doomed.id)
    with pytest.raises(SessionNotFoundError):
        await store.delete_session("alice", doomed.id)
    await store.close()

    with sqlite3.connect(db_path) as raw:
        rows = raw.execute("SELECT session_id, content FROM messages").fetchall()
    assert rows == [(kept.id, "stay")]


async def test_start_exchange_stores_question_and_streaming_answer(store: SQLiteHistoryStore) -> None:
    """The question and the empty answer it streams into are stored together, in order."""
    session = await store.create_session("alice", "chat")
    user, reply = await store.start_exchange("alice", session.id, "hello?", model="m", prompt_tokens=7)
    assert (user.role, user.status, user.seq) == ("user", MessageStatus.COMPLETE, 1)
    assert (reply.role, reply.status, reply.seq, reply.model) == (
        "assistant",
        MessageStatus.STREAMING,
        2,
        "m",
    )
    assert reply.prompt_tokens == 7
    stored = await store.recent_messages("alice", session.id, 10)
    assert stored == [user, reply]


async def test_start_exchange_in_another_principals_session_stores_nothing(
    store: SQLiteHistoryStore,
) -> None:
    session = await store.create_session("alice", "chat")
    with pytest.raises(SessionNotFoundError):
        await store.start_exchange("bob", session.id, "mine?", model="m", prompt_tokens=1)
    assert await store.recent_messages("alice", session.id, 10) == []


async def test_an_answer_keeps_its_sources(store: SQLiteHistoryStore) -> None:
    session = await store.create_session("alice", "chat")
    cited = [{"n": 1, "document_name": "runbook.pdf", "page": 2, "text": "Größe ✓"}]
    user, reply = await store.start_exchange(
        "alice", session.id, "where?", model="m", prompt_tokens=1, sources=cited
    )
    assert user.sources == [] and reply.sources == cited
    assert (await store.list_messages("alice", session.id, 10, None)).items == [user, reply]


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


async def test_a_question_keeps_its_images_and_what_was_said_about_them(store: SQLiteHistoryStore) -> None:
    session = await store.create_session("alice", "chat")
    attached = [{"id": "a" * 64, "name": "invoice.png", "description": ""}]
    user, reply = await store.start_exchange(
        "alice", session.id, "total?", model="m", prompt_tokens=1, images=attached
    )
    assert user.images == attached and reply.images == []
    described = [{**attached[0], "description": "Text (OCR):\nTotal 42 €"}]
    await store.set_images(user.id, described)
    stored_user, stored_reply = (await store.list_messages("alice", session.id, 10, None)).items
    assert stored_user.images == described and stored_reply.images == []


async def test_an_answer_keeps_its_tool_calls(store: SQLiteHistoryStore) -> None:
    session = await store.create_session("alice", "chat")
    _, reply = await store.start_exchange("alice", session.id, "add", model="m", prompt_tokens=1)
    calls = [{"id": "call_1", "name": "demo__add", "arguments": {"a": 2}, "ok": True, "content": "5"}]
    await store.set_tool_calls(reply.id, calls)
    *_, stored = (await store.list_messages("alice", session.id, 10, None)).items
    assert stored.tool_calls == calls
