"""KnowledgeBase reconciliation: index and object prefix, counts, deletion policy, bad specs.

The stores are the real embedded chunk store and document catalog (they pass the same
conformance suite as the Elasticsearch ones) and moto's S3 server for the MinIO prefix.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from kubechat.core.resources import KnowledgeBase, parse_resource
from kubechat.operator.knowledge_bases import MARKER, KnowledgeStores
from kubechat.stores.chunks import ChunkRecord
from kubechat.stores.documents import Document, DocumentStatus
from tests.operator.conftest import NAMESPACE, Cluster
from tests.polling import eventually

DOCUMENT: dict[str, Any] = {
    "apiVersion": "kubechat.io/v1alpha1",
    "kind": "KnowledgeBase",
    "metadata": {"name": "handbook", "namespace": NAMESPACE},
    "spec": {
        "embedding": {"model": "minilm", "dimensions": 4},
        "chunking": {"size": 64, "overlap": 16},
        "access": {"owners": ["alice"]},
        "deletionPolicy": "Retain",
    },
}


def knowledge_base(**spec: Any) -> dict[str, Any]:
    document = copy.deepcopy(DOCUMENT)
    document["spec"].update(spec)
    return document


def parsed(document: dict[str, Any]) -> KnowledgeBase:
    return parse_resource(KnowledgeBase, document)


async def ready(cluster: Cluster, name: str = "handbook") -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found = await cluster.condition("KnowledgeBase", name, "Ready")
        return found if found and found["status"] == "True" else None

    await eventually(check, what=f"KnowledgeBase {name} Ready")
    return await cluster.status("KnowledgeBase", name)


async def add_document(stores: KnowledgeStores, kb: KnowledgeBase, document_id: str) -> None:
    await stores.documents.add(
        Document(
            id=document_id, knowledge_base=kb.name, name=f"{document_id}.txt", format="text",
            content_type="text/plain", size=5, sha256=document_id * 4,
            object_key=kb.object_prefix + document_id, uploaded_by="alice",
            status=DocumentStatus.INDEXED, created_at=0.0, updated_at=0.0,
        )
    )  # fmt: skip
    await stores.objects.put(kb.object_prefix + document_id, b"hello", "text/plain", {})
    index = await stores.chunks.ensure_index(kb)
    vector = np.ones(4, dtype=np.float32) / 2
    chunk = ChunkRecord(document_id, f"{document_id}.txt", 0, "hello", vector=vector)
    await stores.chunks.upsert(index, [chunk])


async def test_creating_a_knowledge_base_provisions_index_prefix_and_status(
    cluster: Cluster, stores: KnowledgeStores
) -> None:
    await cluster.create(knowledge_base())
    status = await ready(cluster)
    kb = parsed(DOCUMENT)
    assert status["phase"] == "Ready"
    assert status["alias"] == f"kubechat-kb.{NAMESPACE}.handbook"
    assert status["index"] == kb.generation_index(1)
    assert status["objectPrefix"] == f"knowledge-bases/{NAMESPACE}/handbook/"
    assert status["documentCount"] == 0
    assert status["observedGeneration"] == 1
    # The prefix exists in S3 and says whose it is; the finalizer guards the external data.
    assert await stores.objects.exists(kb.object_prefix + MARKER)
    found = await cluster.get("KnowledgeBase", "handbook")
    assert found is not None
    assert "kubechat.io/finalizer" in found["metadata"]["finalizers"]


async def test_counts_are_refreshed_on_a_timer(cluster: Cluster, stores: KnowledgeStores) -> None:
    await cluster.create(knowledge_base())
    await ready(cluster)
    kb = parsed(DOCUMENT)
    await add_document(stores, kb, "doc-1")

    async def counted() -> bool:
        status = await cluster.status("KnowledgeBase", "handbook")
        return status.get("documentCount") == 1 and status.get("chunkCount") == 1

    await eventually(counted, what="documentCount 1")


async def test_delete_with_retain_keeps_index_documents_and_objects(
    cluster: Cluster, stores: KnowledgeStores
) -> None:
    await cluster.create(knowledge_base(deletionPolicy="Retain"))
    await ready(cluster)
    kb = parsed(DOCUMENT)
    await add_document(stores, kb, "doc-1")
    await cluster.delete("KnowledgeBase", "handbook")

    async def gone() -> bool:
        return await cluster.get("KnowledgeBase", "handbook") is None

    await eventually(gone, what="the finalizer released")
    assert await stores.chunks.count(kb) == 1
    assert await stores.objects.exists(kb.object_prefix + "doc-1")
    assert (await stores.documents.status_counts(kb.name)) == {"indexed": 1}


async def test_delete_with_delete_removes_index_documents_and_objects(
    cluster: Cluster, stores: KnowledgeStores
) -> None:
    document = knowledge_base(deletionPolicy="Delete")
    await cluster.create(document)
    await ready(cluster)
    kb = parsed(document)
    await add_document(stores, kb, "doc-1")
    await add_document(stores, kb, "doc-2")
    await cluster.delete("KnowledgeBase", "handbook")

    async def gone() -> bool:
        return await cluster.get("KnowledgeBase", "handbook") is None

    await eventually(gone, what="the finalizer released")
    assert await stores.chunks.count(kb) == 0
    assert await stores.objects.list_keys(kb.object_prefix) == []
    assert await stores.documents.status_counts(kb.name) == {}


async def test_a_spec_the_schema_would_reject_gets_a_failed_condition(cluster: Cluster) -> None:
    # The CRD's CEL rule refuses this at admission; an operator must still not act on it.
    await cluster.create(knowledge_base(chunking={"size": 64, "overlap": 64}))

    async def failed() -> dict[str, Any] | None:
        found = await cluster.condition("KnowledgeBase", "handbook", "Ready")
        return found if found and found["reason"] == "InvalidSpec" else None

    condition = await eventually(failed, what="InvalidSpec")
    assert "overlap" in condition["message"]
    assert (await cluster.status("KnowledgeBase", "handbook"))["phase"] == "Failed"


async def test_an_index_of_another_embedding_is_reported_not_mixed(
    cluster: Cluster, stores: KnowledgeStores
) -> None:
    # An index left by an earlier KnowledgeBase of that name with another embedding (Retain).
    await stores.chunks.ensure_index(parsed(knowledge_base(embedding={"model": "other", "dimensions": 8})))
    await cluster.create(knowledge_base())

    async def mismatch() -> dict[str, Any] | None:
        found = await cluster.condition("KnowledgeBase", "handbook", "Ready")
        return found if found and found["reason"] == "EmbeddingMismatch" else None

    condition = await eventually(mismatch, what="EmbeddingMismatch")
    assert "8-dimensional" in condition["message"]


# -- spec drift: ReindexRequired, and the opt-in re-index ---------------------------------------


async def reindex_condition(cluster: Cluster, status: str, reason: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found = await cluster.condition("KnowledgeBase", "handbook", "ReindexRequired")
        return found if found and (found["status"], found["reason"]) == (status, reason) else None

    return await eventually(check, what=f"ReindexRequired {status} {reason}")


async def test_a_changed_index_spec_is_reported_until_a_reindex_applies_it(
    cluster: Cluster, stores: KnowledgeStores
) -> None:
    await cluster.create(knowledge_base())
    await ready(cluster)
    await reindex_condition(cluster, "False", "IndexMatchesSpec")
    kb = parsed(DOCUMENT)
    await add_document(stores, kb, "doc-1")

    changed = {"index": {"similarity": "dot_product", "analyzer": "english"}}
    await cluster.patch_spec("KnowledgeBase", "handbook", changed, generation=2)

    condition = await reindex_condition(cluster, "True", "SpecChanged")
    assert "index.similarity: cosine -> dot_product" in condition["message"]
    assert "index.analyzer: standard -> english" in condition["message"]
    assert "/knowledge-bases/handbook/reindex" in condition["message"]
    assert condition["observedGeneration"] == 2
    # Reported only: nothing was rebuilt, the index and its documents are as they were.
    assert await stores.documents.rebuilds() == {}
    status = await cluster.status("KnowledgeBase", "handbook")
    assert status["phase"] == "Ready" and status["index"] == kb.generation_index(1)
    assert (await stores.documents.status_counts(kb.name)) == {"indexed": 1}

    # The API's re-index (here by hand, as KnowledgeService.reindex does) applies it.
    new = parsed(knowledge_base(**changed))
    rebuilt = await stores.chunks.create_generation(new)
    await stores.chunks.activate(new, rebuilt)

    await reindex_condition(cluster, "False", "IndexMatchesSpec")


async def test_reindex_policy_automatic_starts_the_reindex_itself(
    cluster: Cluster, stores: KnowledgeStores
) -> None:
    await cluster.create(knowledge_base())
    await ready(cluster)
    kb = parsed(DOCUMENT)
    await add_document(stores, kb, "doc-1")

    changed = {"index": {"similarity": "dot_product"}, "reindexPolicy": "Automatic"}
    await cluster.patch_spec("KnowledgeBase", "handbook", changed, generation=2)

    condition = await reindex_condition(cluster, "True", "Reindexing")
    new_index = kb.generation_index(2)
    assert new_index in condition["message"] and "index.similarity" in condition["message"]
    # As POST /reindex does: a generation recorded for every replica, the documents queued again.
    assert await stores.documents.rebuilds() == {"handbook": new_index}
    assert (await stores.documents.status_counts(kb.name)) == {"queued": 1}
    # Started once: the count timer sees the rebuild under way and leaves it.
    await reindex_condition(cluster, "True", "Reindexing")
    assert await stores.documents.rebuilds() == {"handbook": new_index}

    # An API replica ingests the document into it and switches the alias (as IndexGenerations.finish).
    await stores.documents.update("doc-1", DocumentStatus.INDEXED)
    await stores.chunks.activate(parsed(knowledge_base(**changed)), new_index)
    await stores.documents.set_rebuild("handbook", None)

    await reindex_condition(cluster, "False", "IndexMatchesSpec")
    assert (await cluster.status("KnowledgeBase", "handbook"))["index"] == new_index


async def test_reindex_policy_automatic_without_documents_switches_at_once(
    cluster: Cluster, stores: KnowledgeStores
) -> None:
    await cluster.create(knowledge_base(reindexPolicy="Automatic"))
    await ready(cluster)
    kb = parsed(DOCUMENT)

    await cluster.patch_spec("KnowledgeBase", "handbook", {"index": {"analyzer": "english"}}, generation=2)

    await reindex_condition(cluster, "False", "IndexMatchesSpec")

    async def switched() -> bool:
        return (await cluster.status("KnowledgeBase", "handbook")).get("index") == kb.generation_index(2)

    await eventually(switched, what="the alias on generation 2")
    assert await stores.documents.rebuilds() == {}
