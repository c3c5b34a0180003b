"""An API whose Elasticsearch is of a major its client cannot talk to: it starts, is not ready,
and says why, instead of failing every request with an error that does not.

Elasticsearch is the HTTP-level fake of tests/unit/test_elasticsearch_store.py answering as an
8.x cluster answers elasticsearch-py 9 (tests/elasticsearch_rules.py).
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import SecretStr

from kubechat.api.app import create_app
from kubechat.api.settings import Settings
from tests.conftest import ALICE_KEY, EXAMPLE_MODELS, TEST_KNOWLEDGE_BASES, auth
from tests.unit.test_elasticsearch_store import FakeElasticsearch
from tests.unit.test_elasticsearch_store import es as es


def test_an_8x_elasticsearch_is_a_clear_ready_reason(es: FakeElasticsearch, tmp_path: Path) -> None:
    es.refusals.server_major = 8
    es.root("8.19.0")
    settings = Settings(
        state_dir=tmp_path, models_dir=EXAMPLE_MODELS, knowledge_bases_dir=TEST_KNOWLEDGE_BASES,
        api_keys=SecretStr(f"{ALICE_KEY}=alice"), mcp_server_enabled=False, elasticsearch_url=es.url,
    )  # fmt: skip

    with TestClient(create_app(settings)) as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
        assert ready.status_code == 503
        reason = ready.json()["checks"]["stores"]
        assert reason.startswith("unsupported: Elasticsearch refuses this client's requests")
        assert "media_type_header_exception" in reason and "Elasticsearch 9.x" in reason
        # Every other route answers the one error shape, with the same reason.
        sessions = client.get("/sessions", headers=auth(ALICE_KEY))
        assert sessions.status_code == 503
        assert sessions.json()["error"]["code"] == "storage_unavailable"
        assert "media_type_header_exception" in sessions.json()["error"]["message"]

    assert [sent.path for sent in es.sent] == ["/"]  # asked once, nothing else sent
