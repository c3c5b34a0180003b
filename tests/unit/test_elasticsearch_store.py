"""ElasticsearchChunkStore at the HTTP boundary.

A real AsyncElasticsearch talks HTTP to a real local server (pytest-httpserver) that answers
in order with bodies shaped like Elasticsearch 9's documented responses; the tests check the
requests the store sends and what it makes of the answers. The client, its retries and the
bulk path the stores share are tested on their own in test_elasticsearch_client.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from elasticsearch import AsyncElasticsearch
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from kubechat.core.resources import KnowledgeBase, ResourceError, parse_resource
from kubechat.stores.chunks import ChunkRecord, RankedChunk, SpecDrift
from kubechat.stores.elasticsearch.chunks import (
    ElasticsearchChunkStore,
    generation_index,
    index_body,
    index_generation,
)
from kubechat.stores.elasticsearch.client import Retries, new_client
from kubechat.stores.errors import (
    EmbeddingMismatchError,
    InvalidIndexSpecError,
    InvalidVectorError,
    StoreError,
    StoreUnavailableError,
)
from tests.elasticsearch_rules import Refusals, parse_body

DIMS = 4
ALIAS = "kubechat-kb.default.docs"
GEN1 = f"{ALIAS}.000001"
GEN2 = f"{ALIAS}.000002"
# What Elasticsearch 9 answers a client that asks for compatibility with version 9.
ES_JSON = "application/vnd.elasticsearch+json;compatible-with=9"


def knowledge_base(
    *, model: str = "minilm", dimensions: int = DIMS, name: str = "docs", **index: Any
) -> KnowledgeBase:
    return KnowledgeBase.model_validate(
        {
            "apiVersion": "kubechat.io/v1alpha1",
            "kind": "KnowledgeBase",
            "metadata": {"name": name},
            "spec": {
                "embedding": {"model": model, "dimensions": dimensions},
                "index": {
                    "similarity": "dot_product",
                    "hnsw": {"m": 24, "efConstruction": 200},
                    "analyzer": "english",
                    "shards": 2,
                    "replicas": 0,
                    **index,
                },
                "access": {"owners": ["*"]},
            },
        }
    )


KB = knowledge_base()
# A unit vector: KB's similarity is dot_product, which takes nothing else.
UNIT = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)


@dataclass(frozen=True)
class Sent:
    """One request as the server saw it."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: Any  # JSON, a list of NDJSON lines, or None


def _parse(request: Request) -> Sent:
    return Sent(request.method, request.path, dict(request.args), dict(request.headers), parse_body(request))


def _response(status: int, body: Any, content_type: str = ES_JSON) -> Response:
    return Response(
        json.dumps(body),
        status=status,
        content_type=content_type,
        headers={"X-Elastic-Product": "Elasticsearch"},
    )


class FakeElasticsearch:
    """Scripted answers, in order; every request is recorded.

    A scripted answer gives way to the one a real cluster gives where `refusals` says it refuses
    the request (tests/elasticsearch_rules.py: analyzers, index options, vectors, an older major),
    so a test cannot pass by sending what Elasticsearch would refuse.
    """

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.refusals = Refusals()

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.server.port}"

    def reply(self, method: str, path: str, body: Any, status: int = 200) -> None:
        self.server.expect_ordered_request(path, method=method).respond_with_handler(
            self._answer(body, status)
        )

    def always(self, method: str, path: str, body: Any, status: int = 200) -> None:
        """Answer every request to `path` so (once no ordered answer is waiting), refusals first:
        for a caller that may ask any number of times."""
        self.server.expect_request(path, method=method).respond_with_handler(self._answer(body, status))

    def _answer(self, body: Any, status: int) -> Callable[[Request], Response]:
        def answer(request: Request) -> Response:
            sent = parse_body(request)
            refused = self.refusals.refuse(request, sent)
            if refused is not None:
                content_type = ES_JSON if self.refusals.server_major >= 9 else "application/json"
                return _response(*refused, content_type=content_type)
            scripted = body
            if status < 300:
                if request.path.endswith("/_bulk") and isinstance(sent, list) and isinstance(body, dict):
                    scripted = self.refusals.refuse_items(request, sent, body)
                self.refusals.learn(body)
            return _response(status, scripted)

        return answer

    def error(self, method: str, path: str, status: int, error_type: str, reason: str, **extra: Any) -> None:
        cause = {"type": error_type, "reason": reason, **extra}
        self.reply(method, path, {"error": {"root_cause": [cause], **cause}, "status": status}, status)

    def root(self, version: str = "9.1.0") -> None:
        """`GET /` as a cluster of `version` answers it (what `check_server` asks)."""
        self.reply(
            "GET", "/",
            {
                "name": "es-0", "cluster_name": "kubechat", "cluster_uuid": "kR5EvWmZQ8KXcOzrJwYhlA",
                "version": {
                    "number": version, "build_flavor": "default", "build_type": "docker",
                    "build_hash": "0f1e2d3c4b5a", "build_date": "2026-01-01T00:00:00.000Z",
                    "build_snapshot": False, "lucene_version": "10.2.2",
                    "minimum_wire_compatibility_version": "8.19.0",
                    "minimum_index_compatibility_version": "8.0.0",
                },
                "tagline": "You Know, for Search",
            },
        )  # fmt: skip

    @property
    def sent(self) -> list[Sent]:
        return [_parse(request) for request, _ in self.server.log]

    def verify(self) -> None:
        self.server.check_assertions()
        assert not self.server.ordered_handlers, "expected requests were not made"


@pytest.fixture
def es(httpserver: HTTPServer) -> Iterator[FakeElasticsearch]:
    fake = FakeElasticsearch(httpserver)
    yield fake
    fake.verify()


# Three attempts, quickly.
RETRIES = Retries(max_retries=2, backoff_s=0.001)


@pytest.fixture
async def client(es: FakeElasticsearch) -> AsyncIterator[AsyncElasticsearch]:
    """The process's one client, as kubechat.stores.open makes it; its opener closes it."""
    client = new_client(es.url)
    yield client
    await client.close()


@pytest.fixture
def store(client: AsyncElasticsearch) -> ElasticsearchChunkStore:
    return ElasticsearchChunkStore(client, bulk_chunk_size=2, retries=RETRIES)


def existing_index(
    kb: KnowledgeBase,
    index: str = GEN1,
    *,
    model: str = "minilm",
    dims: int = DIMS,
    built_from: KnowledgeBase | None = None,
) -> dict[str, Any]:
    """GET /<alias> as Elasticsearch answers it for an index kubechat built (from `built_from`)."""
    body = index_body(built_from or knowledge_base(model=model, dimensions=dims))
    settings = {
        "number_of_shards": str(body["settings"]["number_of_shards"]),
        "number_of_replicas": str(body["settings"]["number_of_replicas"]),
        "provided_name": index,
        "creation_date": "1767225600000",
        "uuid": "Xq0mJ1bNRpuWz5k1vJ0k2g",
        "version": {"created": "9009000"},
    }
    if "analysis" in body["settings"]:
        settings["analysis"] = body["settings"]["analysis"]
    return {
        index: {
            "aliases": {kb.index_alias: {"is_write_index": True}},
            "mappings": body["mappings"],
            "settings": {"index": settings},
        }
    }


def index_not_found(es: FakeElasticsearch, method: str, path: str, name: str) -> None:
    es.error(
        method, path, 404, "index_not_found_exception", f"no such index [{name}]",
        **{"resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_", "index": name},
    )  # fmt: skip


def chunk(ordinal: int, *, document_id: str = "doc-1", page: int | None = 1, dims: int = DIMS) -> ChunkRecord:
    return ChunkRecord(
        document_id=document_id,
        document_name="guide.pdf",
        ordinal=ordinal,
        text=f"chunk {ordinal} text",
        page=page,
        section="Install",
        vector=np.full(dims, 0.5, dtype=np.float32),
    )


def bulk_item(chunk_id: str, status: int = 201, error: dict[str, Any] | None = None) -> dict[str, Any]:
    if error is not None:
        return {"index": {"_index": GEN1, "_id": chunk_id, "status": status, "error": error}}
    return {
        "index": {
            "_index": GEN1, "_id": chunk_id, "_version": 1, "result": "created",
            "_shards": {"total": 1, "successful": 1, "failed": 0}, "_seq_no": 0, "_primary_term": 1,
            "status": status,
        }
    }  # fmt: skip


def bulk_response(*items: dict[str, Any]) -> dict[str, Any]:
    return {"errors": any("error" in item["index"] for item in items), "took": 3, "items": list(items)}


REJECTED = {
    "type": "es_rejected_execution_exception",
    "reason": "rejected execution of primary operation [coordinating_and_primary_bytes=0, max=0]",
}


def hit(chunk_id: str, score: float, source: dict[str, Any]) -> dict[str, Any]:
    return {"_index": GEN1, "_id": chunk_id, "_score": score, "_source": source}


def search_response(*hits: dict[str, Any]) -> dict[str, Any]:
    return {
        "took": 4,
        "timed_out": False,
        "_shards": {"total": 2, "successful": 2, "skipped": 0, "failed": 0},
        "hits": {"max_score": max((h["_score"] for h in hits), default=None), "hits": list(hits)},
    }


SOURCE_1 = {
    "document_id": "doc-1", "document_name": "guide.pdf", "ordinal": 0, "text": "Install the chart.",
    "page": 3, "section": "Install",
}  # fmt: skip
SOURCE_2 = {
    "document_id": "doc-2", "document_name": "notes.md", "ordinal": 4, "text": "Upgrade notes.",
    "page": None, "section": "",
}  # fmt: skip


# -- pure ---------------------------------------------------------------------------------


def test_index_body_pins_the_embedding_and_the_index_options() -> None:
    body = index_body(KB)

    assert body["settings"] == {"number_of_shards": 2, "number_of_replicas": 0}
    mappings = body["mappings"]
    assert mappings["dynamic"] == "strict"
    assert mappings["_meta"] == {
        "kubechat_schema_version": 1,
        "knowledge_base": "default/docs",
        "embedding_model": "minilm",
        "dimensions": DIMS,
        "similarity": "dot_product",
    }
    properties = mappings["properties"]
    assert properties["vector"] == {
        "type": "dense_vector",
        "dims": DIMS,
        "index": True,
        "similarity": "dot_product",
        # No type in the spec: Elasticsearch 9's own default under 384 dimensions.
        "index_options": {"type": "int8_hnsw", "m": 24, "ef_construction": 200},
    }
    assert properties["text"] == {"type": "text", "analyzer": "english"}
    assert properties["document_id"] == {"type": "keyword"}
    assert properties["document_name"]["type"] == "keyword"
    assert properties["section"]["type"] == "keyword"
    assert properties["ordinal"] == {"type": "integer"}
    assert properties["page"] == {"type": "integer"}
    assert set(properties) == {"text", "document_id", "document_name", "ordinal", "page", "section", "vector"}
    json.dumps(body)  # plain JSON, reusable by the operator as is


def test_generation_names_belong_to_one_knowledge_base_only() -> None:
    assert generation_index(KB, 1) == GEN1
    assert generation_index(KB, 1234567) == f"{ALIAS}.1234567"
    assert index_generation(KB, GEN2) == 2
    assert index_generation(KB, f"{ALIAS}-old-000001") is None  # KnowledgeBase "docs-old"
    assert index_generation(KB, ALIAS) is None
    with pytest.raises(ValueError, match="positive"):
        generation_index(KB, 0)


# -- lifecycle of indices ----------------------------------------------------------------------


async def test_ensure_index_creates_generation_one_behind_the_alias(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    index_not_found(es, "GET", f"/{ALIAS}", ALIAS)
    es.reply("PUT", f"/{GEN1}", {"acknowledged": True, "shards_acknowledged": True, "index": GEN1})

    assert await store.ensure_index(KB) == GEN1

    create = es.sent[1]
    assert create.method == "PUT" and create.path == f"/{GEN1}"
    assert create.body == {**index_body(KB), "aliases": {ALIAS: {"is_write_index": True}}}
    assert create.headers["Content-Type"].startswith("application/vnd.elasticsearch+json")


async def test_ensure_index_after_a_concurrent_create_uses_the_other_replicas_index(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    index_not_found(es, "GET", f"/{ALIAS}", ALIAS)
    es.error(
        "PUT", f"/{GEN1}", 400, "resource_already_exists_exception",
        f"index [{GEN1}/Xq0mJ1bNRpuWz5k1vJ0k2g] already exists",
        index_uuid="Xq0mJ1bNRpuWz5k1vJ0k2g", index=GEN1,
    )  # fmt: skip
    index_not_found(es, "GET", f"/{ALIAS}", ALIAS)  # this node has not applied the new state yet
    es.reply("GET", f"/{ALIAS}", existing_index(KB))

    assert await store.ensure_index(KB) == GEN1


async def test_ensure_index_with_matching_meta_creates_nothing(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("GET", f"/{ALIAS}", existing_index(KB, GEN2))

    assert await store.ensure_index(KB) == GEN2
    assert [(s.method, s.path) for s in es.sent] == [("GET", f"/{ALIAS}")]


async def test_ensure_index_refuses_an_index_of_another_vector_size(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("GET", f"/{ALIAS}", existing_index(KB, model="minilm", dims=768))

    with pytest.raises(EmbeddingMismatchError) as caught:
        await store.ensure_index(KB)
    assert "768" in str(caught.value) and f"({DIMS} dimensions)" in str(caught.value)
    assert str(caught.value).count("'minilm'") == 2
    assert len(es.sent) == 1


async def test_ensure_index_refuses_an_index_of_another_model(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("GET", f"/{ALIAS}", existing_index(KB, model="bge-small"))

    with pytest.raises(EmbeddingMismatchError, match=r"'bge-small'.*'minilm'"):
        await store.ensure_index(KB)


async def test_ensure_index_refuses_an_index_kubechat_did_not_create(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    foreign = existing_index(KB)
    del foreign[GEN1]["mappings"]["_meta"]
    es.reply("GET", f"/{ALIAS}", foreign)

    with pytest.raises(StoreError, match="not created by kubechat"):
        await store.ensure_index(KB)


async def test_create_generation_takes_the_number_after_the_highest(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply(
        "GET",
        f"/{ALIAS}.*/_alias",
        {
            GEN1: {"aliases": {}},
            f"{ALIAS}.000007": {"aliases": {ALIAS: {"is_write_index": True}}},
            f"{ALIAS}-old-000042": {"aliases": {f"{ALIAS}-old": {}}},  # another KnowledgeBase
        },
    )
    es.reply("PUT", f"/{ALIAS}.000008", {"acknowledged": True, "shards_acknowledged": True, "index": "x"})

    assert await store.create_generation(KB) == f"{ALIAS}.000008"

    listing, create = es.sent
    assert listing.params["expand_wildcards"] == "open,closed"
    assert create.body == index_body(KB)  # no alias: inactive until activate


async def test_activate_swaps_the_alias_in_one_call_and_deletes_the_old_generation(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    gen3 = f"{ALIAS}.000003"
    es.reply("GET", f"/_alias/{ALIAS}", {GEN2: {"aliases": {ALIAS: {"is_write_index": True}}}})
    es.reply("POST", "/_aliases", {"acknowledged": True})
    es.reply(
        "GET",
        f"/{ALIAS}.*/_alias",
        {
            GEN1: {"aliases": {}},
            GEN2: {"aliases": {}},
            gen3: {"aliases": {ALIAS: {}}},
            f"{ALIAS}.000004": {"aliases": {}},
        },
    )
    es.reply("DELETE", f"/{GEN1},{GEN2}", {"acknowledged": True})

    await store.activate(KB, gen3)

    swap, _, delete = es.sent[1:]
    assert swap.body == {
        "actions": [
            {"add": {"index": gen3, "alias": ALIAS, "is_write_index": True}},
            {"remove": {"index": GEN2, "alias": ALIAS}},
        ]
    }
    # Generation 4 may be a re-index in progress: it stays.
    assert delete.params == {"ignore_unavailable": "true"}


async def test_activate_without_an_alias_adds_it_and_keeps_foreign_indices(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("GET", f"/_alias/{ALIAS}", {"error": f"alias [{ALIAS}] missing", "status": 404}, status=404)
    es.reply("POST", "/_aliases", {"acknowledged": True})
    es.reply(
        "GET", f"/{ALIAS}.*/_alias", {GEN1: {"aliases": {ALIAS: {}}}, f"{ALIAS}-old-000001": {"aliases": {}}}
    )

    await store.activate(KB, GEN1)

    assert es.sent[1].body == {"actions": [{"add": {"index": GEN1, "alias": ALIAS, "is_write_index": True}}]}
    assert len(es.sent) == 3  # nothing older to delete


async def test_activate_refuses_an_index_of_another_knowledge_base(store: ElasticsearchChunkStore) -> None:
    with pytest.raises(StoreError, match="not an index of"):
        await store.activate(KB, f"{ALIAS}-old-000001")


async def test_drop_deletes_every_generation_by_name(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply(
        "GET",
        f"/{ALIAS}.*/_alias",
        {GEN1: {"aliases": {ALIAS: {}}}, GEN2: {"aliases": {}}, f"{ALIAS}-old-000001": {"aliases": {}}},
    )
    es.reply("DELETE", f"/{GEN1},{GEN2}", {"acknowledged": True})

    await store.drop(KB)

    assert es.sent[1].params == {"ignore_unavailable": "true"}


async def test_drop_of_a_knowledge_base_without_indices_deletes_nothing(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("GET", f"/{ALIAS}.*/_alias", {})

    await store.drop(KB)

    assert len(es.sent) == 1


# -- writes ------------------------------------------------------------------------------------


async def test_upsert_sends_batches_then_refreshes_every_shard_they_wrote_to(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    """`refresh=wait_for` on the last batch would wait only for the shards that batch touched; an
    earlier batch's chunks on another of KB's two shards could stay unsearchable."""
    es.reply("GET", f"/{GEN1}/_mapping", {GEN1: {"mappings": index_body(KB)["mappings"]}})
    es.reply("PUT", f"/{GEN1}/_bulk", bulk_response(bulk_item("doc-1:0"), bulk_item("doc-1:1")))
    es.reply("PUT", f"/{GEN1}/_bulk", bulk_response(bulk_item("doc-1:2")))
    es.reply("POST", f"/{GEN1}/_refresh", {"_shards": {"total": 2, "successful": 2, "failed": 0}})

    await store.upsert(GEN1, [chunk(0), chunk(1, page=None), chunk(2)])

    first, last, refresh = es.sent[1:]
    assert first.headers["Content-Type"].startswith("application/vnd.elasticsearch+x-ndjson")
    assert first.params == last.params == {"include_source_on_error": "false"}
    assert (refresh.method, refresh.path) == ("POST", f"/{GEN1}/_refresh")
    assert first.body == [
        {"index": {"_id": "doc-1:0"}},
        {
            "document_id": "doc-1", "document_name": "guide.pdf", "ordinal": 0, "text": "chunk 0 text",
            "page": 1, "section": "Install", "vector": [0.5] * DIMS,
        },
        {"index": {"_id": "doc-1:1"}},
        {
            "document_id": "doc-1", "document_name": "guide.pdf", "ordinal": 1, "text": "chunk 1 text",
            "page": None, "section": "Install", "vector": [0.5] * DIMS,
        },
    ]  # fmt: skip
    assert [line for line in last.body if "index" in line] == [{"index": {"_id": "doc-1:2"}}]


async def test_upsert_of_one_batch_waits_for_its_refresh(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("GET", f"/{GEN1}/_mapping", {GEN1: {"mappings": index_body(KB)["mappings"]}})
    es.reply("PUT", f"/{GEN1}/_bulk", bulk_response(bulk_item("doc-1:0"), bulk_item("doc-1:1")))

    await store.upsert(GEN1, [chunk(0), chunk(1)])

    (bulk,) = es.sent[1:]
    assert bulk.params == {"include_source_on_error": "false", "refresh": "wait_for"}


async def test_ingestion_batches_refresh_once_at_the_end(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("GET", f"/{GEN1}/_mapping", {GEN1: {"mappings": index_body(KB)["mappings"]}})
    es.reply("PUT", f"/{GEN1}/_bulk", bulk_response(bulk_item("doc-1:0")))
    es.reply("POST", f"/{GEN1}/_refresh", {"_shards": {"total": 1, "successful": 1, "failed": 0}})

    await store.upsert(GEN1, [chunk(0)], visible=False)
    await store.make_visible(GEN1)

    bulk, refresh = es.sent[1:]
    assert bulk.params == {"include_source_on_error": "false"}  # no refresh per batch
    assert refresh.method == "POST"


async def test_upsert_retries_only_the_rejected_items(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("GET", f"/{GEN1}/_mapping", {GEN1: {"mappings": index_body(KB)["mappings"]}})
    es.reply(
        "PUT", f"/{GEN1}/_bulk", bulk_response(bulk_item("doc-1:0"), bulk_item("doc-1:1", 429, REJECTED))
    )
    es.reply("PUT", f"/{GEN1}/_bulk", bulk_response(bulk_item("doc-1:1")))

    await store.upsert(GEN1, [chunk(0), chunk(1)])

    retry = es.sent[2]
    assert [line for line in retry.body if "index" in line] == [{"index": {"_id": "doc-1:1"}}]
    assert retry.body[1]["ordinal"] == 1
    assert retry.params["refresh"] == "wait_for"


async def test_upsert_reports_items_that_cannot_be_indexed(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    parse_error = {
        "type": "document_parsing_exception",
        "reason": "[1:120] failed to parse field [page] of type [integer] in document with id 'doc-1:1'",
        "caused_by": {"type": "number_format_exception", "reason": 'For input string: "iv"'},
    }
    es.reply("GET", f"/{GEN1}/_mapping", {GEN1: {"mappings": index_body(KB)["mappings"]}})
    es.reply(
        "PUT", f"/{GEN1}/_bulk", bulk_response(bulk_item("doc-1:0"), bulk_item("doc-1:1", 400, parse_error))
    )

    with pytest.raises(
        StoreError, match=r"1 of 2 chunks failed: doc-1:1: 400 document_parsing_exception"
    ) as caught:
        await store.upsert(GEN1, [chunk(0), chunk(1)])
    assert not isinstance(caught.value, StoreUnavailableError)
    assert len(es.sent) == 2  # not retried


async def test_upsert_retries_a_whole_request_turned_away(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("GET", f"/{GEN1}/_mapping", {GEN1: {"mappings": index_body(KB)["mappings"]}})
    es.error("PUT", f"/{GEN1}/_bulk", 429, "es_rejected_execution_exception", REJECTED["reason"])
    es.reply("PUT", f"/{GEN1}/_bulk", bulk_response(bulk_item("doc-1:0")))

    await store.upsert(GEN1, [chunk(0)])

    assert es.sent[1].body == es.sent[2].body


async def test_upsert_gives_up_on_a_cluster_that_stays_unavailable(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("GET", f"/{GEN1}/_mapping", {GEN1: {"mappings": index_body(KB)["mappings"]}})
    blocked = "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];"
    for _ in range(3):  # max_retries=2: three attempts
        es.error("PUT", f"/{GEN1}/_bulk", 503, "cluster_block_exception", blocked)

    with pytest.raises(StoreUnavailableError, match=r"after 3 attempts.*cluster_block_exception"):
        await store.upsert(GEN1, [chunk(0)])


async def test_upsert_refuses_a_wrong_vector_size_before_sending_anything(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("GET", f"/{ALIAS}", existing_index(KB))
    assert await store.ensure_index(KB) == GEN1
    es.server.clear_log()

    with pytest.raises(
        EmbeddingMismatchError, match=f"doc-1:1 has a vector of shape \\(3,\\).*{DIMS} dimensions"
    ):
        await store.upsert(GEN1, [chunk(0), chunk(1, dims=3)])
    assert es.sent == []


async def test_upsert_reads_the_vector_size_of_an_index_it_has_not_seen(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply(
        "GET", f"/{GEN2}/_mapping", {GEN2: {"mappings": index_body(knowledge_base(dimensions=8))["mappings"]}}
    )

    with pytest.raises(EmbeddingMismatchError, match="8 dimensions"):
        await store.upsert(GEN2, [chunk(0)])
    assert [s.path for s in es.sent] == [f"/{GEN2}/_mapping"]  # no bulk


async def test_upsert_into_a_missing_index_fails_instead_of_creating_one(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    index_not_found(es, "GET", f"/{GEN2}/_mapping", GEN2)

    with pytest.raises(StoreError, match="does not exist"):
        await store.upsert(GEN2, [chunk(0)])


async def test_delete_document_deletes_by_query_and_refreshes(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("POST", f"/{GEN1}/_refresh", {"_shards": {"total": 1, "successful": 1, "failed": 0}})
    es.reply(
        "POST",
        f"/{GEN1}/_delete_by_query",
        {
            "took": 147, "timed_out": False, "total": 3, "deleted": 3, "batches": 1,
            "version_conflicts": 0, "noops": 0, "retries": {"bulk": 0, "search": 0}, "throttled_millis": 0,
            "requests_per_second": -1.0, "throttled_until_millis": 0, "failures": [],
        },
    )  # fmt: skip

    await store.delete_document(GEN1, "doc-1")

    refresh, sent = es.sent
    assert refresh.path == f"/{GEN1}/_refresh"  # delete-by-query sees only refreshed chunks
    assert sent.params == {"conflicts": "proceed", "refresh": "true"}
    assert sent.body == {"query": {"term": {"document_id": "doc-1"}}}


async def test_delete_document_turned_away_by_a_busy_cluster_is_unavailable(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("POST", f"/{GEN1}/_refresh", {"_shards": {"total": 1, "successful": 1, "failed": 0}})
    es.reply(
        "POST",
        f"/{GEN1}/_delete_by_query",
        {
            "took": 12, "timed_out": False, "total": 3, "deleted": 1, "batches": 1, "version_conflicts": 0,
            "noops": 0, "retries": {"bulk": 0, "search": 0}, "failures": [
                {"index": GEN1, "id": "doc-1:2", "status": 429, "cause": REJECTED},
            ],
        },
    )  # fmt: skip

    with pytest.raises(StoreUnavailableError, match="429 es_rejected_execution_exception"):
        await store.delete_document(GEN1, "doc-1")


async def test_delete_document_goes_again_while_chunks_change_under_it(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    for conflicts in (2, 0):
        es.reply("POST", f"/{GEN1}/_refresh", {"_shards": {"total": 1, "successful": 1, "failed": 0}})
        es.reply(
            "POST", f"/{GEN1}/_delete_by_query",
            {"took": 5, "timed_out": False, "total": 3, "deleted": 3 - conflicts, "batches": 1,
             "version_conflicts": conflicts, "noops": 0, "failures": []},
        )  # fmt: skip

    await store.delete_document(GEN1, "doc-1")

    assert [sent.path for sent in es.sent] == [f"/{GEN1}/_refresh", f"/{GEN1}/_delete_by_query"] * 2


# -- reads -------------------------------------------------------------------------------------


async def test_knn_asks_for_k_neighbours_without_vectors_and_ranks_them(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply(
        "POST",
        f"/{ALIAS}/_search",
        search_response(hit("doc-1:0", 0.93, SOURCE_1), hit("doc-2:4", 0.71, SOURCE_2)),
    )

    vector = np.array([0.5, -0.5, 0.5, -0.5], dtype=np.float32)
    ranked = await store.knn(KB, vector, 5, document_ids=["doc-1", "doc-2"])

    (sent,) = es.sent
    assert sent.body == {
        "knn": {
            "field": "vector",
            "query_vector": [0.5, -0.5, 0.5, -0.5],
            "k": 5,
            "num_candidates": 100,
            "filter": {"terms": {"document_id": ["doc-1", "doc-2"]}},
        },
        "size": 5,
        "_source": {"excludes": ["vector"]},
        "track_total_hits": False,
    }
    assert ranked == [
        RankedChunk(
            ChunkRecord("doc-1", "guide.pdf", 0, "Install the chart.", page=3, section="Install"), 0.93
        ),
        RankedChunk(ChunkRecord("doc-2", "notes.md", 4, "Upgrade notes.", page=None, section=""), 0.71),
    ]
    assert ranked[0].chunk.vector is None


async def test_knn_candidates_grow_with_k_up_to_the_cluster_limit(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("POST", f"/{ALIAS}/_search", search_response())
    es.reply("POST", f"/{ALIAS}/_search", search_response())
    vector = UNIT

    assert await store.knn(KB, vector, 40) == []
    assert await store.knn(KB, vector, 5000) == []

    assert [s.body["knn"]["num_candidates"] for s in es.sent] == [400, 10_000]
    assert "filter" not in es.sent[0].body["knn"]


async def test_knn_refuses_a_query_vector_of_another_size(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    with pytest.raises(EmbeddingMismatchError, match=f"needs {DIMS} dimensions"):
        await store.knn(KB, np.zeros(DIMS + 1, dtype=np.float32), 3)
    assert es.sent == []


async def test_text_search_matches_text_within_the_documents(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("POST", f"/{ALIAS}/_search", search_response(hit("doc-2:4", 7.25, SOURCE_2)))
    es.reply("POST", f"/{ALIAS}/_search", search_response(hit("doc-2:4", 6.5, SOURCE_2)))

    assert await store.text_search(KB, "upgrade notes", 3, document_ids=["doc-2"]) == [
        RankedChunk(ChunkRecord("doc-2", "notes.md", 4, "Upgrade notes."), 7.25)
    ]
    assert [r.score for r in await store.text_search(KB, "upgrade notes", 3)] == [6.5]

    filtered, unfiltered = es.sent
    assert filtered.body == {
        "query": {
            "bool": {
                "must": [{"match": {"text": {"query": "upgrade notes"}}}],
                "filter": [{"terms": {"document_id": ["doc-2"]}}],
            }
        },
        "size": 3,
        "_source": {"excludes": ["vector"]},
        "track_total_hits": False,
    }
    assert unfiltered.body["query"] == {"match": {"text": {"query": "upgrade notes"}}}


async def test_searches_that_cannot_match_send_nothing(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    assert await store.text_search(KB, "   ", 3) == []
    assert await store.text_search(KB, "notes", 3, document_ids=[]) == []
    assert await store.knn(KB, UNIT, 3, document_ids=[]) == []
    assert es.sent == []


async def test_a_knowledge_base_without_an_index_reads_as_empty(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    index_not_found(es, "POST", f"/{ALIAS}/_search", ALIAS)
    index_not_found(es, "POST", f"/{ALIAS}/_search", ALIAS)
    index_not_found(es, "POST", f"/{ALIAS}/_count", ALIAS)
    index_not_found(es, "GET", f"/{ALIAS}/_doc/doc-1:0", ALIAS)

    assert await store.knn(KB, UNIT, 3) == []
    assert await store.text_search(KB, "notes", 3) == []
    assert await store.count(KB) == 0
    assert await store.get_chunk(KB, "doc-1:0") is None


async def test_get_chunk_reads_through_the_alias(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply(
        "GET",
        f"/{ALIAS}/_doc/doc-1:0",
        {
            "_index": GEN1, "_id": "doc-1:0", "_version": 1, "_seq_no": 0, "_primary_term": 1, "found": True,
            "_source": SOURCE_1,
        },
    )  # fmt: skip
    es.reply("GET", f"/{ALIAS}/_doc/doc-1:9", {"_index": GEN1, "_id": "doc-1:9", "found": False}, status=404)

    assert await store.get_chunk(KB, "doc-1:0") == ChunkRecord(
        "doc-1", "guide.pdf", 0, "Install the chart.", page=3, section="Install"
    )
    assert await store.get_chunk(KB, "doc-1:9") is None
    assert es.sent[0].params == {"_source_excludes": "vector"}


async def test_count_all_chunks_or_one_documents(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    shards = {"total": 2, "successful": 2, "skipped": 0, "failed": 0}
    es.reply("POST", f"/{ALIAS}/_count", {"count": 42, "_shards": shards})
    es.reply("POST", f"/{ALIAS}/_count", {"count": 7, "_shards": shards})

    assert await store.count(KB) == 42
    assert await store.count(KB, "doc-1") == 7

    everything, one = es.sent
    assert everything.body is None
    assert one.body == {"query": {"term": {"document_id": "doc-1"}}}


# -- failures and credentials --------------------------------------------------------------------


async def test_a_search_turned_away_once_is_retried(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.error("POST", f"/{ALIAS}/_search", 429, "es_rejected_execution_exception", REJECTED["reason"])
    es.reply("POST", f"/{ALIAS}/_search", search_response(hit("doc-2:4", 1.5, SOURCE_2)))

    assert len(await store.text_search(KB, "notes", 3)) == 1


async def test_refused_credentials_are_a_store_error_and_not_retried(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.error(
        "POST", f"/{ALIAS}/_count", 401, "security_exception",
        "unable to authenticate user [kubechat] for REST request [/_count]",
    )  # fmt: skip

    with pytest.raises(StoreError, match="401 security_exception") as caught:
        await store.count(KB)
    assert not isinstance(caught.value, StoreUnavailableError)


async def test_closing_the_store_leaves_the_shared_client_open(
    es: FakeElasticsearch, client: AsyncElasticsearch, store: ElasticsearchChunkStore
) -> None:
    es.reply("POST", f"/{ALIAS}/_count", {"count": 3, "_shards": {"total": 1, "successful": 1, "failed": 0}})

    await store.close()

    assert await ElasticsearchChunkStore(client).count(KB) == 3


# -- what Elasticsearch refuses, refused first or reported as what it is -------------------------


def test_index_options_follow_the_type_and_elasticsearch_9s_default() -> None:
    def options(**spec: Any) -> Any:
        return index_body(knowledge_base(**spec))["mappings"]["properties"]["vector"]["index_options"]

    assert options(type="hnsw") == {"type": "hnsw", "m": 24, "ef_construction": 200}
    assert options(type="int4_hnsw")["type"] == "int4_hnsw"
    # Flat types have no graph: Elasticsearch refuses m and ef_construction on them.
    assert options(type="flat") == {"type": "flat"}
    assert options(type="int8_flat") == {"type": "int8_flat"}
    # Unset: Elasticsearch 9's default for the dimensions (DenseVectorFieldMapper, 384 and up: bbq).
    assert options()["type"] == "int8_hnsw"
    big = index_body(knowledge_base(dimensions=384))["mappings"]["properties"]["vector"]["index_options"]
    assert big == {"type": "bbq_hnsw", "m": 24, "ef_construction": 200}


def test_custom_analyzers_become_the_index_analysis_settings() -> None:
    kb = knowledge_base(
        analyzer="folded",
        analyzers={"folded": {"filter": ["lowercase", "asciifolding"], "charFilter": ["html_strip"]}},
    )
    body = index_body(kb)
    assert body["settings"]["analysis"] == {
        "analyzer": {
            "folded": {
                "type": "custom", "tokenizer": "standard", "filter": ["lowercase", "asciifolding"],
                "char_filter": ["html_strip"],
            }
        }
    }  # fmt: skip
    assert body["mappings"]["properties"]["text"]["analyzer"] == "folded"
    assert "analysis" not in index_body(KB)["settings"]


def _unchecked(**index: Any) -> KnowledgeBase:
    """A KnowledgeBase with spec.index set without validation: what the CRD now refuses."""
    kb = knowledge_base()
    spec_index = kb.spec.index.model_copy(update=index)
    return kb.model_copy(update={"spec": kb.spec.model_copy(update={"index": spec_index})})


@pytest.mark.parametrize(
    ("index", "document_index", "refusal"),
    [
        pytest.param(
            {"hnsw": _unchecked().spec.index.hnsw.model_copy(update={"ef_construction": 3201})},
            {"hnsw": {"efConstruction": 3201}},
            "beamWidth must be positive and less than or equal to 3200",
            id="ef-construction-over-lucene-beam-width",
        ),
        pytest.param(
            {"hnsw": _unchecked().spec.index.hnsw.model_copy(update={"m": 513})},
            {"hnsw": {"m": 513}},
            "maxConn must be positive and less than or equal to 512",
            id="m-over-lucene-max-conn",
        ),
        pytest.param(
            {"analyzer": "my_stemmer"},
            {"analyzer": "my_stemmer"},
            "analyzer [my_stemmer] has not been configured in mappings",
            id="undeclared-analyzer",
        ),
    ],
)
async def test_what_the_spec_refuses_elasticsearch_refuses_too(
    es: FakeElasticsearch,
    store: ElasticsearchChunkStore,
    index: dict[str, Any],
    document_index: dict[str, Any],
    refusal: str,
) -> None:
    """The CRD and the embedded loader refuse these specs; had one got through, the cluster would
    have refused its index (the fake's rule, tests/elasticsearch_rules.py), and kubechat reports
    that as a spec problem with the server's reason, not as an outage to retry."""
    document = {
        "apiVersion": "kubechat.io/v1alpha1", "kind": "KnowledgeBase", "metadata": {"name": "docs"},
        "spec": {"embedding": {"model": "minilm", "dimensions": DIMS}, "index": document_index,
                 "access": {"owners": ["*"]}},
    }  # fmt: skip
    with pytest.raises(ResourceError):
        parse_resource(KnowledgeBase, document)
    index_not_found(es, "GET", f"/{ALIAS}", ALIAS)
    es.reply("PUT", f"/{GEN1}", {"acknowledged": True, "shards_acknowledged": True, "index": GEN1})

    with pytest.raises(InvalidIndexSpecError, match=re.escape(refusal)):
        await store.ensure_index(_unchecked(**index))
    assert len(es.sent) == 2  # refused once, not retried


async def test_an_index_the_cluster_refuses_is_an_invalid_spec_with_its_reason(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    """A declared analyzer may name a plugin's filter the cluster does not have."""
    kb = knowledge_base(analyzer="folded", analyzers={"folded": {"filter": ["lowercase", "icu_folding"]}})
    index_not_found(es, "GET", f"/{ALIAS}", ALIAS)
    es.reply("PUT", f"/{GEN1}", {"acknowledged": True, "shards_acknowledged": True, "index": GEN1})

    with pytest.raises(InvalidIndexSpecError) as caught:
        await store.ensure_index(kb)

    message = str(caught.value)
    assert "default/docs" in message
    refusal = "Custom Analyzer [folded] failed to find filter under name [icu_folding]"
    assert f"400 illegal_argument_exception {refusal}" in message


async def test_index_types_the_spec_allows_are_created(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    for chosen, dims in (("flat", DIMS), ("int4_hnsw", DIMS), ("bbq_hnsw", 64), ("bbq_flat", 384)):
        kb = knowledge_base(type=chosen, dimensions=dims, name=f"docs-{chosen.replace('_', '-')}")
        index_not_found(es, "GET", f"/{kb.index_alias}", kb.index_alias)
        es.reply("PUT", f"/{kb.generation_index(1)}", {"acknowledged": True, "index": kb.generation_index(1)})
        assert await store.ensure_index(kb) == kb.generation_index(1)


@pytest.mark.parametrize(
    ("vector", "problem"),
    [
        pytest.param([0.5, 0.5, 0.5, 0.6], "not unit length", id="dot-product-not-unit"),
        pytest.param([0.0, 0.0, 0.0, 0.0], "not unit length", id="dot-product-zero"),
        pytest.param([float("nan"), 0.0, 0.0, 1.0], "NaN or infinite", id="nan"),
    ],
)
async def test_upsert_refuses_vectors_the_similarity_cannot_take_before_sending(
    es: FakeElasticsearch, store: ElasticsearchChunkStore, vector: list[float], problem: str
) -> None:
    es.reply("GET", f"/{GEN1}/_mapping", {GEN1: {"mappings": index_body(KB)["mappings"]}})
    bad = ChunkRecord("doc-1", "guide.pdf", 1, "text", vector=np.array(vector, dtype=np.float32))

    with pytest.raises(InvalidVectorError, match=f"chunk doc-1:1 .*{problem}"):
        await store.upsert(GEN1, [chunk(0), bad])
    assert [s.path for s in es.sent] == [f"/{GEN1}/_mapping"]  # no bulk


async def test_the_unit_length_tolerance_is_elasticsearchs(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    """|v|^2 within 1e-3 of 1 is unit length to Elasticsearch 9 (Element.isUnitVector)."""
    es.reply("GET", f"/{GEN1}/_mapping", {GEN1: {"mappings": index_body(KB)["mappings"]}})
    es.reply("PUT", f"/{GEN1}/_bulk", bulk_response(bulk_item("doc-1:0")))
    nearly = np.array([1.0004, 0.0, 0.0, 0.0], dtype=np.float32)  # |v|^2 = 1.0008

    await store.upsert(GEN1, [ChunkRecord("doc-1", "g.pdf", 0, "t", vector=nearly)])
    with pytest.raises(InvalidVectorError):
        too_long = np.array([1.0006, 0.0, 0.0, 0.0], dtype=np.float32)  # |v|^2 = 1.0012
        await store.upsert(GEN1, [ChunkRecord("doc-1", "g.pdf", 0, "t", vector=too_long)])


async def test_cosine_refuses_only_zero_vectors(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    kb = knowledge_base(similarity="cosine")
    es.reply("GET", f"/{GEN1}/_mapping", {GEN1: {"mappings": index_body(kb)["mappings"]}})
    es.reply("PUT", f"/{GEN1}/_bulk", bulk_response(bulk_item("doc-1:0")))
    long = ChunkRecord("doc-1", "g.pdf", 0, "t", vector=np.array([3, 0, 4, 0], dtype=np.float32))

    await store.upsert(GEN1, [long])
    zero = ChunkRecord("doc-1", "g.pdf", 1, "t", vector=np.zeros(DIMS, dtype=np.float32))
    with pytest.raises(InvalidVectorError, match="zero magnitude"):
        await store.upsert(GEN1, [zero])
    with pytest.raises(InvalidVectorError, match="the query vector has zero magnitude"):
        await store.knn(kb, np.zeros(DIMS, dtype=np.float32), 3)


async def test_the_fake_refuses_a_bad_vector_as_elasticsearch_does(es: FakeElasticsearch) -> None:
    """What the store's own check prevents, the fake cluster would refuse (for a client that sent it)."""
    es.reply("GET", f"/{GEN1}/_mapping", {GEN1: {"mappings": index_body(KB)["mappings"]}})
    es.reply("PUT", f"/{GEN1}/_bulk", bulk_response(bulk_item("doc-1:0"), bulk_item("doc-1:1")))
    raw = AsyncElasticsearch(es.url)
    try:
        await raw.indices.get_mapping(index=GEN1)
        source = {"document_id": "doc-1", "ordinal": 0, "text": "t"}
        response = await raw.bulk(
            index=GEN1,
            operations=[
                {"index": {"_id": "doc-1:0"}}, {**source, "vector": [0.5] * DIMS},
                {"index": {"_id": "doc-1:1"}}, {**source, "vector": [0.5, 0.5, 0.5, 0.6]},
            ],
        )  # fmt: skip
    finally:
        await raw.close()
    ok, refused = (item["index"] for item in response.body["items"])
    assert response.body["errors"] is True
    assert ok["status"] == 201
    assert refused["status"] == 400
    assert refused["error"]["type"] == "document_parsing_exception"
    assert (
        "The [dot_product] similarity can only be used with unit-length vectors" in refused["error"]["reason"]
    )


async def test_knn_refuses_a_query_vector_by_the_live_index_similarity(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    """The spec says cosine now, but the live index was built for dot_product: its rule holds."""
    cosine = knowledge_base(similarity="cosine")
    es.reply("GET", f"/{ALIAS}", existing_index(cosine, built_from=KB))
    assert await store.ensure_index(cosine) == GEN1

    with pytest.raises(InvalidVectorError, match="dot_product"):
        await store.knn(cosine, np.array([3, 0, 4, 0], dtype=np.float32), 3)
    assert len(es.sent) == 1  # no search


async def test_knn_refused_by_the_cluster_is_an_invalid_vector(
    es: FakeElasticsearch, client: AsyncElasticsearch
) -> None:
    """A process that has not looked at the index yet checks by the spec; the cluster's refusal,
    which names the similarity in its cause, is reported the same way."""
    store = ElasticsearchChunkStore(client, retries=RETRIES)
    es.refusals.similarities[ALIAS] = "dot_product"  # as the operator created it
    es.reply("POST", f"/{ALIAS}/_search", search_response())

    with pytest.raises(InvalidVectorError, match=r"dot_product.*unit-length"):
        await store.knn(knowledge_base(similarity="cosine"), np.array([3, 0, 4, 0], dtype=np.float32), 3)
    assert len(es.sent) == 1  # not retried


async def test_drift_lists_what_the_live_index_was_built_with_otherwise(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    changed = knowledge_base(
        similarity="cosine", type="hnsw", hnsw={"m": 32, "efConstruction": 200}, shards=3,
        analyzer="folded", analyzers={"folded": {"filter": ["lowercase"]}},
    )  # fmt: skip
    es.reply("GET", f"/{ALIAS}", existing_index(KB, built_from=KB))
    es.reply("GET", f"/{ALIAS}", existing_index(KB, built_from=KB))
    es.reply("GET", f"/{ALIAS}", existing_index(changed, built_from=changed))

    assert await store.index_drift(KB) == []
    assert await store.index_drift(changed) == [
        SpecDrift("index.similarity", "dot_product", "cosine"),
        SpecDrift("index.type", "int8_hnsw", "hnsw"),
        SpecDrift("index.analyzer", "english", "folded"),
        SpecDrift("index.shards", "2", "3"),
        SpecDrift("index.hnsw.m", "24", "32"),
        SpecDrift("index.analyzers.folded", "(none)", "tokenizer=standard filter=lowercase char_filter="),
    ]
    assert await store.index_drift(changed) == []


async def test_drift_of_a_missing_index_is_nothing(
    es: FakeElasticsearch, store: ElasticsearchChunkStore
) -> None:
    index_not_found(es, "GET", f"/{ALIAS}", ALIAS)
    assert await store.index_drift(KB) == []
