"""One behaviour for every ChunkStore: the embedded SQLite store and Elasticsearch.

The Elasticsearch run needs a live cluster (`KUBECHAT_TEST_ES_URL`, which the kind e2e sets);
its HTTP-level behaviour is also tested without one in tests/unit/test_elasticsearch_store.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubechat.core.resources import KnowledgeBase
from kubechat.stores.chunks import ChunkRecord, ChunkStore, SpecDrift
from kubechat.stores.errors import EmbeddingMismatchError, IndexMissingError, InvalidVectorError
from kubechat.stores.sqlite.chunks import SQLiteChunkStore

ES_URL = os.environ.get("KUBECHAT_TEST_ES_URL", "")


@pytest.fixture(params=["sqlite", "elasticsearch"])
async def chunk_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ChunkStore]:
    store: ChunkStore
    client = None
    if request.param == "sqlite":
        store = await SQLiteChunkStore.open(tmp_path / "chunks.sqlite3")
    else:
        if not ES_URL:
            pytest.skip("needs a live Elasticsearch: set KUBECHAT_TEST_ES_URL (the kind e2e does)")
        from kubechat.stores.elasticsearch.chunks import ElasticsearchChunkStore
        from kubechat.stores.elasticsearch.client import new_client

        client = new_client(ES_URL)  # the store's opener closes it, not the store
        store = ElasticsearchChunkStore(client)
    yield store
    await store.close()
    if client is not None:
        await client.close()


def knowledge_base(name: str | None = None, dimensions: int = 4, model: str = "minilm") -> KnowledgeBase:
    return KnowledgeBase.model_validate(
        {
            "apiVersion": "kubechat.io/v1alpha1",
            "kind": "KnowledgeBase",
            "metadata": {"name": name or f"conformance-{uuid.uuid4().hex[:8]}"},
            "spec": {
                "embedding": {"model": model, "dimensions": dimensions},
                "index": {"replicas": 0},
                "access": {"owners": ["alice"]},
            },
        }
    )


@pytest.fixture
async def kb(chunk_store: ChunkStore) -> AsyncIterator[KnowledgeBase]:
    base = knowledge_base()
    yield base
    await chunk_store.drop(base)


def vec(*values: float) -> Any:
    return np.array(values, dtype=np.float32)


def chunk(document: str, ordinal: int, text: str, vector: Any, page: int | None = None) -> ChunkRecord:
    return ChunkRecord(
        document_id=document, document_name=f"{document}.pdf", ordinal=ordinal, text=text,
        page=page, section="Intro" if ordinal == 0 else "", vector=vector,
    )  # fmt: skip


CORPUS = [
    chunk("d1", 0, "Kubernetes schedules pods onto nodes.", vec(1, 0, 0, 0), page=1),
    chunk("d1", 1, "Triton serves models over gRPC streaming.", vec(0, 1, 0, 0), page=2),
    chunk("d2", 0, "Elasticsearch stores dense vectors for kNN search.", vec(0, 0, 1, 0)),
    chunk("d2", 1, "Pods restart when their liveness probes fail on the nodes.", vec(0.8, 0, 0, 0.6)),
]


async def filled(store: ChunkStore, kb: KnowledgeBase) -> str:
    index = await store.ensure_index(kb)
    await store.upsert(index, CORPUS)
    return index


async def test_ensure_index_is_idempotent(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    first = await chunk_store.ensure_index(kb)
    assert await chunk_store.ensure_index(kb) == first
    assert await chunk_store.count(kb) == 0


async def test_looking_up_a_missing_index_creates_nothing(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    """create=False is how the API finds the index the operator creates in a cluster."""
    with pytest.raises(IndexMissingError):
        await chunk_store.ensure_index(kb, create=False)
    with pytest.raises(IndexMissingError):
        await chunk_store.ensure_index(kb, create=False)  # still nothing: the lookup made none
    assert await chunk_store.count(kb) == 0
    assert await chunk_store.knn(kb, vec(1, 0, 0, 0), k=3) == []
    assert await chunk_store.text_search(kb, "pods", k=3) == []


async def test_looking_up_finds_the_index_another_client_created(
    chunk_store: ChunkStore, kb: KnowledgeBase
) -> None:
    created = await filled(chunk_store, kb)  # as the operator does
    assert await chunk_store.ensure_index(kb, create=False) == created
    assert await chunk_store.count(kb) == 4


async def test_looking_up_checks_the_embedding(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    await chunk_store.ensure_index(kb)
    with pytest.raises(EmbeddingMismatchError):
        await chunk_store.ensure_index(knowledge_base(kb.name, dimensions=8), create=False)
    with pytest.raises(EmbeddingMismatchError):
        await chunk_store.ensure_index(knowledge_base(kb.name, model="other-embedder"), create=False)


async def test_looking_up_sees_only_the_live_generation(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    """A generation not yet activated is no live index; an activated one is, and a dropped
    knowledge base has none again."""
    building = await chunk_store.create_generation(kb)
    with pytest.raises(IndexMissingError):
        await chunk_store.ensure_index(kb, create=False)
    await chunk_store.activate(kb, building)
    assert await chunk_store.ensure_index(kb, create=False) == building
    await chunk_store.drop(kb)
    with pytest.raises(IndexMissingError):
        await chunk_store.ensure_index(kb, create=False)


async def test_upsert_then_read_back(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    await filled(chunk_store, kb)
    assert await chunk_store.count(kb) == 4
    assert await chunk_store.count(kb, "d1") == 2
    stored = await chunk_store.get_chunk(kb, "d1:1")
    assert stored == CORPUS[1]  # vectors are not part of equality
    assert stored is not None and stored.page == 2 and stored.document_name == "d1.pdf"
    no_page = await chunk_store.get_chunk(kb, "d2:0")
    assert no_page is not None and no_page.page is None
    assert await chunk_store.get_chunk(kb, "d9:0") is None


async def test_knn_ranks_by_similarity(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    await filled(chunk_store, kb)
    hits = await chunk_store.knn(kb, vec(1, 0, 0, 0), k=2)
    assert [h.chunk.chunk_id for h in hits] == ["d1:0", "d2:1"]
    assert hits[0].score > hits[1].score
    assert hits[0].chunk.text == CORPUS[0].text


async def test_knn_filters_by_document(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    await filled(chunk_store, kb)
    hits = await chunk_store.knn(kb, vec(1, 0, 0, 0), k=3, document_ids=["d2"])
    assert [h.chunk.chunk_id for h in hits] == ["d2:1", "d2:0"]


async def test_text_search_ranks_by_bm25(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    await filled(chunk_store, kb)
    hits = await chunk_store.text_search(kb, "pods nodes", k=10)
    assert {h.chunk.chunk_id for h in hits} == {"d1:0", "d2:1"}
    assert all(h.score > 0 for h in hits)
    only_d2 = await chunk_store.text_search(kb, "pods nodes", k=10, document_ids=["d2"])
    assert [h.chunk.chunk_id for h in only_d2] == ["d2:1"]
    assert await chunk_store.text_search(kb, "zeppelin", k=10) == []


async def test_text_search_takes_any_user_text(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    await filled(chunk_store, kb)
    # Query syntax characters are words to search for, never operators.
    hits = await chunk_store.text_search(kb, 'triton" OR NOT (grpc* AND -:', k=10)
    assert [h.chunk.chunk_id for h in hits] == ["d1:1"]
    assert await chunk_store.text_search(kb, "  ?! ", k=10) == []


async def test_upsert_replaces_a_chunk(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    index = await filled(chunk_store, kb)
    await chunk_store.upsert(index, [chunk("d1", 0, "Helm installs charts.", vec(0, 0, 0, 1))])
    assert await chunk_store.count(kb) == 4
    assert await chunk_store.text_search(kb, "schedules", k=5) == []
    assert [h.chunk.chunk_id for h in await chunk_store.text_search(kb, "helm", k=5)] == ["d1:0"]
    assert (await chunk_store.knn(kb, vec(0, 0, 0, 1), k=1))[0].chunk.chunk_id == "d1:0"


async def test_delete_document(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    index = await filled(chunk_store, kb)
    await chunk_store.delete_document(index, "d1")
    assert await chunk_store.count(kb) == 2
    assert {h.chunk.document_id for h in await chunk_store.knn(kb, vec(1, 0, 0, 0), k=4)} == {"d2"}
    assert await chunk_store.text_search(kb, "triton", k=5) == []
    await chunk_store.delete_document(index, "d1")  # idempotent


async def test_other_embedding_is_refused(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    index = await filled(chunk_store, kb)
    resized = knowledge_base(kb.name, dimensions=8)
    with pytest.raises(EmbeddingMismatchError, match="8"):
        await chunk_store.ensure_index(resized)
    with pytest.raises(EmbeddingMismatchError):
        await chunk_store.ensure_index(knowledge_base(kb.name, model="other-embedder"))
    with pytest.raises(EmbeddingMismatchError):
        await chunk_store.upsert(index, [chunk("d3", 0, "too long", vec(1, 2, 3, 4, 5))])
    with pytest.raises(EmbeddingMismatchError):
        await chunk_store.knn(kb, vec(1, 2, 3), k=1)
    assert await chunk_store.count(kb) == 4


async def test_reindex_into_a_new_generation(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    old = await filled(chunk_store, kb)
    new = await chunk_store.create_generation(kb)
    assert new != old
    await chunk_store.upsert(new, [chunk("d3", 0, "Skaffold builds images.", vec(0, 0, 0, 1))])
    assert await chunk_store.count(kb) == 4  # readers still see the old generation
    await chunk_store.activate(kb, new)
    assert await chunk_store.count(kb) == 1
    assert await chunk_store.ensure_index(kb) == new
    assert [h.chunk.chunk_id for h in await chunk_store.text_search(kb, "skaffold", k=3)] == ["d3:0"]
    assert await chunk_store.text_search(kb, "triton", k=3) == []


async def test_knowledge_bases_are_separate(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    await filled(chunk_store, kb)
    other = knowledge_base()
    try:
        await chunk_store.ensure_index(other)
        assert await chunk_store.count(other) == 0
        assert await chunk_store.text_search(other, "pods", k=5) == []
        assert await chunk_store.knn(other, vec(1, 0, 0, 0), k=5) == []
    finally:
        await chunk_store.drop(other)


async def test_drop_removes_everything(chunk_store: ChunkStore, kb: KnowledgeBase) -> None:
    await filled(chunk_store, kb)
    await chunk_store.drop(kb)
    assert await chunk_store.count(kb) == 0
    assert await chunk_store.knn(kb, vec(1, 0, 0, 0), k=3) == []
    assert await chunk_store.get_chunk(kb, "d1:0") is None
    # A dropped knowledge base can start over, even with another embedding.
    assert await chunk_store.ensure_index(knowledge_base(kb.name, dimensions=8))


async def test_batches_written_unrefreshed_are_searchable_after_make_visible(
    chunk_store: ChunkStore, kb: KnowledgeBase
) -> None:
    index = await chunk_store.ensure_index(kb)
    await chunk_store.upsert(index, CORPUS[:2], visible=False)
    await chunk_store.upsert(index, CORPUS[2:], visible=False)
    await chunk_store.make_visible(index)
    assert await chunk_store.count(kb) == 4
    assert [h.chunk.chunk_id for h in await chunk_store.text_search(kb, "elasticsearch", k=2)] == ["d2:0"]


@pytest.mark.parametrize("similarity", ["cosine", "dot_product", "l2_norm", "max_inner_product"])
async def test_knn_ranks_alike_under_every_similarity(chunk_store: ChunkStore, similarity: str) -> None:
    # Unit vectors (Elasticsearch requires them for dot_product): every similarity agrees.
    base = knowledge_base()
    kb = KnowledgeBase.model_validate(
        {**base.model_dump(by_alias=True), "spec": {**base.spec.model_dump(by_alias=True),
                                                    "index": {"similarity": similarity, "replicas": 0}}}
    )  # fmt: skip
    try:
        await filled(chunk_store, kb)
        hits = await chunk_store.knn(kb, vec(0.6, 0, 0, 0.8), k=4)
        assert [h.chunk.chunk_id for h in hits][:2] == ["d2:1", "d1:0"]
        assert hits[0].score > hits[1].score > 0
    finally:
        await chunk_store.drop(kb)


async def test_english_analyzer_stems_and_ignores_stop_words(chunk_store: ChunkStore) -> None:
    base = knowledge_base()
    kb = KnowledgeBase.model_validate(
        {**base.model_dump(by_alias=True), "spec": {**base.spec.model_dump(by_alias=True),
                                                    "index": {"analyzer": "english", "replicas": 0}}}
    )  # fmt: skip
    try:
        await filled(chunk_store, kb)
        # "scheduling" finds "schedules" (stemming); "the" and "of" alone would match nothing useful.
        hits = await chunk_store.text_search(kb, "the scheduling of the pod", k=4)
        assert hits[0].chunk.chunk_id == "d1:0"
    finally:
        await chunk_store.drop(kb)


def with_index(kb: KnowledgeBase, **index: Any) -> KnowledgeBase:
    """The same knowledge base with spec.index changed (as a `kubectl apply` would change it)."""
    document = kb.model_dump(by_alias=True, exclude_none=True)
    document["spec"]["index"] = {**document["spec"]["index"], **index}
    return KnowledgeBase.model_validate(document)


@pytest.mark.parametrize(
    ("similarity", "vector", "problem"),
    [
        pytest.param("dot_product", vec(0.5, 0.5, 0.5, 0.6), "not unit length", id="dot-product-not-unit"),
        pytest.param("cosine", vec(0, 0, 0, 0), "zero magnitude", id="cosine-zero"),
        pytest.param("l2_norm", vec(float("inf"), 0, 0, 0), "NaN or infinite", id="infinite"),
    ],
)
async def test_vectors_the_similarity_refuses_are_refused_at_write_and_at_query(
    chunk_store: ChunkStore, similarity: str, vector: Any, problem: str
) -> None:
    """Elasticsearch's rules (DenseVectorFieldMapper): the embedded store refuses what it would."""
    kb = with_index(knowledge_base(), similarity=similarity)
    try:
        index = await chunk_store.ensure_index(kb)
        with pytest.raises(InvalidVectorError, match=problem):
            await chunk_store.upsert(index, [CORPUS[0], chunk("d9", 0, "bad", vector)])
        assert await chunk_store.count(kb) == 0  # nothing of the batch written
        await chunk_store.upsert(index, CORPUS)
        with pytest.raises(InvalidVectorError, match=f"the query vector .*{problem}"):
            await chunk_store.knn(kb, vector, k=2)
    finally:
        await chunk_store.drop(kb)


async def test_a_changed_spec_applies_to_the_next_generation_only(chunk_store: ChunkStore) -> None:
    """Both stores keep searching with the settings the live index was built with, say what
    differs, and follow the spec from the generation a re-index builds."""
    built = knowledge_base()  # cosine, standard
    changed = with_index(built, similarity="dot_product", analyzer="english")
    try:
        await filled(chunk_store, built)
        assert await chunk_store.index_drift(built) == []
        assert await chunk_store.index_drift(changed) == [
            SpecDrift("index.similarity", "cosine", "dot_product"),
            SpecDrift("index.analyzer", "standard", "english"),
        ]
        # Still cosine: a query dot_product would refuse is fine, and no stemming yet.
        assert await chunk_store.knn(changed, vec(3, 0, 0, 4), k=1)
        assert await chunk_store.text_search(changed, "scheduling", k=1) == []

        rebuilt = await chunk_store.create_generation(changed)
        await chunk_store.upsert(rebuilt, CORPUS)
        await chunk_store.activate(changed, rebuilt)

        assert await chunk_store.index_drift(changed) == []
        with pytest.raises(InvalidVectorError):
            await chunk_store.knn(changed, vec(3, 0, 0, 4), k=1)
        assert [h.chunk.chunk_id for h in await chunk_store.text_search(changed, "scheduling", k=1)] == [
            "d1:0"
        ]
    finally:
        await chunk_store.drop(built)


async def test_a_declared_analyzer_with_a_stemmer_stems(chunk_store: ChunkStore) -> None:
    kb = with_index(
        knowledge_base(), analyzer="stems", analyzers={"stems": {"filter": ["lowercase", "porter_stem"]}}
    )
    try:
        await filled(chunk_store, kb)
        hits = await chunk_store.text_search(kb, "scheduling", k=4)
        assert [h.chunk.chunk_id for h in hits] == ["d1:0"]
    finally:
        await chunk_store.drop(kb)
