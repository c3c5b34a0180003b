"""One behaviour for every HistoryStore: isolation per principal, ordering, pagination, messages.

Runs on SQLite and, with a live cluster (`KUBECHAT_TEST_ES_URL`, which the kind e2e sets), on
Elasticsearch. What only one store does (SQLite's migrations and restart handling, the requests
sent to Elasticsearch) is in tests/unit/test_history_store.py and test_elasticsearch_history.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from elasticsearch import AsyncElasticsearch

from kubechat.core.errors import InvalidRequestError, SessionNotFoundError
from kubechat.stores.history import HistoryStore, Message, MessageStatus, Session
from kubechat.stores.sqlite.history import SQLiteHistoryStore

ES_URL = os.environ.get("KUBECHAT_TEST_ES_URL", "")
Opener = Callable[[], Awaitable[HistoryStore]]


@pytest.fixture(params=["sqlite", "elasticsearch"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens the same store again each call (as a restarted or second API process would)."""
    opened: list[HistoryStore] = []
    clients: list[AsyncElasticsearch] = []

    async def open_sqlite() -> HistoryStore:
        opened.append(await SQLiteHistoryStore.open(tmp_path / "history.sqlite3"))
        return opened[-1]

    opener: Opener = open_sqlite
    if request.param == "elasticsearch":
        if not ES_URL:
            pytest.skip("needs a live Elasticsearch: set KUBECHAT_TEST_ES_URL (the kind e2e does)")
        from elasticsearch import Elasticsearch

        from kubechat.stores.elasticsearch.client import new_client
        from kubechat.stores.elasticsearch.history import ElasticsearchHistoryStore

        index = f"kubechat-history-test-{os.urandom(6).hex()}"

        async def open_elasticsearch() -> HistoryStore:
            client = new_client(ES_URL)  # each opening is a process of its own, with its client
            store = ElasticsearchHistoryStore(client, index)
            await store.ensure_index(replicas=0)
            opened.append(store)
            clients.append(client)
            return store

        def drop_index() -> None:  # runs after the stores are closed
            with Elasticsearch(ES_URL) as client:
                client.indices.delete(index=index, ignore_unavailable=True)

        request.addfinalizer(drop_index)
        opener = open_elasticsearch
    yield opener
    for store in opened:
        await store.close()
    for client in clients:
        await client.close()


@pytest.fixture
async def store(open_store: Opener) -> HistoryStore:
    return await open_store()


async def _all_sessions(store: HistoryStore, principal: str, limit: int) -> list[list[Session]]:
    pages, cursor = [], None
    while True:
        page = await store.list_sessions(principal, limit, cursor)
        pages.append(page.items)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def _all_messages(
    store: HistoryStore, principal: str, session_id: str, limit: int
) -> list[list[Message]]:
    pages, cursor = [], None
    while True:
        page = await store.list_messages(principal, session_id, limit, cursor)
        pages.append(page.items)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def test_sessions_and_messages_survive_a_reopen(open_store: Opener) -> None:
    """What one process stored, another (or the same, restarted) reads back unchanged."""
    store = await open_store()
    await store.ping()
    session = await store.create_session("alice", "kept")
    user, _ = await store.start_exchange("alice", session.id, "hi", model="m", prompt_tokens=1)
    reopened = await open_store()
    await reopened.ping()
    assert await reopened.get_session("alice", session.id) == await store.get_session("alice", session.id)
    assert (await reopened.recent_messages("alice", session.id, 1))[0].seq == 2
    assert (await reopened.list_messages("alice", session.id, 1, None)).items == [user]


async def test_session_round_trip(store: HistoryStore) -> None:
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
    store: HistoryStore, operation: Callable[[HistoryStore, str], Awaitable[object]]
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


async def test_sessions_are_listed_per_principal(store: HistoryStore) -> None:
    """list_sessions shows only the caller's sessions."""
    mine = {(await store.create_session("alice", f"a{i}")).id for i in range(3)}
    await store.create_session("bob", "b0")
    page = await store.list_sessions("alice", 10, None)
    assert {s.id for s in page.items} == mine
    assert page.next_cursor is None
    assert (await store.list_sessions("carol", 10, None)).items == []


async def test_unknown_session_is_not_found(store: HistoryStore) -> None:
    """A session id that never existed raises SessionNotFoundError."""
    with pytest.raises(SessionNotFoundError):
        await store.get_session("alice", "0" * 32)


async def test_session_pages_cover_every_session_once_newest_first(store: HistoryStore) -> None:
    """Paging with next_cursor visits each session exactly once, most recently updated first."""
    created = [await store.create_session("alice", f"s{i}") for i in range(7)]
    pages = await _all_sessions(store, "alice", limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    listed = [s.id for page in pages for s in page]
    assert listed == [s.id for s in reversed(created)]


async def test_activity_moves_a_session_to_the_top(store: HistoryStore) -> None:
    """Adding a message or renaming bumps updated_at, so the session is listed first."""
    old = await store.create_session("alice", "old")
    new = await store.create_session("alice", "new")
    await store.add_message("alice", old.id, "user", "hello again")
    assert [s.id for s in (await store.list_sessions("alice", 10, None)).items] == [old.id, new.id]
    renamed = await store.rename_session("alice", new.id, "renamed")
    assert renamed.title == "renamed"
    assert renamed.updated_at > renamed.created_at
    assert await store.get_session("alice", new.id) == renamed
    assert [s.id for s in (await store.list_sessions("alice", 10, None)).items] == [new.id, old.id]


@pytest.mark.parametrize("cursor", ["not-a-cursor", "abc:def", ":"])
async def test_invalid_session_cursor_is_rejected(store: HistoryStore, cursor: str) -> None:
    """A cursor the store did not hand out is an InvalidRequestError (HTTP 400)."""
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        await store.list_sessions("alice", 10, cursor)


async def test_message_seq_increments_per_session(store: HistoryStore) -> None:
    """Messages are numbered 1, 2, 3... within their own session."""
    first = await store.create_session("alice", "one")
    second = await store.create_session("alice", "two")
    seqs = [(await store.add_message("alice", first.id, "user", f"m{i}")).seq for i in range(3)]
    other = await store.add_message("alice", second.id, "user", "x")
    assert seqs == [1, 2, 3]
    assert other.seq == 1


async def test_concurrent_writers_number_messages_without_gaps_or_duplicates(open_store: Opener) -> None:
    """Two processes adding to one session at once (two replicas) never share a number."""
    one, two = await open_store(), await open_store()
    session = await one.create_session("alice", "busy")
    singles, pairs = await asyncio.gather(
        asyncio.gather(*(one.add_message("alice", session.id, "user", f"a{i}") for i in range(4))),
        asyncio.gather(
            *(two.start_exchange("alice", session.id, f"b{i}", model="m", prompt_tokens=1) for i in range(3))
        ),
    )
    seqs = [m.seq for m in singles] + [m.seq for pair in pairs for m in pair]
    assert sorted(seqs) == list(range(1, 11))
    assert all(reply.seq == user.seq + 1 for user, reply in pairs)  # an exchange is adjacent
    stored = (await two.list_messages("alice", session.id, 20, None)).items
    assert [m.seq for m in stored] == list(range(1, 11))


async def test_add_message_returns_what_was_stored(store: HistoryStore) -> None:
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
    assert (await store.list_messages("alice", session.id, 10, None)).items == [message]


async def test_message_pages_cover_every_message_once_in_order(store: HistoryStore) -> None:
    """Paging messages with next_cursor yields each one once, oldest first."""
    session = await store.create_session("alice", "long")
    for i in range(8):
        await store.add_message("alice", session.id, "user" if i % 2 == 0 else "assistant", f"m{i}")
    pages = await _all_messages(store, "alice", session.id, limit=3)
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [m.content for page in pages for m in page] == [f"m{i}" for i in range(8)]
    assert [m.seq for page in pages for m in page] == list(range(1, 9))


async def test_exact_page_boundary_has_no_next_cursor(store: HistoryStore) -> None:
    """When the last page is exactly full there is no cursor to an empty page."""
    session = await store.create_session("alice", "four")
    for i in range(4):
        await store.add_message("alice", session.id, "user", f"m{i}")
    pages = await _all_messages(store, "alice", session.id, limit=2)
    assert [len(p) for p in pages] == [2, 2]


async def test_recent_messages_are_the_newest_in_order(store: HistoryStore) -> None:
    """recent_messages returns the last N messages, oldest first (prompt order)."""
    session = await store.create_session("alice", "s")
    for i in range(5):
        await store.add_message("alice", session.id, "user", f"m{i}")
    recent = await store.recent_messages("alice", session.id, 3)
    assert [m.content for m in recent] == ["m2", "m3", "m4"]


@pytest.mark.parametrize("cursor", ["abc", "1.5", "3:x"])
async def test_invalid_message_cursor_is_rejected(store: HistoryStore, cursor: str) -> None:
    """A message cursor that is not a sequence number is an InvalidRequestError."""
    session = await store.create_session("alice", "s")
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        await store.list_messages("alice", session.id, 10, cursor)


async def test_update_message_persists(store: HistoryStore) -> None:
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


async def test_checkpoint_writes_the_text_of_streaming_answers_at_once(store: HistoryStore) -> None:
    """One call, several answers (kubechat.chat.checkpoints); an unknown id is no error."""
    session = await store.create_session("alice", "s")
    first = await store.add_message("alice", session.id, "assistant", "", status=MessageStatus.STREAMING)
    second = await store.add_message("alice", session.id, "assistant", "", status=MessageStatus.STREAMING)
    await store.checkpoint({first.id: "Once upon", second.id: "Hello", "0" * 32: "gone"})
    stored = (await store.list_messages("alice", session.id, 10, None)).items
    assert [(m.content, m.status) for m in stored] == [
        ("Once upon", MessageStatus.STREAMING), ("Hello", MessageStatus.STREAMING),
    ]  # fmt: skip


async def test_updating_a_missing_message_is_no_error(store: HistoryStore) -> None:
    """Its session was deleted meanwhile: the late write is dropped."""
    await store.update_message("0" * 32, "late", MessageStatus.COMPLETE)
    await store.set_context("0" * 32, 1, [])
    await store.set_images("0" * 32, [])
    await store.set_tool_calls("0" * 32, [])


async def test_deleting_a_session_deletes_its_messages(store: HistoryStore) -> None:
    """delete_session removes the session and every message it had; other sessions keep theirs."""
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
    with pytest.raises(SessionNotFoundError):
        await store.list_messages("alice", doomed.id, 10, None)
    assert [s.id for s in (await store.list_sessions("alice", 10, None)).items] == [kept.id]
    assert [m.content for m in await store.recent_messages("alice", kept.id, 10)] == ["stay"]


async def test_start_exchange_stores_question_and_streaming_answer(store: HistoryStore) -> None:
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


async def test_start_exchange_in_another_principals_session_stores_nothing(store: HistoryStore) -> None:
    session = await store.create_session("alice", "chat")
    with pytest.raises(SessionNotFoundError):
        await store.start_exchange("bob", session.id, "mine?", model="m", prompt_tokens=1)
    assert await store.recent_messages("alice", session.id, 10) == []


async def test_an_answer_keeps_its_sources(store: HistoryStore) -> None:
    session = await store.create_session("alice", "chat")
    cited = [{"n": 1, "document_name": "runbook.pdf", "page": 2, "text": "Größe ✓"}]
    user, reply = await store.start_exchange(
        "alice", session.id, "where?", model="m", prompt_tokens=1, sources=cited
    )
    assert user.sources == [] and reply.sources == cited
    assert (await store.list_messages("alice", session.id, 10, None)).items == [user, reply]
    found = [{"n": 1, "document_name": "guide.pdf", "page": None, "nested": {"a": [1, 2]}}]
    await store.set_context(reply.id, 99, found)
    *_, stored = (await store.list_messages("alice", session.id, 10, None)).items
    assert (stored.prompt_tokens, stored.sources) == (99, found)


async def test_a_question_keeps_its_images_and_what_was_said_about_them(store: HistoryStore) -> None:
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


async def test_an_answer_keeps_its_tool_calls(store: HistoryStore) -> None:
    session = await store.create_session("alice", "chat")
    _, reply = await store.start_exchange("alice", session.id, "add", model="m", prompt_tokens=1)
    calls = [{"id": "call_1", "name": "demo__add", "arguments": {"a": 2}, "ok": True, "content": "5"}]
    await store.set_tool_calls(reply.id, calls)
    *_, stored = (await store.list_messages("alice", session.id, 10, None)).items
    assert stored.tool_calls == calls


async def test_an_answer_keeps_its_attribution(store: HistoryStore) -> None:
    session = await store.create_session("alice", "chat")
    _, reply = await store.start_exchange("alice", session.id, "why", model="m", prompt_tokens=1)
    attribution = [{"start": 0, "end": 12, "sources": [2, 1], "cited": [1], "similarity": 0.61}]
    await store.set_attribution(reply.id, attribution)
    *_, stored = (await store.list_messages("alice", session.id, 10, None)).items
    assert stored.attribution == attribution
