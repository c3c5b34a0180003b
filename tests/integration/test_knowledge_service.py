"""KnowledgeService in-process, as API replicas share it: two services on one catalog and one
set of stores (the real Triton embedder, the embedded stores). Races the HTTP tests cannot aim
at: a delete served by another replica mid-ingestion, and a full re-index while ingesting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kubechat.catalog import load_catalog
from kubechat.core.resources import load_knowledge_bases_from_dir
from kubechat.embedded.tritonserver import TritonServer
from kubechat.knowledge.service import KnowledgeService
from kubechat.knowledge.uploads import Upload
from kubechat.stores.documents import Document, DocumentStatus
from kubechat.stores.objects.files import FileObjectStore
from kubechat.stores.sqlite.chunks import SQLiteChunkStore
from kubechat.stores.sqlite.documents import SQLiteDocumentCatalog
from kubechat.triton.client import TritonGateway
from tests.conftest import EXAMPLE_MODELS, TEST_KNOWLEDGE_BASES
from tests.integration.test_ingestion_durability import long_document


class Replicas:
    def __init__(self, first: KnowledgeService, second: KnowledgeService) -> None:
        self.first, self.second = first, second

    async def settled(self, document_id: str) -> Document:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            document = await self.first.documents.find(document_id)
            if document is None or document.status in (DocumentStatus.INDEXED, DocumentStatus.FAILED):
                assert document is not None
                return document
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{document_id} never settled")

    async def embedding(self, document_id: str) -> Document:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            document = await self.first.documents.find(document_id)
            assert document is not None
            if document.status is DocumentStatus.EMBEDDING and document.lease_owner:
                return document
            await asyncio.sleep(0.01)
        raise TimeoutError(f"{document_id} never started embedding")


@pytest.fixture
async def replicas(triton: TritonServer, state_dir: Path, tmp_path: Path) -> AsyncIterator[Replicas]:
    catalog = await SQLiteDocumentCatalog.open(tmp_path / "documents.sqlite3")
    chunks = await SQLiteChunkStore.open(tmp_path / "chunks.sqlite3")
    objects = FileObjectStore(tmp_path / "documents")
    models = load_catalog(EXAMPLE_MODELS, state_dir)
    gateway = TritonGateway(triton.grpc_url)
    kbs = load_knowledge_bases_from_dir(TEST_KNOWLEDGE_BASES)
    services = [KnowledgeService(kbs, models, catalog, objects, chunks, gateway, workers=1) for _ in (0, 1)]
    for service in services:
        await service.start()
    yield Replicas(*services)
    for service in services:
        await service.stop()
    await gateway.close()
    await catalog.close()
    await chunks.close()


async def test_a_delete_on_another_replica_stops_ingestion(replicas: Replicas) -> None:
    (outcome,) = await replicas.first.upload(
        "handbook", "alice", [Upload("gears.txt", long_document("gear", 2500))]
    )
    ingesting = await replicas.embedding(outcome.document.id)
    # Whichever replica ingests it, the other one serves the delete.
    other = replicas.second if ingesting.lease_owner == replicas.first.worker_id else replicas.first
    await other.delete_document("handbook", "alice", outcome.document.id)
    kb = other.get("handbook", "alice")
    deadline = time.monotonic() + 30
    # The ingesting replica notices.
    while replicas.first.ingestion.running or replicas.second.ingestion.running:
        assert time.monotonic() < deadline, "ingestion kept running after the delete"
        await asyncio.sleep(0.05)
    assert await replicas.first.chunks.count(kb) == 0  # nothing it wrote survives
    assert await replicas.first.documents.find(outcome.document.id) is None


async def test_reindex_while_ingesting_loses_nothing(replicas: Replicas) -> None:
    uploads = [Upload(f"part{i}.txt", long_document(f"part{i}", 400)) for i in range(3)]
    outcomes = await replicas.first.upload("handbook", "alice", uploads)
    await replicas.embedding(outcomes[0].document.id)
    await replicas.second.reindex("handbook", "alice")  # mid-ingestion, from the other replica
    documents = [await replicas.settled(o.document.id) for o in outcomes]
    assert [d.status for d in documents] == ["indexed"] * 3
    kb = replicas.first.get("handbook", "alice")
    deadline = time.monotonic() + 30
    while await replicas.first.documents.rebuilds():  # activation follows the last document
        assert time.monotonic() < deadline, "the new generation was never activated"
        await asyncio.sleep(0.05)
    # Every indexed document is searchable, each chunk exactly once, in the live generation.
    assert await replicas.first.chunks.count(kb) == sum(d.chunks for d in documents)
    for document in documents:
        assert await replicas.first.chunks.count(kb, document.id) == document.chunks
