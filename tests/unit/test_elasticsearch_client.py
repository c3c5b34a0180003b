"""What every Elasticsearch store shares: the one client of a process, its retries, the bulk path.

As in test_elasticsearch_store: a real AsyncElasticsearch talks HTTP to a local server that
answers in order with bodies shaped like Elasticsearch 9's.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch
from pydantic import SecretStr
from pytest_httpserver import HTTPServer

from kubechat.api.settings import Settings
from kubechat.core.settings import StoreSettings
from kubechat.operator import runner as operator_runner
from kubechat.stores import open as stores_open
from kubechat.stores.elasticsearch.chunks import ElasticsearchChunkStore
from kubechat.stores.elasticsearch.client import (
    CLIENT_MAJOR,
    MAX_BACKOFF_S,
    BulkAction,
    PartFailure,
    RequestFailed,
    Retries,
    bulk,
    check_server,
    new_client,
    partial_failure,
)
from kubechat.stores.elasticsearch.documents import ElasticsearchDocumentCatalog
from kubechat.stores.elasticsearch.history import ElasticsearchHistoryStore
from kubechat.stores.errors import StoreError, StoreUnavailableError, UnsupportedServerError
from kubechat.stores.objects.files import FileObjectStore
from kubechat.stores.open import open_stores
from kubechat.stores.sqlite.chunks import SQLiteChunkStore
from kubechat.stores.sqlite.documents import SQLiteDocumentCatalog
from kubechat.stores.sqlite.history import SQLiteHistoryStore
from tests.conftest import free_port
from tests.unit.test_elasticsearch_store import KB, REJECTED, RETRIES, FakeElasticsearch
from tests.unit.test_elasticsearch_store import client as client
from tests.unit.test_elasticsearch_store import es as es

SHARDS = {"total": 1, "successful": 1, "skipped": 0, "failed": 0}
CREATED = {"acknowledged": True, "shards_acknowledged": True}
COUNT = {"count": 0, "_shards": SHARDS}


# -- the client --------------------------------------------------------------------------------


async def count_with(es: FakeElasticsearch, client: AsyncElasticsearch) -> dict[str, str]:
    """The headers of a request sent with `client` (closed afterwards)."""
    es.reply("POST", f"/{KB.index_alias}/_count", COUNT)
    try:
        await ElasticsearchChunkStore(client).count(KB)
    finally:
        await client.close()
    return es.sent[-1].headers


async def test_new_client_sends_the_api_key(es: FakeElasticsearch) -> None:
    headers = await count_with(es, new_client(es.url, api_key="a2V5LWlkOmtleQ=="))

    assert headers["Authorization"] == "ApiKey a2V5LWlkOmtleQ=="


async def test_new_client_sends_a_username_and_password(es: FakeElasticsearch) -> None:
    headers = await count_with(es, new_client(es.url, username="kubechat", password="s3cret"))

    assert headers["Authorization"] == "Basic " + base64.b64encode(b"kubechat:s3cret").decode()


async def test_new_client_wants_one_kind_of_credentials() -> None:
    with pytest.raises(ValueError, match="not both"):
        new_client("http://127.0.0.1:9200", api_key="k", username="u", password="p")
    with pytest.raises(ValueError, match="needs a password"):
        new_client("http://127.0.0.1:9200", username="u")
    # Unset settings arrive as empty strings.
    await new_client("http://127.0.0.1:9200", api_key="", username="u", password="p").close()


async def test_the_transport_does_not_retry_behind_our_back(es: FakeElasticsearch) -> None:
    es.error("POST", f"/{KB.index_alias}/_count", 503, "cluster_block_exception", "blocked")
    client = new_client(es.url)
    try:
        with pytest.raises(StoreUnavailableError, match="after 1 attempts"):
            await ElasticsearchChunkStore(client, retries=Retries(max_retries=0)).count(KB)
    finally:
        await client.close()

    assert len(es.sent) == 1


StoreUse = Callable[[AsyncElasticsearch, Retries], Awaitable[object]]


@pytest.mark.parametrize(
    "use",
    [
        lambda client, retries: ElasticsearchChunkStore(client, retries=retries).count(KB),
        lambda client, retries: ElasticsearchDocumentCatalog(client, retries=retries).ensure_index(),
        lambda client, retries: ElasticsearchHistoryStore(client, retries=retries).ensure_index(),
    ],
    ids=["chunks", "documents", "history"],
)
async def test_every_store_finds_an_unreachable_cluster_unavailable(use: StoreUse) -> None:
    client = new_client(f"http://127.0.0.1:{free_port()}", request_timeout=2)
    try:
        with pytest.raises(StoreUnavailableError, match="after 2 attempts"):
            await use(client, Retries(max_retries=1, backoff_s=0.001))
    finally:
        await client.close()


# -- one client per process --------------------------------------------------------------------


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[tuple[AsyncElasticsearch, list[str]]]:
    """Every client open_stores makes, with what happened to it ("closed")."""
    clients: list[tuple[AsyncElasticsearch, list[str]]] = []

    def making(url: str, **credentials: Any) -> AsyncElasticsearch:
        client, events = new_client(url, **credentials), []
        close = client.close

        async def closing() -> None:
            events.append("closed")
            await close()

        monkeypatch.setattr(client, "close", closing)
        clients.append((client, events))
        return client

    monkeypatch.setattr(stores_open, "new_client", making)
    return clients


def cluster_settings(es: FakeElasticsearch, tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path, elasticsearch_url=es.url, elasticsearch_username="kubechat",
        elasticsearch_password=SecretStr("s3cret"), elasticsearch_history_index="chats",
    )  # fmt: skip


async def test_the_stores_of_a_process_share_one_client_closed_once(
    es: FakeElasticsearch, tmp_path: Path, made: list[tuple[AsyncElasticsearch, list[str]]]
) -> None:
    es.root()
    es.reply("PUT", "/kubechat-documents", {**CREATED, "index": "kubechat-documents"})
    es.reply("PUT", "/chats", {**CREATED, "index": "chats"})
    es.reply("POST", f"/{KB.index_alias}/_count", COUNT)
    es.reply("POST", "/kubechat-documents/_count", COUNT)
    es.reply("HEAD", "/chats", {})

    stores = await open_stores(cluster_settings(es, tmp_path))
    history = await stores.open_history()
    assert isinstance(stores.chunks, ElasticsearchChunkStore)
    assert isinstance(stores.documents, ElasticsearchDocumentCatalog)
    assert isinstance(history, ElasticsearchHistoryStore) and history.index == "chats"
    ((client, events),) = made
    assert stores.elasticsearch is client
    # A store closing does not close what it shares with the others.
    await stores.chunks.close()
    await history.close()
    assert await stores.chunks.count(KB) == 0
    assert await stores.documents.count_pending("docs") == 0
    await history.ping()
    assert events == []

    await stores.close()

    assert events == ["closed"]
    basic = "Basic " + base64.b64encode(b"kubechat:s3cret").decode()
    assert {sent.headers["Authorization"] for sent in es.sent} == {basic}


async def test_the_operator_closes_its_one_client_with_its_stores(
    es: FakeElasticsearch, tmp_path: Path, made: list[tuple[AsyncElasticsearch, list[str]]]
) -> None:
    es.root()
    es.reply("PUT", "/kubechat-documents", {**CREATED, "index": "kubechat-documents"})

    stores = await operator_runner.open_stores(cluster_settings(es, tmp_path))
    assert stores is not None
    assert isinstance(stores.chunks, ElasticsearchChunkStore)
    await stores.close()

    ((_, events),) = made
    assert events == ["closed"]
    # The version first, then the catalog; no history.
    assert [(sent.method, sent.path) for sent in es.sent] == [("GET", "/"), ("PUT", "/kubechat-documents")]


async def test_a_failed_opening_closes_the_client(
    es: FakeElasticsearch, tmp_path: Path, made: list[tuple[AsyncElasticsearch, list[str]]]
) -> None:
    es.root()
    es.error("PUT", "/kubechat-documents", 403, "security_exception", "[indices:admin/create] unauthorized")

    with pytest.raises(RequestFailed, match="403 security_exception"):
        await open_stores(cluster_settings(es, tmp_path))

    ((_, events),) = made
    assert events == ["closed"]


async def test_embedded_stores_need_no_client(
    tmp_path: Path, made: list[tuple[AsyncElasticsearch, list[str]]]
) -> None:
    stores = await open_stores(StoreSettings(state_dir=tmp_path, elasticsearch_url="", s3_endpoint=""))
    history = await stores.open_history()
    try:
        assert stores.elasticsearch is None and made == []
        assert isinstance(stores.chunks, SQLiteChunkStore)
        assert isinstance(stores.documents, SQLiteDocumentCatalog)
        assert isinstance(stores.objects, FileObjectStore)
        assert isinstance(history, SQLiteHistoryStore)
        session = await history.create_session("alice", "kept")
    finally:
        await stores.close()

    reopened = await open_stores(StoreSettings(state_dir=tmp_path, elasticsearch_url="", s3_endpoint=""))
    try:
        assert (await (await reopened.open_history()).get_session("alice", session.id)).title == "kept"
    finally:
        await reopened.close()


# -- retries -----------------------------------------------------------------------------------


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The back-off waits tenacity asks for (none taken)."""
    asked: list[float] = []
    sleep = asyncio.sleep

    async def recording(delay: float, *args: Any) -> Any:
        asked.append(delay)
        return await sleep(0, *args)

    monkeypatch.setattr(asyncio, "sleep", recording)
    return asked


async def never() -> str | None:
    return None


async def test_back_off_waits_a_random_time_in_a_doubling_window(waits: list[float]) -> None:
    retries = Retries(max_retries=4, backoff_s=0.25)
    assert await retries.poll(never) is None
    first = list(waits)
    await retries.poll(never)

    # Each wait is anywhere from 0 to a window that doubles: 0.25, 0.5, 1, 2 s (full jitter).
    assert len(first) == 4
    assert all(0 <= wait <= min(0.25 * 2**n, MAX_BACKOFF_S) for n, wait in enumerate(first))
    assert waits[4:] != first  # replicas turned away together do not come back together


async def test_poll_backs_off_until_there_is_an_answer(waits: list[float]) -> None:
    answers = iter([None, None, "ready"])

    async def look() -> str | None:
        return next(answers)

    assert await Retries(max_retries=4, backoff_s=0.01).poll(look) == "ready"
    assert len(waits) == 2


async def test_poll_gives_up_with_nothing(waits: list[float]) -> None:
    assert await Retries(max_retries=2, backoff_s=0.01).poll(never) is None
    assert len(waits) == 2  # three looks, two waits


def test_retries_refuse_negative_settings() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Retries(max_retries=-1)
    with pytest.raises(ValueError, match=">= 0"):
        Retries(backoff_s=-0.5)


# -- the bulk path -----------------------------------------------------------------------------


def item(key: str, status: int, error: dict[str, Any]) -> dict[str, Any]:
    return {"create": {"_index": "entries", "_id": key, "status": status, "error": error}}


def created(key: str) -> dict[str, Any]:
    return {
        "create": {
            "_index": "entries", "_id": key, "_version": 1, "result": "created", "_seq_no": 0,
            "_primary_term": 1, "status": 201, "_shards": {"total": 1, "successful": 1, "failed": 0},
        }
    }  # fmt: skip


def bulk_answer(es: FakeElasticsearch, *items: dict[str, Any]) -> None:
    errors = any("error" in next(iter(i.values())) for i in items)
    es.reply("PUT", "/entries/_bulk", {"errors": errors, "took": 2, "items": list(items)})


ACTIONS = [BulkAction("create", f"k{n}", {"n": n}) for n in range(3)]
UNAVAILABLE = {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}
CONFLICT = {"type": "version_conflict_engine_exception", "reason": "[k1]: document already exists"}
PARSING = {"type": "document_parsing_exception", "reason": "[1:7] failed to parse field [n]"}


async def test_bulk_sends_again_only_what_was_turned_away(
    es: FakeElasticsearch, client: AsyncElasticsearch
) -> None:
    bulk_answer(es, created("k0"), item("k1", 429, REJECTED), item("k2", 503, UNAVAILABLE))
    # The 409: the first try of k1 went through after all.
    bulk_answer(es, item("k1", 409, CONFLICT), created("k2"))

    failures = await bulk(
        client, "write entries", ACTIONS, RETRIES, done_status={409}, index="entries", refresh="wait_for"
    )

    assert failures == []
    first, again = es.sent
    assert first.body == [line for n in range(3) for line in ({"create": {"_id": f"k{n}"}}, {"n": n})]
    assert again.body == [{"create": {"_id": "k1"}}, {"n": 1}, {"create": {"_id": "k2"}}, {"n": 2}]
    # Documents are never echoed back in errors; every request waits for the refresh.
    assert first.params == again.params == {"include_source_on_error": "false", "refresh": "wait_for"}


async def test_bulk_stops_at_a_failure_for_good_and_reports_every_failed_item(
    es: FakeElasticsearch, client: AsyncElasticsearch
) -> None:
    bulk_answer(es, item("k0", 400, PARSING), item("k1", 429, REJECTED), created("k2"))

    failures = await bulk(client, "write entries", ACTIONS, RETRIES, index="entries")

    assert failures == [
        PartFailure("k0", 400, "document_parsing_exception", PARSING["reason"]),
        PartFailure("k1", 429, REJECTED["type"], REJECTED["reason"]),
    ]
    assert len(es.sent) == 1
    error = partial_failure("write entries", failures, 3, "entries")
    assert not isinstance(error, StoreUnavailableError)
    assert str(error).startswith("write entries: 2 of 3 entries failed: k0: 400 document_parsing_exception")


async def test_bulk_items_still_turned_away_at_the_end_are_reported_unavailable(
    es: FakeElasticsearch, client: AsyncElasticsearch
) -> None:
    for _ in range(3):  # RETRIES: three attempts
        bulk_answer(es, item("k0", 503, UNAVAILABLE))

    failures = await bulk(client, "write entries", ACTIONS[:1], RETRIES, index="entries")

    assert [(f.key, f.status) for f in failures] == [("k0", 503)]
    assert isinstance(partial_failure("write entries", failures, 1, "entries"), StoreUnavailableError)


async def test_a_bulk_request_turned_away_is_retried_then_unavailable(
    es: FakeElasticsearch, client: AsyncElasticsearch
) -> None:
    es.error("PUT", "/entries/_bulk", 429, REJECTED["type"], REJECTED["reason"])
    for _ in range(3):
        es.error("PUT", "/entries/_bulk", 503, "cluster_block_exception", "blocked by: [SERVICE_UNAVAILABLE]")

    bulk_answer_after = Retries(max_retries=3, backoff_s=0.001)
    with pytest.raises(StoreUnavailableError, match=r"write entries failed after 4 attempts.*cluster_block"):
        await bulk(client, "write entries", ACTIONS[:1], bulk_answer_after, index="entries")

    assert len({str(sent.body) for sent in es.sent}) == 1  # the same request each time


def test_partial_failures_inside_the_cluster_are_unavailable() -> None:
    internal = PartFailure("k0", 500, "exception", "boom")
    turned_away = PartFailure("k1", 429, REJECTED["type"], REJECTED["reason"])
    refused = PartFailure("k2", 403, "security_exception", "unauthorized")

    assert isinstance(partial_failure("w", [internal, turned_away], 2, "entries"), StoreUnavailableError)
    error = partial_failure("w", [turned_away, refused], 2, "entries")
    assert isinstance(error, StoreError) and not isinstance(error, StoreUnavailableError)


# -- the server's version -------------------------------------------------------------------------


async def test_a_supported_server_reports_its_version(
    es: FakeElasticsearch, client: AsyncElasticsearch
) -> None:
    es.root("9.1.0")

    assert await check_server(client, RETRIES) == "9.1.0"
    assert es.sent[0].headers["Accept"].endswith("compatible-with=9")


async def test_an_8x_server_is_unsupported_with_a_reason_that_says_so(
    es: FakeElasticsearch, client: AsyncElasticsearch
) -> None:
    """elasticsearch-py 9 asks for compatibility with 9; an 8.x cluster refuses every request."""
    es.refusals.server_major = 8
    es.root("8.19.0")  # what it would answer a client it understood

    with pytest.raises(UnsupportedServerError) as caught:
        await check_server(client, RETRIES)

    message = str(caught.value)
    assert "media_type_header_exception" in message
    assert "Accept version must be either version 8 or 7, but found 9" in message
    assert f"older than {CLIENT_MAJOR}.0" in message and f"Elasticsearch {CLIENT_MAJOR}.x" in message
    assert len(es.sent) == 1  # not retried


async def test_an_8x_server_stops_the_stores_from_opening_with_that_reason(
    es: FakeElasticsearch, tmp_path: Path, made: list[tuple[AsyncElasticsearch, list[str]]]
) -> None:
    es.refusals.server_major = 8
    es.root("8.19.0")

    with pytest.raises(UnsupportedServerError, match="older than"):
        await open_stores(cluster_settings(es, tmp_path))

    ((_, events),) = made
    assert events == ["closed"]
    assert [sent.path for sent in es.sent] == ["/"]  # no store touched it


async def test_something_that_is_not_elasticsearch_is_unsupported(
    httpserver: HTTPServer, client: AsyncElasticsearch
) -> None:
    httpserver.expect_ordered_request("/", method="GET").respond_with_json(
        {"name": "node", "version": {"distribution": "opensearch", "number": "2.19.0"}}
    )

    with pytest.raises(UnsupportedServerError, match="not Elasticsearch"):
        await check_server(client, RETRIES)
    httpserver.check_assertions()


async def test_a_newer_major_is_allowed_with_a_warning(
    es: FakeElasticsearch, client: AsyncElasticsearch, caplog: pytest.LogCaptureFixture
) -> None:
    es.root(f"{CLIENT_MAJOR + 1}.0.0")

    assert await check_server(client, RETRIES) == f"{CLIENT_MAJOR + 1}.0.0"
    assert "newer than this client" in caplog.text


async def test_error_messages_carry_the_cause_elasticsearch_gives(
    es: FakeElasticsearch, client: AsyncElasticsearch
) -> None:
    cause = {
        "type": "illegal_argument_exception",
        "reason": "The [cosine] similarity does not support vectors",
    }
    failed = "search_phase_execution_exception"
    es.error("POST", f"/{KB.index_alias}/_count", 400, failed, "all shards failed", caused_by=cause)

    with pytest.raises(RequestFailed) as caught:
        await ElasticsearchChunkStore(client, retries=RETRIES).count(KB)
    assert str(caught.value).endswith(
        "400 search_phase_execution_exception all shards failed (caused by illegal_argument_exception: "
        "The [cosine] similarity does not support vectors)"
    )
