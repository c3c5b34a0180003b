"""ElasticsearchHistoryStore at the HTTP boundary.

As in test_elasticsearch_documents: a real AsyncElasticsearch talks HTTP to a local server that
answers in order with bodies shaped like Elasticsearch 9's; the tests check the requests the
store sends and what it makes of the answers. Its behaviour against a live cluster is the
conformance suite's (tests/conformance/test_history_store.py).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from kubechat.core.errors import InvalidRequestError, SessionNotFoundError
from kubechat.stores.elasticsearch import history as elasticsearch_history
from kubechat.stores.elasticsearch.history import ElasticsearchHistoryStore, history_index_body
from kubechat.stores.errors import StoreError, StoreUnavailableError
from kubechat.stores.history import Message, MessageStatus, Session
from tests.unit.test_elasticsearch_store import REJECTED, RETRIES, FakeElasticsearch, index_not_found
from tests.unit.test_elasticsearch_store import es as es

INDEX = "kubechat-history"
NOW = 1_767_225_600.0
SHARDS = {"total": 1, "successful": 1, "skipped": 0, "failed": 0}
SID = "5e55" * 8


@pytest.fixture
async def store(es: FakeElasticsearch) -> AsyncIterator[ElasticsearchHistoryStore]:
    # A plain client, with the transport's own retries on: the store must switch them off.
    client = AsyncElasticsearch(es.url)
    yield ElasticsearchHistoryStore(client, retries=RETRIES, stale_after_s=600, clock=lambda: NOW)
    await client.close()


@pytest.fixture
def ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """New ids are id1, id2, ... (uuid4 hex in production)."""
    numbers = itertools.count(1)
    fake = SimpleNamespace(uuid4=lambda: SimpleNamespace(hex=f"id{next(numbers)}"))
    monkeypatch.setattr(elasticsearch_history, "uuid", fake)


def session_source(principal: str = "alice", last_seq: int = 0, **changes: Any) -> dict[str, Any]:
    return {
        "kind": "session", "id": SID, "principal": principal, "title": "chat", "created_at": 100.0,
        "updated_at": 100.0, "last_seq": last_seq, **changes,
    }  # fmt: skip


def message_source(seq: int, **changes: Any) -> dict[str, Any]:
    return {
        "kind": "message", "id": f"m{seq}", "session_id": SID, "principal": "alice", "seq": seq,
        "role": "user", "content": f"text {seq}", "status": "complete", "model": "",
        "created_at": 100.0 + seq, "updated_at": 100.0 + seq, "prompt_tokens": 0, "completion_tokens": 0,
        "error_code": "", "sources": [], "images": [], "tool_calls": [], **changes,
    }  # fmt: skip


# -- Elasticsearch 9's answers ---------------------------------------------------------------


def write_result(key: str, result: str, seq_no: int = 0, version: int = 1) -> dict[str, Any]:
    return {
        "_index": INDEX, "_id": key, "_version": version, "result": result,
        "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": seq_no, "_primary_term": 1,
    }  # fmt: skip


def found(es: FakeElasticsearch, key: str, body: dict[str, Any], seq_no: int = 3) -> None:
    es.reply(
        "GET",
        f"/{INDEX}/_doc/{key}",
        {
            "_index": INDEX, "_id": key, "_version": seq_no + 1, "_seq_no": seq_no, "_primary_term": 1,
            "found": True, "_source": body,
        },
    )  # fmt: skip


def not_found(es: FakeElasticsearch, key: str) -> None:
    es.reply("GET", f"/{INDEX}/_doc/{key}", {"_index": INDEX, "_id": key, "found": False}, status=404)


def updated(es: FakeElasticsearch, key: str, seq_no: int = 4) -> None:
    es.reply("POST", f"/{INDEX}/_update/{key}", write_result(key, "updated", seq_no, seq_no + 1))


def conflict(es: FakeElasticsearch, method: str, key: str, path: str | None = None) -> None:
    es.error(
        method, path or f"/{INDEX}/_update/{key}", 409, "version_conflict_engine_exception",
        f"[{key}]: version conflict, required seqNo [3], primary term [1]. current document has seqNo [4] "
        "and primary term [1]",
        index_uuid="Xq0mJ1bNRpuWz5k1vJ0k2g", shard="0", index=INDEX,
    )  # fmt: skip


def missing_document(es: FakeElasticsearch, key: str) -> None:
    es.error(
        "POST", f"/{INDEX}/_update/{key}", 404, "document_missing_exception", f"[{key}]: document missing",
        index_uuid="Xq0mJ1bNRpuWz5k1vJ0k2g", shard="0", index=INDEX,
    )  # fmt: skip


def created_item(status: int = 201) -> dict[str, Any]:
    return {"create": {**write_result("x", "created"), "status": status}}


def failed_item(status: int, error_type: str, reason: str) -> dict[str, Any]:
    return {
        "create": {
            "_index": INDEX,
            "_id": "x",
            "status": status,
            "error": {"type": error_type, "reason": reason},
        }
    }


def bulk(es: FakeElasticsearch, *items: dict[str, Any]) -> None:
    errors = any("error" in item["create"] for item in items)
    es.reply("PUT", "/_bulk", {"errors": errors, "took": 3, "items": list(items)})


def hits(*sources: dict[str, Any]) -> dict[str, Any]:
    def hit(body: dict[str, Any]) -> dict[str, Any]:
        if body["kind"] == "session":
            key, sort = f"session:{body['id']}", [body["updated_at"], body["id"]]
        else:
            key, sort = f"message:{body['id']}", [body["seq"]]
        return {"_index": INDEX, "_id": key, "_score": None, "_source": body, "sort": sort}

    return {
        "took": 2,
        "timed_out": False,
        "_shards": SHARDS,
        "hits": {"max_score": None, "hits": [hit(s) for s in sources]},
    }


def by_query_result(**changes: Any) -> dict[str, Any]:
    return {
        "took": 20, "timed_out": False, "total": 3, "deleted": 3, "batches": 1, "version_conflicts": 0,
        "noops": 0, "retries": {"bulk": 0, "search": 0}, "throttled_millis": 0, "requests_per_second": -1.0,
        "throttled_until_millis": 0, "failures": [], **changes,
    }  # fmt: skip


def reserved(es: FakeElasticsearch, last_seq: int = 0) -> None:
    """The session read and the write that takes its next numbers."""
    found(es, f"session:{SID}", session_source(last_seq=last_seq))
    updated(es, f"session:{SID}")


# -- the index ---------------------------------------------------------------------------------


def test_the_mapping_is_strict_and_keeps_message_payloads_unindexed() -> None:
    body = history_index_body(replicas=0)

    assert body["settings"] == {"number_of_shards": 1, "refresh_interval": "1s", "number_of_replicas": 0}
    assert "number_of_replicas" not in history_index_body()["settings"]
    mappings = body["mappings"]
    assert (mappings["dynamic"], mappings["_meta"]) == ("strict", {"kubechat_schema_version": 1})
    properties = mappings["properties"]
    message_fields = set(Message.__dataclass_fields__) | {"principal", "updated_at"}
    session_fields = set(Session.__dataclass_fields__) | {"last_seq"}
    assert set(properties) == message_fields | session_fields | {"kind"}
    for name in ("sources", "images", "tool_calls"):
        assert properties[name] == {"type": "object", "enabled": False}
    for name in ("created_at", "updated_at"):
        assert properties[name] == {"type": "double"}  # sortable and exact, for cursors
    for name in ("kind", "id", "principal", "session_id", "status"):
        assert properties[name] == {"type": "keyword"}
    assert properties["seq"] == properties["last_seq"] == {"type": "long"}


async def test_ensure_index_creates_it_with_the_mapping(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    es.reply("PUT", f"/{INDEX}", {"acknowledged": True, "shards_acknowledged": True, "index": INDEX})

    assert await store.ensure_index(replicas=1) is True

    (sent,) = es.sent
    assert sent.body == history_index_body(replicas=1)


async def test_an_index_another_replica_just_created_is_used(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    es.error(
        "PUT", f"/{INDEX}", 400, "resource_already_exists_exception",
        f"index [{INDEX}/Xq0mJ1bNRpuWz5k1vJ0k2g] already exists",
        index_uuid="Xq0mJ1bNRpuWz5k1vJ0k2g", index=INDEX,
    )  # fmt: skip

    es.reply("PUT", f"/{INDEX}/_mapping", {"acknowledged": True})

    assert await store.ensure_index() is False
    assert store.index == INDEX
    # An index made before a field was added gets it (its mapping is strict).
    _, mapping = es.sent
    assert mapping.body == {"properties": {"attribution": {"type": "object", "enabled": False}}}


async def test_ping_asks_once_whether_the_index_exists(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    es.reply("HEAD", f"/{INDEX}", {})
    es.reply("HEAD", f"/{INDEX}", {}, status=404)
    es.error("HEAD", f"/{INDEX}", 503, "cluster_block_exception", "blocked by: [SERVICE_UNAVAILABLE]")

    await store.ping()
    with pytest.raises(StoreError, match="does not exist"):
        await store.ping()
    with pytest.raises(StoreUnavailableError, match="after 1 attempts"):
        await store.ping()
    assert len(es.sent) == 3  # no retries


# -- sessions ----------------------------------------------------------------------------------


async def test_create_session_creates_it_visible_to_searches(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    bulk(es, created_item())

    session = await store.create_session("alice", "Trip plans")

    assert (session.principal, session.title, session.created_at, session.updated_at) == (
        "alice", "Trip plans", NOW, NOW,
    )  # fmt: skip
    (sent,) = es.sent
    # Visible at once; chat text is never echoed back in an error (and so never logged).
    assert sent.params == {"include_source_on_error": "false", "refresh": "wait_for"}
    assert sent.body == [
        {"create": {"_index": INDEX, "_id": f"session:{session.id}"}},
        {
            "kind": "session", "id": session.id, "principal": "alice", "title": "Trip plans",
            "created_at": NOW, "updated_at": NOW, "last_seq": 0,
        },
    ]  # fmt: skip


async def test_a_session_is_found_only_by_its_principal(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    found(es, f"session:{SID}", session_source())
    found(es, f"session:{SID}", session_source())
    not_found(es, "session:gone")
    found(es, "session:m1", message_source(1, id="m1"))  # not a session: an id that is a message's

    assert await store.get_session("alice", SID) == Session(SID, "alice", "chat", 100.0, 100.0)
    with pytest.raises(SessionNotFoundError):
        await store.get_session("bob", SID)
    with pytest.raises(SessionNotFoundError):
        await store.get_session("alice", "gone")
    with pytest.raises(SessionNotFoundError):
        await store.get_session("alice", "m1")


async def test_a_missing_index_is_an_error_not_a_missing_session(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    index_not_found(es, "GET", f"/{INDEX}/_doc/session:{SID}", INDEX)

    with pytest.raises(StoreError, match="index_not_found_exception"):
        await store.get_session("alice", SID)


async def test_sessions_page_newest_updated_first_with_a_cursor(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    newest = [session_source(id=f"s{i}", updated_at=300.0 - i) for i in range(3)]
    es.reply("POST", f"/{INDEX}/_search", hits(*newest))
    es.reply("POST", f"/{INDEX}/_search", hits(newest[2]))

    first = await store.list_sessions("alice", 2, None)
    assert [s.id for s in first.items] == ["s0", "s1"] and first.next_cursor == "299.0:s1"
    second = await store.list_sessions("alice", 2, first.next_cursor)
    assert [s.id for s in second.items] == ["s2"] and second.next_cursor is None

    one, two = es.sent
    assert one.body == {
        "query": {"bool": {"filter": [{"term": {"kind": "session"}}, {"term": {"principal": "alice"}}]}},
        "sort": [{"updated_at": "desc"}, {"id": "asc"}],
        "size": 3,
        "track_total_hits": False,
    }
    assert one.params == {"allow_partial_search_results": "false"}
    assert two.body["search_after"] == [299.0, "s1"]


async def test_cursors_that_are_not_ones_are_refused_before_asking(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    for cursor in ("garbage", "nan:s1", "inf:s1", ":"):
        with pytest.raises(InvalidRequestError, match="invalid cursor"):
            await store.list_sessions("alice", 2, cursor)
    # The one codec of kubechat.core.pagination, as in SQLite: sequence numbers are 0 to 2**63 - 1.
    for cursor in ("abc", "1.5", "3:x", "-1", str(2**63)):
        with pytest.raises(InvalidRequestError, match="invalid cursor"):
            await store.list_messages("alice", SID, 2, cursor)
    assert es.sent == []


async def test_rename_writes_only_if_nothing_changed_since_it_read(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    found(es, f"session:{SID}", session_source(last_seq=2), seq_no=3)
    conflict(es, "POST", f"session:{SID}")  # a message was added meanwhile
    found(es, f"session:{SID}", session_source(last_seq=4, updated_at=200.0), seq_no=4)
    updated(es, f"session:{SID}", seq_no=5)

    renamed = await store.rename_session("alice", SID, "renamed")

    assert renamed == Session(SID, "alice", "renamed", 100.0, NOW)
    first, again = es.sent[1], es.sent[3]
    assert first.body == again.body == {"doc": {"title": "renamed", "updated_at": NOW}}
    assert first.params == {"if_seq_no": "3", "if_primary_term": "1", "refresh": "wait_for"}
    assert again.params["if_seq_no"] == "4"


async def test_delete_removes_the_messages_then_the_session(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    found(es, f"session:{SID}", session_source(last_seq=3), seq_no=5)
    es.reply("POST", f"/{INDEX}/_delete_by_query", by_query_result())
    es.reply("DELETE", f"/{INDEX}/_doc/session:{SID}", write_result(f"session:{SID}", "deleted", 6, 7))

    await store.delete_session("alice", SID)

    _, by_query, delete = es.sent
    assert by_query.params == {"conflicts": "proceed", "refresh": "true"}
    assert by_query.body == {
        "query": {"bool": {"filter": [{"term": {"kind": "message"}}, {"term": {"session_id": SID}}]}}
    }
    assert delete.params == {"if_seq_no": "5", "if_primary_term": "1", "refresh": "wait_for"}


async def test_a_message_added_during_a_delete_is_deleted_too(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    found(es, f"session:{SID}", session_source(last_seq=3), seq_no=5)
    es.reply("POST", f"/{INDEX}/_delete_by_query", by_query_result())
    conflict(es, "DELETE", f"session:{SID}", f"/{INDEX}/_doc/session:{SID}")
    found(es, f"session:{SID}", session_source(last_seq=4), seq_no=6)
    es.reply("POST", f"/{INDEX}/_delete_by_query", by_query_result(total=1, deleted=1))
    es.reply("DELETE", f"/{INDEX}/_doc/session:{SID}", write_result(f"session:{SID}", "deleted", 7, 8))

    await store.delete_session("alice", SID)

    assert es.sent[-1].params["if_seq_no"] == "6"


async def test_a_delete_turned_away_by_a_busy_cluster_is_unavailable(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    found(es, f"session:{SID}", session_source())
    es.reply(
        "POST",
        f"/{INDEX}/_delete_by_query",
        by_query_result(
            deleted=1, failures=[{"index": INDEX, "id": "message:m2", "status": 429, "cause": REJECTED}]
        ),
    )

    with pytest.raises(StoreUnavailableError, match="429 es_rejected_execution_exception"):
        await store.delete_session("alice", SID)
    assert [s.method for s in es.sent] == ["GET", "POST"]  # the session stays, for a retry


async def test_another_principals_session_is_neither_deleted_nor_written(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    found(es, f"session:{SID}", session_source(principal="alice"))
    found(es, f"session:{SID}", session_source(principal="alice"))
    found(es, f"session:{SID}", session_source(principal="alice"))

    with pytest.raises(SessionNotFoundError):
        await store.delete_session("bob", SID)
    with pytest.raises(SessionNotFoundError):
        await store.start_exchange("bob", SID, "mine?", model="m", prompt_tokens=1)
    with pytest.raises(SessionNotFoundError):
        await store.recent_messages("bob", SID, 10)
    assert [s.method for s in es.sent] == ["GET", "GET", "GET"]


# -- adding messages ---------------------------------------------------------------------------


async def test_add_message_takes_the_next_number_then_creates_the_message(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    found(es, f"session:{SID}", session_source(last_seq=4), seq_no=3)
    updated(es, f"session:{SID}")
    bulk(es, created_item())

    message = await store.add_message("alice", SID, "user", "hello", prompt_tokens=2)

    assert (message.seq, message.session_id, message.created_at, message.status) == (5, SID, NOW, "complete")
    _, reserve, create = es.sent
    assert reserve.body == {"doc": {"last_seq": 5, "updated_at": NOW}}
    assert reserve.params == {"if_seq_no": "3", "if_primary_term": "1"}  # the creation refreshes
    assert create.params == {"include_source_on_error": "false", "refresh": "wait_for"}
    assert create.body == [
        {"create": {"_index": INDEX, "_id": f"message:{message.id}"}},
        {
            "kind": "message", "id": message.id, "session_id": SID, "principal": "alice", "seq": 5,
            "role": "user", "content": "hello", "status": "complete", "model": "", "created_at": NOW,
            "updated_at": NOW, "prompt_tokens": 2, "completion_tokens": 0, "error_code": "",
            "sources": [], "images": [], "tool_calls": [],
        },
    ]  # fmt: skip


async def test_a_number_taken_by_another_writer_is_taken_again(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    found(es, f"session:{SID}", session_source(last_seq=4), seq_no=3)
    conflict(es, "POST", f"session:{SID}")  # another replica reserved 5 first
    found(es, f"session:{SID}", session_source(last_seq=5), seq_no=4)
    updated(es, f"session:{SID}", seq_no=5)
    bulk(es, created_item())

    message = await store.add_message("alice", SID, "user", "hello")

    assert message.seq == 6
    assert es.sent[3].params["if_seq_no"] == "4"
    assert es.sent[3].body == {"doc": {"last_seq": 6, "updated_at": NOW}}


async def test_a_session_deleted_while_numbering_is_not_found(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    found(es, f"session:{SID}", session_source())
    missing_document(es, f"session:{SID}")
    not_found(es, f"session:{SID}")

    with pytest.raises(SessionNotFoundError):
        await store.add_message("alice", SID, "user", "hello")


async def test_start_exchange_takes_two_numbers_and_creates_both_in_one_bulk(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    reserved(es, last_seq=2)
    bulk(es, created_item(), created_item())
    cited, attached = [{"n": 1, "text": "Größe"}], [{"id": "i1", "name": "a.png", "description": ""}]

    user, reply = await store.start_exchange(
        "alice", SID, "why?", model="m", prompt_tokens=7, sources=cited, images=attached
    )

    assert (user.seq, user.role, user.images, user.sources) == (3, "user", attached, [])
    assert (reply.seq, reply.role, reply.status, reply.content) == (4, "assistant", "streaming", "")
    assert (reply.model, reply.prompt_tokens, reply.sources, reply.images) == ("m", 7, cited, [])
    assert es.sent[1].body == {"doc": {"last_seq": 4, "updated_at": NOW}}
    operations = es.sent[2].body
    assert [op["create"]["_id"] for op in operations[::2]] == [f"message:{user.id}", f"message:{reply.id}"]
    assert [(s["seq"], s["role"], s["status"]) for s in operations[1::2]] == [
        (3, "user", "complete"),
        (4, "assistant", "streaming"),
    ]


async def test_items_turned_away_are_sent_again_and_a_conflict_is_our_own_write(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    reserved(es)
    bulk(es, created_item(), failed_item(429, REJECTED["type"], REJECTED["reason"]))
    bulk(es, created_item(409))  # the first try went through after all

    _, reply = await store.start_exchange("alice", SID, "hi", model="m", prompt_tokens=1)

    resent = es.sent[3].body
    assert [op["create"]["_id"] for op in resent[::2]] == [f"message:{reply.id}"]


async def test_an_answer_without_its_question_is_removed_again(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore, ids: None
) -> None:
    reserved(es)
    bulk(es, failed_item(400, "document_parsing_exception", "[1:2] failed to parse"), created_item())
    es.reply("DELETE", f"/{INDEX}/_doc/message:id2", write_result("message:id2", "deleted"))

    with pytest.raises(StoreError, match="document_parsing_exception") as caught:
        await store.start_exchange("alice", SID, "hi", model="m", prompt_tokens=1)

    assert not isinstance(caught.value, StoreUnavailableError)
    assert es.sent[2].body[2]["create"]["_id"] == "message:id2"  # the answer
    assert es.sent[3].params == {"refresh": "wait_for"}


async def test_a_question_without_its_answer_is_kept(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    reserved(es)
    unavailable = failed_item(503, "unavailable_shards_exception", "primary shard is not active")
    bulk(es, created_item(), unavailable)
    bulk(es, unavailable)
    bulk(es, unavailable)  # max_retries=2: three attempts

    with pytest.raises(StoreUnavailableError, match="unavailable_shards_exception"):
        await store.start_exchange("alice", SID, "hi", model="m", prompt_tokens=1)

    assert [s.method for s in es.sent].count("DELETE") == 0


# -- updating and reading messages ---------------------------------------------------------------


async def test_checkpoints_are_not_refreshed_but_the_final_update_is(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    updated(es, "message:m2")
    updated(es, "message:m2")
    missing_document(es, "message:gone")

    await store.update_message("m2", "Once upon", MessageStatus.STREAMING)
    await store.update_message("m2", "Once upon a time", MessageStatus.STOPPED, completion_tokens=4)
    await store.update_message("gone", "late", MessageStatus.COMPLETE)  # its session was deleted: no error

    checkpoint, final, _ = es.sent
    assert checkpoint.body == {
        "doc": {
            "content": "Once upon", "status": "streaming", "completion_tokens": 0, "error_code": "",
            "updated_at": NOW,
        }
    }  # fmt: skip
    assert checkpoint.params == {"retry_on_conflict": "5"}
    assert final.body["doc"]["status"] == "stopped"
    assert final.params == {"refresh": "wait_for", "retry_on_conflict": "5"}


async def test_context_images_and_tool_calls_are_partial_updates(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    for key in ("message:m2", "message:m1", "message:m2"):
        updated(es, key)

    await store.set_context("m2", 99, [{"n": 1, "page": None}])
    await store.set_images("m1", [{"id": "i1", "description": "Total 42 €"}])
    await store.set_tool_calls("m2", [{"id": "call_1", "arguments": {"a": 2}}])

    assert [s.body for s in es.sent] == [
        {"doc": {"prompt_tokens": 99, "sources": [{"n": 1, "page": None}], "updated_at": NOW}},
        {"doc": {"images": [{"id": "i1", "description": "Total 42 €"}], "updated_at": NOW}},
        {"doc": {"tool_calls": [{"id": "call_1", "arguments": {"a": 2}}], "updated_at": NOW}},
    ]


async def test_messages_page_oldest_first_after_the_session_is_checked(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    stored = [message_source(i) for i in (1, 2, 3)]
    found(es, f"session:{SID}", session_source(last_seq=3))
    es.reply("POST", f"/{INDEX}/_search", hits(*stored))
    found(es, f"session:{SID}", session_source(last_seq=3))
    es.reply("POST", f"/{INDEX}/_search", hits(stored[2]))

    first = await store.list_messages("alice", SID, 2, None)
    assert [m.seq for m in first.items] == [1, 2] and first.next_cursor == "2"
    second = await store.list_messages("alice", SID, 2, first.next_cursor)
    assert [m.content for m in second.items] == ["text 3"] and second.next_cursor is None

    search = es.sent[1]
    assert search.body == {
        "query": {
            "bool": {
                "filter": [
                    {"term": {"kind": "message"}},
                    {"term": {"session_id": SID}},
                    {"term": {"principal": "alice"}},
                ]
            }
        },
        "sort": [{"seq": "asc"}],
        "size": 3,
        "track_total_hits": False,
    }
    assert es.sent[3].body["search_after"] == [2]


async def test_recent_messages_are_the_newest_returned_oldest_first(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    found(es, f"session:{SID}", session_source(last_seq=5))
    es.reply("POST", f"/{INDEX}/_search", hits(message_source(5), message_source(4)))

    recent = await store.recent_messages("alice", SID, 2)

    assert [m.seq for m in recent] == [4, 5]
    assert es.sent[1].body["sort"] == [{"seq": "desc"}] and es.sent[1].body["size"] == 2


async def test_a_message_reads_back_with_every_field(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    source = message_source(
        2, role="assistant", content="partial", status="failed", model="m", prompt_tokens=9,
        completion_tokens=3, error_code="model_unavailable", sources=[{"n": 1}], tool_calls=[{"id": "c"}],
    )  # fmt: skip
    found(es, f"session:{SID}", session_source(last_seq=2))
    es.reply("POST", f"/{INDEX}/_search", hits(source))

    (message,) = await store.recent_messages("alice", SID, 1)

    assert message == Message(
        id="m2", session_id=SID, seq=2, role="assistant", content="partial", status=MessageStatus.FAILED,
        model="m", created_at=102.0, prompt_tokens=9, completion_tokens=3, error_code="model_unavailable",
        sources=[{"n": 1}], images=[], tool_calls=[{"id": "c"}],
    )  # fmt: skip


async def test_an_answer_whose_writer_went_silent_reads_as_interrupted(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    alive = message_source(1, status="streaming", content="Once", updated_at=NOW - 5)
    silent = message_source(2, status="streaming", content="Once upon", updated_at=NOW - 601)
    found(es, f"session:{SID}", session_source(last_seq=2))
    es.reply("POST", f"/{INDEX}/_search", hits(alive, silent))

    items = (await store.list_messages("alice", SID, 10, None)).items

    assert [(m.status, m.content) for m in items] == [("streaming", "Once"), ("interrupted", "Once upon")]
    assert [s.method for s in es.sent] == ["GET", "POST"]  # read as such, nothing rewritten


# -- failures ---------------------------------------------------------------------------------


async def test_a_busy_cluster_is_retried_then_unavailable(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    es.error("GET", f"/{INDEX}/_doc/session:{SID}", 429, REJECTED["type"], REJECTED["reason"])
    found(es, f"session:{SID}", session_source())
    for _ in range(3):  # max_retries=2: three attempts
        es.error(
            "POST", f"/{INDEX}/_search", 503, "cluster_block_exception", "blocked by: [SERVICE_UNAVAILABLE]"
        )

    assert (await store.get_session("alice", SID)).id == SID
    with pytest.raises(StoreUnavailableError, match=r"after 3 attempts.*cluster_block_exception"):
        await store.list_sessions("alice", 10, None)


async def test_refused_credentials_are_a_store_error_and_not_retried(
    es: FakeElasticsearch, store: ElasticsearchHistoryStore
) -> None:
    es.error(
        "POST",
        f"/{INDEX}/_search",
        403,
        "security_exception",
        "action [indices:data/read/search] is unauthorized",
    )

    with pytest.raises(StoreError, match="403 security_exception") as caught:
        await store.list_sessions("alice", 10, None)
    assert not isinstance(caught.value, StoreUnavailableError)
