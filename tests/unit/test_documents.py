"""The SQLite document catalog: de-duplication, status, pagination, resumable work."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kubechat.api.errors import DocumentNotFoundError, InvalidRequestError
from kubechat.rag.documents import Document, DocumentStatus, SQLiteDocumentCatalog


def document(doc_id: str, sha: str, kb: str = "docs", created: float | None = None) -> Document:
    now = created if created is not None else time.time()
    return Document(
        id=doc_id, knowledge_base=kb, name=f"{doc_id}.txt", format="text", content_type="text/plain",
        size=3, sha256=sha, object_key=f"k/{sha}", uploaded_by="alice", status=DocumentStatus.QUEUED,
        created_at=now, updated_at=now,
    )  # fmt: skip


async def test_same_bytes_in_a_knowledge_base_are_one_document(tmp_path: Path) -> None:
    catalog = await SQLiteDocumentCatalog.open(tmp_path / "d.sqlite3")
    first, created = await catalog.add(document("a", "s1"))
    again, created_again = await catalog.add(document("b", "s1"))
    other_kb, created_other = await catalog.add(document("c", "s1", kb="other"))
    assert created and not created_again and created_other
    assert again == first and other_kb.id == "c"
    await catalog.close()


async def test_status_progress_and_lookup(tmp_path: Path) -> None:
    catalog = await SQLiteDocumentCatalog.open(tmp_path / "d.sqlite3")
    await catalog.add(document("a", "s1"))
    await catalog.update("a", DocumentStatus.EMBEDDING, chunks=10, chunks_indexed=4, pages=2)
    stored = await catalog.get("docs", "a")
    assert (stored.status, stored.chunks, stored.chunks_indexed, stored.pages) == ("embedding", 10, 4, 2)
    with pytest.raises(DocumentNotFoundError):
        await catalog.get("other", "a")  # a document is found only in its own knowledge base
    assert await catalog.find("missing") is None
    with pytest.raises(TypeError):
        await catalog.update("a", DocumentStatus.INDEXED, name="renamed")
    await catalog.close()


async def test_unfinished_documents_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite3"
    catalog = await SQLiteDocumentCatalog.open(path)
    for i, status in enumerate(DocumentStatus):
        await catalog.add(document(f"d{i}", f"s{i}", created=float(i)))
        await catalog.update(f"d{i}", status)
    await catalog.set_rebuild("docs", "kubechat-kb.default.docs.000002")
    await catalog.close()
    reopened = await SQLiteDocumentCatalog.open(path)
    assert [d.status for d in await reopened.pending()] == ["queued", "parsing", "embedding"]
    assert await reopened.count_pending("docs") == 3
    assert await reopened.rebuilds() == {"docs": "kubechat-kb.default.docs.000002"}
    await reopened.set_rebuild("docs", None)
    assert await reopened.rebuilds() == {}
    assert await reopened.status_counts("docs") == {s.value: 1 for s in DocumentStatus}
    await reopened.close()


async def test_requeue_clears_errors(tmp_path: Path) -> None:
    catalog = await SQLiteDocumentCatalog.open(tmp_path / "d.sqlite3")
    await catalog.add(document("a", "s1"))
    await catalog.add(document("b", "s2"))
    await catalog.update("a", DocumentStatus.FAILED, error_code="corrupt_document", error_message="bad")
    assert await catalog.requeue("docs", ["a"]) == 1
    requeued = await catalog.get("docs", "a")
    assert (requeued.status, requeued.error_code, requeued.error_message) == ("queued", "", "")
    assert await catalog.requeue("docs") == 2
    await catalog.close()


async def test_listing_is_paginated_and_filtered(tmp_path: Path) -> None:
    catalog = await SQLiteDocumentCatalog.open(tmp_path / "d.sqlite3")
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
    await catalog.close()
