"""ElasticsearchChunkStore against a real cluster, when there is one.

Runs only with `KUBECHAT_TEST_ES_URL` set (credentials may sit in the URL, or in
`KUBECHAT_TEST_ES_API_KEY`). Each test works on its own uniquely named KnowledgeBase and drops
it afterwards, so the suite can share a cluster.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from elasticsearch import AsyncElasticsearch

from kubechat.core.resources import KnowledgeBase
from kubechat.stores.chunks import ChunkRecord
from kubechat.stores.elasticsearch.chunks import ElasticsearchChunkStore, index_body
from kubechat.stores.elasticsearch.client import new_client
from kubechat.stores.errors import EmbeddingMismatchError

ES_URL = os.environ.get("KUBECHAT_TEST_ES_URL", "")
ES_API_KEY = os.environ.get("KUBECHAT_TEST_ES_API_KEY") or None

pytestmark = pytest.mark.skipif(
    not ES_URL, reason="needs a live Elasticsearch: set KUBECHAT_TEST_ES_URL (the kind e2e does)"
)

DIMS = 4


def knowledge_base(name: str, *, dimensions: int = DIMS, model: str = "minilm") -> KnowledgeBase:
    return KnowledgeBase.model_validate(
        {
            "apiVersion": "kubechat.io/v1alpha1",
            "kind": "KnowledgeBase",
            "metadata": {"name": name, "namespace": "e2e"},
            "spec": {
                "embedding": {"model": model, "dimensions": dimensions},
                "index": {"similarity": "cosine", "hnsw": {"m": 8, "efConstruction": 50}, "replicas": 0},
                "access": {"owners": ["*"]},
            },
        }
    )


def chunk(
    document_id: str, ordinal: int, text: str, vector: list[float], page: int | None = None
) -> ChunkRecord:
    return ChunkRecord(
        document_id=document_id, document_name=f"{document_id}.md", ordinal=ordinal, text=text, page=page,
        section="Intro" if ordinal == 0 else "", vector=np.array(vector, dtype=np.float32),
    )  # fmt: skip


CORPUS = [
    chunk("guide", 0, "Kubernetes schedules pods onto nodes.", [1, 0, 0, 0], page=1),
    chunk("guide", 1, "Triton serves models over gRPC streaming.", [0, 1, 0, 0], page=2),
    chunk("notes", 0, "Elasticsearch stores dense vectors for kNN search.", [0, 0, 1, 0]),
]


@pytest.fixture
async def store() -> AsyncIterator[ElasticsearchChunkStore]:
    client = new_client(ES_URL, api_key=ES_API_KEY)
    yield ElasticsearchChunkStore(client, bulk_chunk_size=2)  # several bulk requests per upsert
    await client.close()


@pytest.fixture
async def raw() -> AsyncIterator[AsyncElasticsearch]:
    """A plain client to look at what the store left in the cluster."""
    client = AsyncElasticsearch(ES_URL, api_key=ES_API_KEY)
    yield client
    await client.close()


@pytest.fixture
async def kb(store: ElasticsearchChunkStore) -> AsyncIterator[KnowledgeBase]:
    base = knowledge_base(f"live-{uuid.uuid4().hex[:10]}")
    yield base
    await store.drop(base)


async def indices_of(raw: AsyncElasticsearch, kb: KnowledgeBase) -> set[str]:
    response = await raw.indices.get_alias(index=f"{kb.index_alias}.*", expand_wildcards=["open", "closed"])
    return set(response.body)


async def alias_targets(raw: AsyncElasticsearch, kb: KnowledgeBase) -> set[str]:
    if not (await raw.indices.exists_alias(name=kb.index_alias)):
        return set()
    return set((await raw.indices.get_alias(name=kb.index_alias)).body)


def assert_within(expected: dict[str, Any], actual: dict[str, Any], where: str) -> None:
    """Every key asked for is kept as asked; the cluster may add defaults of its own."""
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_within(value, actual.get(key, {}), f"{where}.{key}")
        else:
            assert actual.get(key) == value, f"{where}.{key}: {actual.get(key)!r} != {value!r}"


async def test_a_knowledge_base_from_creation_to_drop(
    store: ElasticsearchChunkStore, raw: AsyncElasticsearch, kb: KnowledgeBase
) -> None:
    index = await store.ensure_index(kb)
    assert index == f"{kb.index_alias}.000001"
    assert await store.ensure_index(kb) == index
    assert await alias_targets(raw, kb) == {index}

    await store.upsert(index, CORPUS)
    # Searchable as soon as upsert returns (refresh=wait_for), with no explicit refresh.
    assert await store.count(kb) == 3
    assert await store.count(kb, "guide") == 2

    nearest = await store.knn(kb, np.array([0.9, 0.1, 0, 0], dtype=np.float32), 2)
    assert [hit.chunk.chunk_id for hit in nearest] == ["guide:0", "guide:1"]
    assert nearest[0].score > nearest[1].score
    filtered = await store.knn(kb, np.array([1, 0, 0, 0], dtype=np.float32), 3, document_ids=["notes"])
    assert [hit.chunk.chunk_id for hit in filtered] == ["notes:0"]

    matches = await store.text_search(kb, "dense vectors", 5)
    assert [hit.chunk.chunk_id for hit in matches] == ["notes:0"] and matches[0].score > 0
    assert await store.text_search(kb, "pods", 5, document_ids=["notes"]) == []
    assert [h.chunk.chunk_id for h in await store.text_search(kb, 'triton" OR (grpc* AND -:', 5)] == [
        "guide:1"
    ]

    assert await store.get_chunk(kb, "guide:1") == CORPUS[1]
    stored = await store.get_chunk(kb, "notes:0")
    assert stored is not None and stored.page is None and stored.vector is None
    assert await store.get_chunk(kb, "guide:9") is None

    replaced = chunk("guide", 0, "Helm installs charts.", [0, 0, 0, 1])
    await store.upsert(index, [replaced])
    assert await store.count(kb) == 3
    assert [h.chunk.chunk_id for h in await store.text_search(kb, "helm", 5)] == ["guide:0"]

    await store.delete_document(index, "guide")
    assert await store.count(kb) == 1
    await store.delete_document(index, "guide")  # idempotent

    new = await store.create_generation(kb)
    assert new == f"{kb.index_alias}.000002"
    await store.upsert(new, [chunk("fresh", 0, "Skaffold builds images.", [0, 0, 0, 1])])
    assert await store.count(kb) == 1 and await store.get_chunk(kb, "fresh:0") is None  # still the old one

    await store.activate(kb, new)
    assert await alias_targets(raw, kb) == {new}
    assert await indices_of(raw, kb) == {new}
    assert await store.ensure_index(kb) == new
    assert [h.chunk.chunk_id for h in await store.text_search(kb, "skaffold", 3)] == ["fresh:0"]

    await store.drop(kb)
    assert await indices_of(raw, kb) == set()
    assert await store.count(kb) == 0
    assert await store.knn(kb, np.ones(DIMS, dtype=np.float32), 3) == []
    assert await store.get_chunk(kb, "fresh:0") is None


async def test_the_cluster_keeps_the_mapping_index_body_asks_for(
    store: ElasticsearchChunkStore, raw: AsyncElasticsearch, kb: KnowledgeBase
) -> None:
    index = await store.ensure_index(kb)

    mappings: dict[str, Any] = (await raw.indices.get_mapping(index=index)).body[index]["mappings"]
    expected = index_body(kb)["mappings"]
    assert mappings["dynamic"] == "strict"
    assert mappings["_meta"] == expected["_meta"]
    for field, spec in expected["properties"].items():
        assert_within(spec, mappings["properties"][field], field)
    settings = (await raw.indices.get_settings(index=index)).body[index]["settings"]["index"]
    assert settings["number_of_shards"] == "1" and settings["number_of_replicas"] == "0"


async def test_another_embedding_is_refused(store: ElasticsearchChunkStore, kb: KnowledgeBase) -> None:
    index = await store.ensure_index(kb)

    with pytest.raises(EmbeddingMismatchError, match="8 dimensions"):
        await store.ensure_index(knowledge_base(kb.name, dimensions=8))
    with pytest.raises(EmbeddingMismatchError, match="'bge-small'"):
        await store.ensure_index(knowledge_base(kb.name, model="bge-small"))
    with pytest.raises(EmbeddingMismatchError):
        await store.upsert(index, [chunk("x", 0, "too long", [1, 2, 3, 4, 5])])
    with pytest.raises(EmbeddingMismatchError):
        await store.knn(kb, np.ones(DIMS - 1, dtype=np.float32), 1)


async def test_another_store_sees_the_vector_size_in_the_cluster(
    store: ElasticsearchChunkStore, kb: KnowledgeBase
) -> None:
    index = await store.ensure_index(kb)
    client = new_client(ES_URL, api_key=ES_API_KEY)  # another process's, knowing nothing of the index
    try:
        fresh = ElasticsearchChunkStore(client)
        with pytest.raises(EmbeddingMismatchError):
            await fresh.upsert(index, [chunk("x", 0, "too short", [1, 2])])
        await fresh.upsert(index, CORPUS[:1])
    finally:
        await client.close()
    assert await store.count(kb) == 1


async def test_replicas_racing_to_create_the_index_agree(
    store: ElasticsearchChunkStore, raw: AsyncElasticsearch, kb: KnowledgeBase
) -> None:
    clients = [new_client(ES_URL, api_key=ES_API_KEY) for _ in range(3)]  # three more replicas
    try:
        others = [ElasticsearchChunkStore(client) for client in clients]
        created = await asyncio.gather(*(other.ensure_index(kb) for other in [store, *others]))
    finally:
        await asyncio.gather(*(client.close() for client in clients))

    assert set(created) == {f"{kb.index_alias}.000001"}
    assert await alias_targets(raw, kb) == set(created)


async def test_a_knowledge_base_without_an_index_reads_as_empty(store: ElasticsearchChunkStore) -> None:
    never_created = knowledge_base(f"live-{uuid.uuid4().hex[:10]}")

    assert await store.count(never_created) == 0
    assert await store.text_search(never_created, "pods", 3) == []
    assert await store.knn(never_created, np.ones(DIMS, dtype=np.float32), 3) == []
    assert await store.get_chunk(never_created, "guide:0") is None
    await store.drop(never_created)  # nothing to drop is fine
