"""KnowledgeBase reconciliation against Elasticsearch's answers: what the cluster refuses.

The chunk store is the real ElasticsearchChunkStore on the HTTP-level fake of the unit tests
(tests/unit/test_elasticsearch_store.py), which answers as Elasticsearch 9 does and refuses what
it refuses (tests/elasticsearch_rules.py); the catalog is the embedded one and the objects are
in moto's S3 server, as in test_knowledge_base_operator.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from kubechat.operator.knowledge_bases import KnowledgeStores
from kubechat.operator.settings import OperatorSettings
from kubechat.stores.elasticsearch.chunks import ElasticsearchChunkStore
from kubechat.stores.elasticsearch.client import Retries
from kubechat.stores.objects.s3 import S3ObjectStore
from kubechat.stores.sqlite.documents import SQLiteDocumentCatalog
from tests.operator.conftest import NAMESPACE, Cluster
from tests.operator.test_knowledge_base_operator import knowledge_base
from tests.polling import eventually
from tests.s3_server import S3Endpoint, unique_bucket_name
from tests.unit.test_elasticsearch_store import FakeElasticsearch
from tests.unit.test_elasticsearch_store import client as client
from tests.unit.test_elasticsearch_store import es as es

ALIAS = f"kubechat-kb.{NAMESPACE}.handbook"


@pytest.fixture
async def stores(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    s3: S3Endpoint,
    es: FakeElasticsearch,
    client: AsyncElasticsearch,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[KnowledgeStores | None]:
    """Stores on the fake Elasticsearch; None (the operator opens its own, from the environment,
    before the test starts) for tests marked `from_environment(version)`: the cluster's version."""
    marker = request.node.get_closest_marker("from_environment")
    if marker is not None:
        version = marker.args[0]
        es.refusals.server_major = int(version.split(".")[0])
        es.root(version)
        monkeypatch.setenv("KUBECHAT_ELASTICSEARCH_URL", es.url)
        monkeypatch.setenv("KUBECHAT_STATE_DIR", str(tmp_path))
        yield None
        return
    objects = S3ObjectStore(
        s3.endpoint, s3.access_key, s3.secret_key, unique_bucket_name(), secure=s3.secure, region=s3.region
    )
    await objects.ensure_bucket()
    yield KnowledgeStores(
        chunks=ElasticsearchChunkStore(client, retries=Retries(max_retries=2, backoff_s=0.001)),
        objects=objects,
        documents=await SQLiteDocumentCatalog.open(tmp_path / "documents.sqlite3"),
    )


@pytest.fixture
def operator_settings() -> OperatorSettings:
    # Counts only for Ready knowledge bases, and none here is: a long interval all the same.
    return OperatorSettings(resync_interval_s=60, count_interval_s=60)


async def failed_with(cluster: Cluster, reason: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found = await cluster.condition("KnowledgeBase", "handbook", "Ready")
        return found if found and found["reason"] == reason else None

    return await eventually(check, what=f"Ready=False {reason}")


async def test_an_index_elasticsearch_refuses_is_an_invalid_spec_not_an_outage(
    cluster: Cluster, es: FakeElasticsearch
) -> None:
    """A declared analyzer naming a plugin's filter the cluster lacks: Elasticsearch answers 400,
    which no retry changes. Not StoreUnavailable retried every 30 s: InvalidSpec, with its reason."""
    missing = {
        "error": {"type": "index_not_found_exception", "reason": f"no such index [{ALIAS}]"},
        "status": 404,
    }
    es.always("GET", f"/{ALIAS}", missing, status=404)
    es.always("PUT", f"/{ALIAS}.000001", {"acknowledged": True, "shards_acknowledged": True})
    analyzers = {"folded": {"filter": ["lowercase", "icu_folding"]}}

    await cluster.create(knowledge_base(index={"analyzer": "folded", "analyzers": analyzers}))

    condition = await failed_with(cluster, "InvalidSpec")
    assert "Custom Analyzer [folded] failed to find filter under name [icu_folding]" in condition["message"]
    status = await cluster.status("KnowledgeBase", "handbook")
    assert status["phase"] == "Failed"
    degraded = await cluster.condition("KnowledgeBase", "handbook", "Degraded")
    assert degraded is not None and degraded["reason"] == "InvalidSpec"
    creates = [s for s in es.sent if s.method == "PUT"]
    assert creates and all(s.path == f"/{ALIAS}.000001" for s in creates)  # each refused once, no retries


@pytest.mark.from_environment("8.19.0")
async def test_an_elasticsearch_of_another_major_is_a_condition_that_says_so(cluster: Cluster) -> None:
    """elasticsearch-py 9 against an 8.x cluster: every request would fail with an error that does
    not say why. The operator asks the version first, and its KnowledgeBases say."""
    await cluster.create(knowledge_base())

    condition = await failed_with(cluster, "UnsupportedServer")
    assert "media_type_header_exception" in condition["message"]
    assert "Elasticsearch 9.x" in condition["message"]
    assert (await cluster.status("KnowledgeBase", "handbook"))["phase"] == "Failed"
