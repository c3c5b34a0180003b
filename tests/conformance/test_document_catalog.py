"""One behaviour for every DocumentCatalog: de-duplication, status, pagination, leases.

The Elasticsearch run needs a live cluster (`KUBECHAT_TEST_ES_URL`, which the kind e2e sets).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from elasticsearch import AsyncElasticsearch

from kubechat.core.errors import DocumentNotFoundError, InvalidRequestError
from kubechat.stores.documents import Document, DocumentCatalog, DocumentStatus
from kubechat.stores.sqlite.documents import SQLiteDocumentCatalog

ES_URL = os.environ.get("KUBECHAT_TEST_ES_URL", "")
Opener = Callable[[], Awaitable[DocumentCatalog]]


@pytest.fixture(params=["sqlite", "elasticsearch"])
async def open_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens the same catalog again each call (as a restarted or second API process would)."""
    opened: list[DocumentCatalog] = []
    clients: list[AsyncElasticsearch] = []

    async def open_sqlite() -> DocumentCatalog:
        opened.append(await SQLiteDocumentCatalog.open(tmp_path / "documents.sqlite3"))
        return opened[-1]

    opener: Opener = open_sqlite
    if request.param == "elasticsearch":
        if not ES_URL:
            pytest.skip("needs a live Elasticsearch: set KUBECHAT_TEST_ES_URL (the kind e2e does)")
        from elasticsearch import Elasticsearch

        from kubechat.stores.elasticsearch.client import new_client
        from kubechat.stores.elasticsearch.documents import ElasticsearchDocumentCatalog

        index = f"kubechat-documents-test-{os.urandom(6).hex()}"

        async def open_elasticsearch() -> DocumentCatalog:
            client = new_client(ES_URL)  # each opening is a process of its own, with its client
            catalog = ElasticsearchDocumentCatalog(client, index)
            await catalog.ensure_index(replicas=0)
            opened.append(catalog)
            clients.append(client)
            return catalog

        def drop_index() -> None:  # runs after the catalogs are closed
            with Elasticsearch(ES_URL) as client:
                client.indices.delete(index=index, ignore_unavailable=True)

        request.addfinalizer(drop_index)
        opener = open_elasticsearch
    yield opener
    for catalog in opened:
        await catalog.close()
    for client in clients:
        await client.close()


def document(doc_id: str, sha: str, kb: str = "docs", created: float | None = None) -> Document:
    now = created if created is not None else time.time()
    return Document(
        id=doc_id, knowledge_base=kb, name=f"{doc_id}.txt", format="text", content_type="text/plain",
        size=3, sha256=sha, object_key=f"k/{sha}", uploaded_by="alice", status=DocumentStatus.QUEUED,
        created_at=now, updated_at=now,
    )  # fmt: skip


async def test_same_bytes_in_a_knowledge_base_are_one_document(open_catalog: Opener) -> None:
    catalog = await open_catalog()
    first, created = await catalog.add(document("a", "s1"))
    again, created_again = await catalog.add(document("b", "s1"))
    other_kb, created_other = await catalog.add(document("c", "s1", kb="other"))
    assert created and not created_again and created_other
    assert again == first and other_kb.id == "c"


async def test_status_progress_and_lookup(open_catalog: Opener) -> None:
    catalog = await open_catalog()
    await catalog.add(document("a", "s1"))
    await catalog.update("a", DocumentStatus.EMBEDDING, chunks=10, chunks_indexed=4, pages=2)
    stored = await catalog.get("docs", "a")
    assert (stored.status, stored.chunks, stored.chunks_indexed, stored.pages) == ("embedding", 10, 4, 2)
    with pytest.raises(DocumentNotFoundError):
        await catalog.get("other", "a")  # a document is found only in its own knowledge base
    assert await catalog.find("missing") is None
    with pytest.raises(TypeError):
        await catalog.update("a", DocumentStatus.INDEXED, name="renamed")


async def test_unfinished_documents_survive_a_reopen(open_catalog: Opener) -> None:
    catalog = await open_catalog()
    for i, status in enumerate(DocumentStatus):
        await catalog.add(document(f"d{i}", f"s{i}", created=float(i)))
        await catalog.update(f"d{i}", status)
    await catalog.set_rebuild("docs", "kubechat-kb.default.docs.000002")
    reopened = await open_catalog()
    assert [d.status for d in await reopened.pending()] == ["queued", "parsing", "embedding"]
    assert await reopened.count_pending("docs") == 3
    assert await reopened.rebuilds() == {"docs": "kubechat-kb.default.docs.000002"}
    await reopened.set_rebuild("docs", None)
    assert await reopened.rebuilds() == {}
    assert await reopened.status_counts("docs") == {s.value: 1 for s in DocumentStatus}


async def test_requeue_clears_errors(open_catalog: Opener) -> None:
    catalog = await open_catalog()
    await catalog.add(document("a", "s1"))
    await catalog.add(document("b", "s2"))
    await catalog.update("a", DocumentStatus.FAILED, error_code="corrupt_document", error_message="bad")
    assert await catalog.requeue("docs", ["a"]) == 1
    requeued = await catalog.get("docs", "a")
    assert (requeued.status, requeued.error_code, requeued.error_message) == ("queued", "", "")
    assert await catalog.requeue("docs") == 2


async def test_listing_is_paginated_and_filtered(open_catalog: Opener) -> None:
    catalog = await open_catalog()
    for i in range(5):
        await catalog.add(document(f"d{i}", f"s{i}", created=100.0))  # same timestamp: ids break ties
    await catalog.update("d3", DocumentStatus.INDEXED)
    seen, cursor = [], None
    while True:
        page = await catalog.list_documents("docs", 2, cursor)
        seen += [d.id for d in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["d0", "d1", "d2", "d3", "d4"]
    indexed = await catalog.list_documents("docs", 10, None, DocumentStatus.INDEXED)
    assert [d.id for d in indexed.items] == ["d3"]
    with pytest.raises(InvalidRequestError):
        await catalog.list_documents("docs", 2, "garbage")


async def test_one_worker_wins_a_claim(open_catalog: Opener) -> None:
    catalog = await open_catalog()
    await catalog.add(document("a", "s1"))
    claims = await asyncio.gather(*(catalog.claim("a", f"worker-{i}", 30) for i in range(5)))
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1 and winners[0].lease_owner.startswith("worker-")
    owner = winners[0].lease_owner
    assert await catalog.pending() == []  # leased: no one else picks it up
    renewed = await catalog.claim("a", owner, 30)  # the owner extends its lease
    assert renewed is not None and renewed.lease_expires >= winners[0].lease_expires
    assert await catalog.claim("a", "intruder", 30) is None
    await catalog.release("a", owner)
    assert [d.id for d in await catalog.pending()] == ["a"]
    assert await catalog.claim("a", "intruder", 30) is not None


async def test_expired_leases_are_taken_over(open_catalog: Opener) -> None:
    catalog = await open_catalog()
    await catalog.add(document("a", "s1"))
    assert await catalog.claim("a", "crashed-worker", 0.2) is not None
    assert await catalog.claim("a", "survivor", 30) is None
    await asyncio.sleep(0.3)  # the lease runs out; nothing else to wait for
    assert [d.id for d in await catalog.pending()] == ["a"]
    taken = await catalog.claim("a", "survivor", 30)
    assert taken is not None and taken.lease_owner == "survivor"


async def test_finished_documents_cannot_be_claimed(open_catalog: Opener) -> None:
    catalog = await open_catalog()
    await catalog.add(document("a", "s1"))
    await catalog.update("a", DocumentStatus.INDEXED)
    assert await catalog.claim("a", "worker", 30) is None
