"""ElasticsearchDocumentCatalog at the HTTP boundary.

As in test_elasticsearch_store: a real AsyncElasticsearch talks HTTP to a local server that
answers in order with bodies shaped like Elasticsearch 9's; the tests check the requests the
catalog sends and what it makes of the answers. Its behaviour against a live cluster is the
conformance suite's (tests/conformance/test_document_catalog.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from kubechat.core.errors import DocumentNotFoundError, InvalidRequestError
from kubechat.stores.documents import Document, DocumentStatus
from kubechat.stores.elasticsearch.documents import ElasticsearchDocumentCatalog, catalog_index_body
from kubechat.stores.errors import StoreError, StoreUnavailableError
from tests.unit.test_elasticsearch_store import REJECTED, RETRIES, FakeElasticsearch, index_not_found
from tests.unit.test_elasticsearch_store import es as es

INDEX = "kubechat-documents"
NOW = 1_767_225_600.0
SHARDS = {"total": 1, "successful": 1, "skipped": 0, "failed": 0}


@pytest.fixture
async def catalog(es: FakeElasticsearch) -> AsyncIterator[ElasticsearchDocumentCatalog]:
    # A plain client, with the transport's own retries on: the catalog must switch them off.
    client = AsyncElasticsearch(es.url)
    yield ElasticsearchDocumentCatalog(client, retries=RETRIES, clock=lambda: NOW)
    await client.close()


def document(doc_id: str = "a", sha: str = "s1", **changes: Any) -> Document:
    base = Document(
        id=doc_id, knowledge_base="docs", name=f"{doc_id}.txt", format="text", content_type="text/plain",
        size=3, sha256=sha, object_key=f"k/{sha}", uploaded_by="alice", status=DocumentStatus.QUEUED,
        created_at=100.0, updated_at=100.0,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def source(doc: Document, kind: str = "document") -> dict[str, Any]:
    return {**dataclasses.asdict(doc), "status": doc.status.value, "kind": kind}


# -- Elasticsearch 9's answers ---------------------------------------------------------------


def write_result(key: str, result: str, seq_no: int = 0, version: int = 1) -> dict[str, Any]:
    return {
        "_index": INDEX, "_id": key, "_version": version, "result": result,
        "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": seq_no, "_primary_term": 1,
    }  # fmt: skip


def created(es: FakeElasticsearch, key: str) -> None:
    es.reply("PUT", f"/{INDEX}/_create/{key}", write_result(key, "created"), status=201)


def updated(es: FakeElasticsearch, key: str, seq_no: int = 1) -> None:
    es.reply("POST", f"/{INDEX}/_update/{key}", write_result(key, "updated", seq_no, seq_no + 1))


def conflict(es: FakeElasticsearch, method: str, path: str, key: str, reason: str) -> None:
    es.error(
        method, path, 409, "version_conflict_engine_exception", f"[{key}]: version conflict, {reason}",
        index_uuid="Xq0mJ1bNRpuWz5k1vJ0k2g", shard="0", index=INDEX,
    )  # fmt: skip


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


def hit(body: dict[str, Any]) -> dict[str, Any]:
    """A search hit, with the sort values the catalog's sorts give it."""
    if body["kind"] == "document":
        key, sort = f"document:{body['id']}", [body["created_at"], body["id"]]
    else:
        key, sort = f"{body['kind']}:{body['knowledge_base']}", [body["knowledge_base"]]
    return {"_index": INDEX, "_id": key, "_score": None, "_source": body, "sort": sort}


def hits(*sources: dict[str, Any]) -> dict[str, Any]:
    return {
        "took": 2,
        "timed_out": False,
        "_shards": SHARDS,
        "hits": {"max_score": None, "hits": [hit(s) for s in sources]},
    }


# -- the index ---------------------------------------------------------------------------------


def test_the_mapping_is_strict_and_types_every_field() -> None:
    body = catalog_index_body(replicas=0)

    assert body["settings"] == {"number_of_shards": 1, "refresh_interval": "1s", "number_of_replicas": 0}
    assert "number_of_replicas" not in catalog_index_body()["settings"]
    mappings = body["mappings"]
    assert mappings["dynamic"] == "strict"
    assert mappings["_meta"] == {"kubechat_schema_version": 1}
    properties = mappings["properties"]
    document_fields = {f.name for f in dataclasses.fields(Document)}
    assert set(properties) == document_fields | {"kind", "document_id", "index_name"}
    for name in ("created_at", "updated_at", "indexed_at", "lease_expires"):
        assert properties[name] == {"type": "double"}  # sortable and exact, for cursors
    for name in ("id", "knowledge_base", "sha256", "status", "lease_owner", "kind"):
        assert properties[name] == {"type": "keyword"}
    assert properties["error_message"] == {"type": "text", "index": False}


async def test_ensure_index_creates_it_with_the_mapping(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    es.reply("PUT", f"/{INDEX}", {"acknowledged": True, "shards_acknowledged": True, "index": INDEX})

    assert await catalog.ensure_index(replicas=1) is True

    (sent,) = es.sent
    assert sent.body == catalog_index_body(replicas=1)


async def test_an_index_another_replica_just_created_is_used(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    es.error(
        "PUT", f"/{INDEX}", 400, "resource_already_exists_exception",
        f"index [{INDEX}/Xq0mJ1bNRpuWz5k1vJ0k2g] already exists",
        index_uuid="Xq0mJ1bNRpuWz5k1vJ0k2g", index=INDEX,
    )  # fmt: skip

    assert await catalog.ensure_index() is False
    assert catalog.index == INDEX


# -- adding and reading -----------------------------------------------------------------------


async def test_add_stages_claims_the_content_then_publishes(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    created(es, "document:a")
    created(es, "content:docs:s1")
    updated(es, "document:a")

    assert await catalog.add(document()) == (document(), True)

    stage, marker, publish = es.sent
    assert stage.body == source(document(), kind="staged")
    assert stage.params == {}  # invisible to searches: no refresh needed
    assert marker.body == {"kind": "content", "knowledge_base": "docs", "sha256": "s1", "document_id": "a"}
    assert publish.body == {"doc": {"kind": "document"}}
    assert publish.params == {"refresh": "wait_for", "retry_on_conflict": "5"}


async def test_an_add_whose_first_write_went_through_before_a_retry_carries_on(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    es.error(
        "PUT",
        f"/{INDEX}/_create/document:a",
        503,
        "unavailable_shards_exception",
        "primary shard is not active",
    )
    conflict(es, "PUT", f"/{INDEX}/_create/document:a", "document:a", "document already exists")
    found(es, "document:a", source(document(), kind="staged"))
    created(es, "content:docs:s1")
    updated(es, "document:a")

    assert await catalog.add(document()) == (document(), True)


async def test_an_id_taken_by_other_content_is_refused(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    conflict(es, "PUT", f"/{INDEX}/_create/document:a", "document:a", "document already exists")
    found(es, "document:a", source(document(sha="other")))

    with pytest.raises(StoreError, match="taken"):
        await catalog.add(document())


async def test_the_same_bytes_again_return_the_first_document(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    first = document("a", status=DocumentStatus.INDEXED, chunks=4, chunks_indexed=4, indexed_at=150.0)
    created(es, "document:b")
    conflict(es, "PUT", f"/{INDEX}/_create/content:docs:s1", "content:docs:s1", "document already exists")
    found(
        es,
        "content:docs:s1",
        {"kind": "content", "knowledge_base": "docs", "sha256": "s1", "document_id": "a"},
    )
    found(es, "document:a", source(first))
    es.reply("DELETE", f"/{INDEX}/_doc/document:b", write_result("document:b", "deleted", 1, 2))

    assert await catalog.add(document("b")) == (first, False)

    assert [(s.method, s.path) for s in es.sent][-1] == ("DELETE", f"/{INDEX}/_doc/document:b")


async def test_a_duplicate_of_a_document_still_staged_publishes_it(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    created(es, "document:b")
    conflict(es, "PUT", f"/{INDEX}/_create/content:docs:s1", "content:docs:s1", "document already exists")
    found(
        es,
        "content:docs:s1",
        {"kind": "content", "knowledge_base": "docs", "sha256": "s1", "document_id": "a"},
    )
    found(es, "document:a", source(document("a"), kind="staged"))  # its writer died before publishing
    updated(es, "document:a")
    es.reply("DELETE", f"/{INDEX}/_doc/document:b", write_result("document:b", "deleted", 1, 2))

    assert await catalog.add(document("b")) == (document("a"), False)

    assert es.sent[4].body == {"doc": {"kind": "document"}}


async def test_a_marker_left_by_an_interrupted_delete_is_taken_over(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    created(es, "document:b")
    conflict(es, "PUT", f"/{INDEX}/_create/content:docs:s1", "content:docs:s1", "document already exists")
    marker = {"kind": "content", "knowledge_base": "docs", "sha256": "s1", "document_id": "gone"}
    found(es, "content:docs:s1", marker, seq_no=7)
    not_found(es, "document:gone")
    updated(es, "content:docs:s1", seq_no=8)
    updated(es, "document:b")

    assert await catalog.add(document("b")) == (document("b"), True)

    take_over = es.sent[4]
    assert take_over.body == {"doc": {"document_id": "b"}}
    assert take_over.params == {"if_seq_no": "7", "if_primary_term": "1"}


async def test_get_and_find_only_see_documents_of_their_knowledge_base(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    stored = document(status=DocumentStatus.EMBEDDING, chunks=10, chunks_indexed=4, pages=2)
    found(es, "document:a", source(stored))
    found(es, "document:a", source(stored))
    not_found(es, "document:missing")
    found(es, "document:c", source(document("c"), kind="staged"))

    assert await catalog.get("docs", "a") == stored
    with pytest.raises(DocumentNotFoundError):
        await catalog.get("other", "a")
    with pytest.raises(DocumentNotFoundError):
        await catalog.get("docs", "missing")
    assert await catalog.find("c") is None  # staged: not added yet


async def test_a_missing_index_is_an_error_not_a_missing_document(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    index_not_found(es, "GET", f"/{INDEX}/_doc/document:a", INDEX)

    with pytest.raises(StoreError, match="index_not_found_exception"):
        await catalog.find("a")


async def test_list_pages_with_a_cursor_in_created_then_id_order(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    page_one = [source(document(f"d{i}", f"s{i}")) for i in range(3)]
    es.reply("POST", f"/{INDEX}/_search", hits(*page_one))
    es.reply("POST", f"/{INDEX}/_search", hits(source(document("d2", "s2"))))

    first = await catalog.list_documents("docs", 2, None)
    assert [d.id for d in first.items] == ["d0", "d1"]
    assert first.next_cursor is not None
    second = await catalog.list_documents("docs", 2, first.next_cursor, DocumentStatus.QUEUED)
    assert [d.id for d in second.items] == ["d2"] and second.next_cursor is None

    one, two = es.sent
    assert one.body == {
        "query": {"bool": {"filter": [{"term": {"kind": "document"}}, {"term": {"knowledge_base": "docs"}}]}},
        "sort": [{"created_at": "asc"}, {"id": "asc"}],
        "size": 3,
        "track_total_hits": False,
    }
    assert one.params == {"allow_partial_search_results": "false"}
    assert two.body["search_after"] == [100.0, "d1"]
    assert two.body["query"]["bool"]["filter"][-1] == {"term": {"status": "queued"}}


async def test_a_cursor_that_is_not_one_is_refused_before_asking(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    for cursor in ("garbage", "nan:d1", "inf:d1"):
        with pytest.raises(InvalidRequestError):
            await catalog.list_documents("docs", 2, cursor)
    assert es.sent == []


# -- progress ---------------------------------------------------------------------------------


async def test_update_sets_status_progress_and_time(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    updated(es, "document:a")
    es.error(
        "POST",
        f"/{INDEX}/_update/document:gone",
        404,
        "document_missing_exception",
        "[document:gone]: document missing",
    )

    await catalog.update("a", DocumentStatus.EMBEDDING, chunks=10, chunks_indexed=4, pages=None)
    await catalog.update("gone", DocumentStatus.INDEXED)  # deleted meanwhile: nothing to do

    sent = es.sent[0]
    assert sent.body == {
        "doc": {"status": "embedding", "updated_at": NOW, "chunks": 10, "chunks_indexed": 4, "pages": None}
    }
    assert sent.params == {"refresh": "wait_for", "retry_on_conflict": "5"}


async def test_update_refuses_fields_other_than_progress(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    with pytest.raises(TypeError, match="name"):
        await catalog.update("a", DocumentStatus.INDEXED, name="renamed")
    assert es.sent == []


async def test_requeue_updates_by_query_and_runs_again_after_conflicts(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    result = {
        "took": 20, "timed_out": False, "total": 2, "updated": 1, "deleted": 0, "batches": 1,
        "version_conflicts": 1, "noops": 0, "retries": {"bulk": 0, "search": 0}, "throttled_millis": 0,
        "requests_per_second": -1.0, "throttled_until_millis": 0, "failures": [],
    }  # fmt: skip
    es.reply("POST", f"/{INDEX}/_update_by_query", result)
    es.reply("POST", f"/{INDEX}/_update_by_query", {**result, "updated": 2, "version_conflicts": 0})

    assert await catalog.requeue("docs", ["a", "b"]) == 2
    assert await catalog.requeue("docs", []) == 0

    first, again = es.sent
    assert first.params == {"refresh": "true"}
    assert first.body["conflicts"] == "proceed"
    assert first.body["query"]["bool"]["filter"] == [
        {"term": {"kind": "document"}},
        {"term": {"knowledge_base": "docs"}},
        {"terms": {"id": ["a", "b"]}},
    ]
    assert first.body["script"]["params"] == {"status": "queued", "now": NOW}
    assert "chunks_indexed = 0" in first.body["script"]["source"]
    assert again.body == first.body


async def test_a_requeue_turned_away_by_a_busy_cluster_is_unavailable(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    es.reply(
        "POST",
        f"/{INDEX}/_update_by_query",
        {
            "took": 12, "timed_out": False, "total": 3, "updated": 1, "deleted": 0, "batches": 1,
            "version_conflicts": 0, "noops": 0, "retries": {"bulk": 0, "search": 0}, "failures": [
                {"index": INDEX, "id": "document:b", "status": 429, "cause": REJECTED},
            ],
        },
    )  # fmt: skip

    with pytest.raises(StoreUnavailableError, match="429 es_rejected_execution_exception"):
        await catalog.requeue("docs")


async def test_delete_removes_the_document_and_its_content_marker(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    found(es, "document:a", source(document()))
    es.reply("DELETE", f"/{INDEX}/_doc/document:a", write_result("document:a", "deleted", 4, 5))
    found(
        es,
        "content:docs:s1",
        {"kind": "content", "knowledge_base": "docs", "sha256": "s1", "document_id": "a"},
        2,
    )
    es.reply("DELETE", f"/{INDEX}/_doc/content:docs:s1", write_result("content:docs:s1", "deleted", 3, 2))
    not_found(es, "document:a")

    await catalog.delete("a")
    await catalog.delete("a")  # again: nothing left to delete

    assert es.sent[1].params == {"refresh": "wait_for"}
    assert es.sent[3].params == {"if_seq_no": "2", "if_primary_term": "1"}


# -- leases -----------------------------------------------------------------------------------


async def test_claim_writes_the_lease_only_if_nothing_changed_since_it_read(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    found(es, "document:a", source(document()), seq_no=3)
    updated(es, "document:a", seq_no=4)

    claimed = await catalog.claim("a", "worker-1", 30)

    assert claimed == document(lease_owner="worker-1", lease_expires=NOW + 30)
    write = es.sent[1]
    assert write.body == {"doc": {"lease_owner": "worker-1", "lease_expires": NOW + 30}}
    assert write.params == {"if_seq_no": "3", "if_primary_term": "1", "refresh": "wait_for"}


async def test_a_claim_that_loses_the_race_reads_again_and_gets_nothing(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    found(es, "document:a", source(document()), seq_no=3)
    conflict(
        es, "POST", f"/{INDEX}/_update/document:a", "document:a",
        "required seqNo [3], primary term [1]. current document has seqNo [4] and primary term [1]",
    )  # fmt: skip
    found(es, "document:a", source(document(lease_owner="worker-2", lease_expires=NOW + 30)), seq_no=4)

    assert await catalog.claim("a", "worker-1", 30) is None
    assert len(es.sent) == 3  # no second write


async def test_a_claim_that_conflicts_with_a_progress_update_tries_again(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    leased = document(lease_owner="worker-1", lease_expires=NOW + 5)
    found(es, "document:a", source(leased), seq_no=3)
    conflict(es, "POST", f"/{INDEX}/_update/document:a", "document:a", "required seqNo [3]")
    found(es, "document:a", source(dataclasses.replace(leased, chunks_indexed=8)), seq_no=4)
    updated(es, "document:a", seq_no=5)

    renewed = await catalog.claim("a", "worker-1", 30)

    assert renewed is not None and renewed.lease_expires == NOW + 30 and renewed.chunks_indexed == 8
    assert es.sent[3].params["if_seq_no"] == "4"


@pytest.mark.parametrize(
    "stored",
    [
        document(lease_owner="worker-2", lease_expires=NOW + 1),  # someone else's live lease
        document(status=DocumentStatus.INDEXED),  # finished
        document(status=DocumentStatus.FAILED),
    ],
)
async def test_claims_that_cannot_win_write_nothing(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog, stored: Document
) -> None:
    found(es, "document:a", source(stored))
    not_found(es, "document:missing")

    assert await catalog.claim("a", "worker-1", 30) is None
    assert await catalog.claim("missing", "worker-1", 30) is None
    assert [s.method for s in es.sent] == ["GET", "GET"]


async def test_an_expired_lease_is_taken_over(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    found(es, "document:a", source(document(lease_owner="crashed", lease_expires=NOW - 0.1)))
    updated(es, "document:a")

    taken = await catalog.claim("a", "survivor", 30)

    assert taken is not None and taken.lease_owner == "survivor"


async def test_release_clears_only_ones_own_lease(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    found(es, "document:a", source(document(lease_owner="worker-1", lease_expires=NOW + 9)), seq_no=6)
    updated(es, "document:a", seq_no=7)
    found(es, "document:a", source(document(lease_owner="worker-2", lease_expires=NOW + 9)))

    await catalog.release("a", "worker-1")
    await catalog.release("a", "worker-1")  # held by another now: left alone

    assert es.sent[1].body == {"doc": {"lease_owner": "", "lease_expires": 0.0}}
    assert es.sent[1].params == {"if_seq_no": "6", "if_primary_term": "1", "refresh": "wait_for"}
    assert len(es.sent) == 3


async def test_pending_asks_for_unleased_unfinished_documents_oldest_first(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    es.reply(
        "POST",
        f"/{INDEX}/_search",
        hits(
            source(document("a", created_at=1.0)), source(document("b", "s2", status=DocumentStatus.PARSING))
        ),
    )

    assert [d.id for d in await catalog.pending()] == ["a", "b"]

    (sent,) = es.sent
    assert sent.body["query"] == {
        "bool": {
            "filter": [
                {"term": {"kind": "document"}},
                {"terms": {"status": ["queued", "parsing", "embedding"]}},
                {
                    "bool": {
                        "should": [{"term": {"lease_owner": ""}}, {"range": {"lease_expires": {"lt": NOW}}}],
                        "minimum_should_match": 1,
                    }
                },
            ]
        }
    }
    assert sent.body["sort"] == [{"created_at": "asc"}, {"id": "asc"}]
    assert sent.body["size"] == 1000 and "search_after" not in sent.body


async def test_pending_reads_every_page(es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog) -> None:
    full = [source(document(f"d{i:04}", f"s{i}")) for i in range(1000)]
    es.reply("POST", f"/{INDEX}/_search", hits(*full))
    es.reply("POST", f"/{INDEX}/_search", hits(source(document("d1000", "s1000"))))

    assert len(await catalog.pending()) == 1001

    assert es.sent[1].body["search_after"] == [100.0, "d0999"]


# -- counts and rebuilds --------------------------------------------------------------------------


async def test_counts_by_status_come_from_a_terms_aggregation(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    es.reply(
        "POST",
        f"/{INDEX}/_search",
        {
            "took": 3, "timed_out": False, "_shards": SHARDS, "hits": {"max_score": None, "hits": []},
            "aggregations": {
                "status": {
                    "doc_count_error_upper_bound": 0, "sum_other_doc_count": 0,
                    "buckets": [{"key": "indexed", "doc_count": 7}, {"key": "queued", "doc_count": 2}],
                }
            },
        },
    )  # fmt: skip
    es.reply("POST", f"/{INDEX}/_count", {"count": 2, "_shards": SHARDS})

    assert await catalog.status_counts("docs") == {"indexed": 7, "queued": 2}
    assert await catalog.count_pending("docs") == 2

    aggregation, count = es.sent
    assert aggregation.body["size"] == 0
    assert aggregation.body["aggs"] == {
        "status": {"terms": {"field": "status", "size": 2 * len(DocumentStatus)}}
    }
    assert count.body["query"]["bool"]["filter"][-1] == {
        "terms": {"status": ["queued", "parsing", "embedding"]}
    }


async def test_rebuilds_are_entries_of_their_own_kind(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    target = "kubechat-kb.default.docs.000002"
    es.reply("PUT", f"/{INDEX}/_doc/rebuild:docs", write_result("rebuild:docs", "created"), status=201)
    es.reply(
        "POST", f"/{INDEX}/_search", hits({"kind": "rebuild", "knowledge_base": "docs", "index_name": target})
    )
    es.reply("DELETE", f"/{INDEX}/_doc/rebuild:docs", write_result("rebuild:docs", "deleted", 1, 2))

    await catalog.set_rebuild("docs", target)
    assert await catalog.rebuilds() == {"docs": target}
    await catalog.set_rebuild("docs", None)

    record, listing, clear = es.sent
    assert record.body == {"kind": "rebuild", "knowledge_base": "docs", "index_name": target}
    assert record.params == clear.params == {"refresh": "wait_for"}
    assert listing.body["query"] == {"term": {"kind": "rebuild"}}


# -- failures ---------------------------------------------------------------------------------


async def test_a_busy_cluster_is_retried_then_unavailable(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    es.error("POST", f"/{INDEX}/_count", 429, "es_rejected_execution_exception", REJECTED["reason"])
    es.reply("POST", f"/{INDEX}/_count", {"count": 1, "_shards": SHARDS})
    for _ in range(3):  # max_retries=2: three attempts
        es.error(
            "POST", f"/{INDEX}/_count", 503, "cluster_block_exception", "blocked by: [SERVICE_UNAVAILABLE]"
        )

    assert await catalog.count_pending("docs") == 1
    with pytest.raises(StoreUnavailableError, match=r"after 3 attempts.*cluster_block_exception"):
        await catalog.count_pending("docs")


async def test_refused_credentials_are_a_store_error_and_not_retried(
    es: FakeElasticsearch, catalog: ElasticsearchDocumentCatalog
) -> None:
    es.error(
        "GET",
        f"/{INDEX}/_doc/document:a",
        403,
        "security_exception",
        "action [indices:data/read/get] is unauthorized",
    )

    with pytest.raises(StoreError, match="403 security_exception") as caught:
        await catalog.find("a")
    assert not isinstance(caught.value, StoreUnavailableError)
