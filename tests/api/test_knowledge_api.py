"""The knowledge-base routes in-process: FastAPI's TestClient on the real app (its lifespan,
authentication and error mapping), with the knowledge service swapped through a dependency
override for one on real SQLite stores whose models are a few lines of numpy, so no
tritonserver is needed. tests/integration/test_knowledge_bases.py runs the same routes against
the real process and the real embedder."""

from __future__ import annotations

import dataclasses
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from kubechat.api.app import create_app
from kubechat.api.dependencies import Services, get_services
from kubechat.api.settings import Settings
from kubechat.core.errors import ModelUnavailableError
from kubechat.core.resources import KnowledgeBase, load_knowledge_bases_from_dir
from kubechat.knowledge.service import KnowledgeService
from kubechat.operator.knowledge_bases import KnowledgeStores
from kubechat.stores.errors import IndexMissingError
from kubechat.stores.objects.files import FileObjectStore
from kubechat.stores.sqlite.chunks import SQLiteChunkStore
from kubechat.stores.sqlite.documents import SQLiteDocumentCatalog
from tests.conftest import ALICE_KEY, BOB_KEY, EXAMPLE_MODELS, TEST_KNOWLEDGE_BASES, auth

T = TypeVar("T")

DIMENSIONS = 384  # what minilm, the test knowledge bases' embedder, returns
MAX_FILES = 3
DEADLINE_S = 30.0
MAX_IMAGE_BYTES = 64 * 1024
HANDBOOK = "/knowledge-bases/handbook"
RUNBOOK = (
    b"# Runbook\n\n## Ports\nThe gateway listens on port 8000.\n\n## Backups\nHistory is saved nightly.\n"
)
KNOWLEDGE_BASES = {kb.name: kb for kb in load_knowledge_bases_from_dir(TEST_KNOWLEDGE_BASES)}


class Reply(Protocol):
    """A TestClient response (httpx's, or httpx2's where Starlette finds that installed)."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    def json(self, **kwargs: Any) -> Any: ...


class HashedWordModels:
    """Triton's embedder and vision model, stood in for by a few lines: a text's vector is its
    words hashed into DIMENSIONS buckets (texts sharing words are near), an image's description a
    fixed sentence. `down` fails every call as an unreachable Triton does."""

    def __init__(self) -> None:
        self.down = False
        self.zero = False  # an embedder gone wrong: every vector 0, which cosine cannot compare

    async def embed(self, model: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if self.down:
            raise ModelUnavailableError(f"model {model} is unavailable: Triton is unreachable")
        vectors = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        if self.zero:
            return vectors
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                vectors[row, zlib.crc32(word.encode()) % DIMENSIONS] += 1.0
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)
        return np.asarray(vectors / norms, dtype=np.float32)

    async def describe_image(self, model: str, image: bytes, prompt: str, max_tokens: int) -> str:
        if self.down:
            raise ModelUnavailableError(f"model {model} is unavailable: Triton is unreachable")
        return "A whiteboard listing the on-call rota."


@dataclass
class KnowledgeApi:
    client: TestClient
    knowledge: KnowledgeService
    stores: KnowledgeStores  # the knowledge service's stores, as the operator reaches them
    models: HashedWordModels

    def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run `call` on the app's event loop, where the knowledge service lives."""
        assert self.client.portal is not None
        return self.client.portal.call(call)

    def get(self, path: str, key: str = ALICE_KEY, **params: Any) -> Any:
        response = self.client.get(path, headers=auth(key), params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def upload(self, kb: str, *files: tuple[str, bytes], key: str = ALICE_KEY) -> Reply:
        return self.client.post(
            f"/knowledge-bases/{kb}/documents", files=[("files", f) for f in files], headers=auth(key)
        )

    def document_when(
        self, kb: str, document_id: str, predicate: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """Poll a document until `predicate` holds, with a deadline."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            document: dict[str, Any] = self.get(f"/knowledge-bases/{kb}/documents/{document_id}")
            if predicate(document):
                return document
            assert time.monotonic() < deadline, f"document {document_id} stayed {document['status']}"
            time.sleep(0.02)

    def settled(self, kb: str, document_id: str) -> dict[str, Any]:
        """The document once its ingestion has ended, indexed or failed."""
        return self.document_when(kb, document_id, lambda d: d["status"] in ("indexed", "failed"))


def settings(state: Path) -> Settings:
    return Settings(
        state_dir=state, models_dir=EXAMPLE_MODELS, knowledge_bases_dir=TEST_KNOWLEDGE_BASES,
        api_keys=SecretStr(f"{ALICE_KEY}=alice,{BOB_KEY}=bob"), triton_url="127.0.0.1:9",
        mcp_server_enabled=False, max_upload_files=MAX_FILES, max_image_bytes=MAX_IMAGE_BYTES,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Mode:
    """Files mode (the knowledge bases of tests/data, indices created here) or cluster mode
    (declared by discovery, indices created by the operator)."""

    cluster: bool = False


def knowledge_api(tmp_path: Path, mode: Mode) -> Iterator[KnowledgeApi]:
    app = create_app(settings(tmp_path / "api"))
    with TestClient(app) as client:
        services: Services = app.state.services
        models = HashedWordModels()

        async def open_knowledge() -> tuple[KnowledgeService, KnowledgeStores]:
            stores = KnowledgeStores(
                chunks=await SQLiteChunkStore.open(tmp_path / "chunks.sqlite3"),
                objects=FileObjectStore(tmp_path / "documents"),
                documents=await SQLiteDocumentCatalog.open(tmp_path / "documents.sqlite3"),
            )
            knowledge = KnowledgeService(
                [] if mode.cluster else list(KNOWLEDGE_BASES.values()), services.catalog,
                stores.documents, stores.objects, stores.chunks, models, workers=1, max_files=MAX_FILES,
                dynamic=mode.cluster, creates_indices=not mode.cluster,
            )  # fmt: skip
            await knowledge.start()
            return knowledge, stores

        assert client.portal is not None
        api = KnowledgeApi(client, *client.portal.call(open_knowledge), models)
        app.dependency_overrides[get_services] = lambda: dataclasses.replace(
            services, knowledge=api.knowledge
        )
        try:
            yield api
        finally:

            async def close() -> None:
                await api.knowledge.stop()
                await api.stores.close()

            api.run(close)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KnowledgeApi]:
    yield from knowledge_api(tmp_path, Mode())


@pytest.fixture
def cluster_api(tmp_path: Path) -> Iterator[KnowledgeApi]:
    yield from knowledge_api(tmp_path, Mode(cluster=True))


# -- listing and access ----------------------------------------------------------------------


def test_each_principal_lists_what_it_may_read(api: KnowledgeApi) -> None:
    alice = {kb["name"]: kb for kb in api.get("/knowledge-bases")["items"]}
    assert sorted(alice) == ["handbook", "misdeclared"]
    handbook = alice["handbook"]
    assert handbook["ready"] and handbook["writable"] and handbook["reason"] == ""
    assert (handbook["dimensions"], handbook["chunk_size"], handbook["chunks"]) == (384, 64, 0)
    bob = {kb["name"]: kb for kb in api.get("/knowledge-bases", BOB_KEY)["items"]}
    assert sorted(bob) == ["handbook", "private"]
    assert not bob["handbook"]["writable"] and bob["private"]["writable"]


def test_knowledge_bases_are_listed_page_by_page_by_name(api: KnowledgeApi) -> None:
    first = api.get("/knowledge-bases", limit=1)
    assert [kb["name"] for kb in first["items"]] == ["handbook"] and first["next_cursor"]
    rest = api.get("/knowledge-bases", limit=1, cursor=first["next_cursor"])
    assert [kb["name"] for kb in rest["items"]] == ["misdeclared"] and rest["next_cursor"] is None


def test_what_one_may_not_read_does_not_exist(api: KnowledgeApi) -> None:
    for response in (
        api.client.get("/knowledge-bases/private", headers=auth()),
        api.upload("private", ("a.txt", b"alice was here")),
        api.client.post("/knowledge-bases/private/search", json={"query": "x"}, headers=auth()),
        api.client.get("/knowledge-bases/nope/documents", headers=auth()),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "knowledge_base_not_found"


def test_readers_may_not_write(api: KnowledgeApi) -> None:
    refused: list[Reply] = [
        api.upload("handbook", ("a.txt", b"bob was here"), key=BOB_KEY),
        api.client.post(f"{HANDBOOK}/reindex", headers=auth(BOB_KEY)),
        api.client.delete(f"{HANDBOOK}/documents/0123", headers=auth(BOB_KEY)),
    ]
    assert [(r.status_code, r.json()["error"]["code"]) for r in refused] == [(403, "forbidden")] * 3


def test_requests_need_a_principal(api: KnowledgeApi) -> None:
    response = api.client.get("/knowledge-bases")
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"


# -- documents -------------------------------------------------------------------------------


def test_upload_is_ingested_and_searchable(api: KnowledgeApi) -> None:
    response = api.upload("handbook", ("runbook.md", RUNBOOK))
    assert response.status_code == 202, response.text
    (uploaded,) = response.json()["documents"]
    assert uploaded["status"] == "queued" and not uploaded["duplicate"] and uploaded["uploaded_by"] == "alice"
    document = api.settled("handbook", uploaded["id"])
    assert document["status"] == "indexed" and document["chunks"] == document["chunks_indexed"] >= 1
    assert api.get(HANDBOOK)["chunks"] == document["chunks"]

    found = api.client.post(
        f"{HANDBOOK}/search", json={"query": "which port does the gateway use"}, headers=auth()
    )
    assert found.status_code == 200, found.text
    (best, *_) = found.json()["sources"]
    assert best["n"] == 1 and best["document_name"] == "runbook.md" and "8000" in best["text"]
    assert best["section"] == "Ports"

    again = api.upload("handbook", ("copy.md", RUNBOOK))
    assert again.status_code == 202
    (duplicate,) = again.json()["documents"]
    assert duplicate["duplicate"] is True
    assert (duplicate["id"], duplicate["name"], duplicate["status"]) == (
        document["id"],
        "runbook.md",
        "indexed",
    )


def test_documents_are_listed_page_by_page(api: KnowledgeApi) -> None:
    ids = {
        d["id"]
        for d in api.upload("handbook", *[(f"n{i}.txt", f"note {i}".encode()) for i in range(3)]).json()[
            "documents"
        ]
    }
    first = api.get(f"{HANDBOOK}/documents", limit=2)
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = api.get(f"{HANDBOOK}/documents", limit=2, cursor=first["next_cursor"])
    assert rest["next_cursor"] is None
    assert {d["id"] for d in first["items"] + rest["items"]} == ids
    bad = api.client.get(f"{HANDBOOK}/documents", params={"cursor": "not-a-cursor"}, headers=auth())
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"


def test_delete_removes_chunks_bytes_and_row(api: KnowledgeApi) -> None:
    (uploaded,) = api.upload("handbook", ("runbook.md", RUNBOOK)).json()["documents"]
    api.settled("handbook", uploaded["id"])
    response = api.client.delete(f"{HANDBOOK}/documents/{uploaded['id']}", headers=auth())
    assert response.status_code == 204
    missing = api.client.get(f"{HANDBOOK}/documents/{uploaded['id']}", headers=auth())
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "document_not_found"
    assert api.get(HANDBOOK)["chunks"] == 0 and api.get(HANDBOOK)["documents"] == {}
    key = KNOWLEDGE_BASES["handbook"].object_prefix + uploaded["sha256"]
    assert not api.run(lambda: api.stores.objects.exists(key))


def test_reindexing_a_document_and_the_knowledge_base(api: KnowledgeApi) -> None:
    (uploaded,) = api.upload("handbook", ("runbook.md", RUNBOOK)).json()["documents"]
    chunks = api.settled("handbook", uploaded["id"])["chunks"]
    again = api.client.post(f"{HANDBOOK}/documents/{uploaded['id']}/reindex", headers=auth())
    assert again.status_code == 202 and again.json()["status"] == "queued"
    assert api.settled("handbook", uploaded["id"])["status"] == "indexed"

    whole = api.client.post(f"{HANDBOOK}/reindex", headers=auth())
    assert whole.status_code == 202 and whole.json() == {"knowledge_base": "handbook", "documents_queued": 1}
    deadline = time.monotonic() + DEADLINE_S
    while api.run(api.stores.documents.rebuilds):  # it goes live after its last document
        assert time.monotonic() < deadline, "the new generation never went live"
        time.sleep(0.02)
    assert api.settled("handbook", uploaded["id"])["status"] == "indexed"
    assert api.get(HANDBOOK)["chunks"] == chunks  # each chunk once, in the live generation


def test_vectors_of_another_size_fail_the_document(api: KnowledgeApi) -> None:
    (uploaded,) = api.upload("misdeclared", ("a.txt", b"words of a document")).json()["documents"]
    document = api.settled("misdeclared", uploaded["id"])
    assert document["status"] == "failed" and document["error_code"] == "embedding_mismatch"
    assert "512" in document["error_message"]


def test_vectors_the_similarity_refuses_fail_the_document_and_the_search(api: KnowledgeApi) -> None:
    """What Elasticsearch refuses (a zero vector under cosine), the embedded store refuses too,
    with one stable code: the document fails, not retried; a search answers 502 invalid_vector."""
    api.models.zero = True
    (uploaded,) = api.upload("handbook", ("zero.txt", b"Words the embedder maps to nothing.")).json()[
        "documents"
    ]
    document = api.settled("handbook", uploaded["id"])
    assert document["status"] == "failed" and document["error_code"] == "invalid_vector"
    assert "zero magnitude" in document["error_message"] and "cosine" in document["error_message"]

    search = api.client.post(f"{HANDBOOK}/search", json={"query": "anything"}, headers=auth())
    assert search.status_code == 502
    assert search.json()["error"]["code"] == "invalid_vector"
    assert "zero magnitude" in search.json()["error"]["message"]


def test_ingestion_waits_for_the_embedder(api: KnowledgeApi) -> None:
    """Triton down: the document stays queued with the reason, then is indexed once it is back."""
    api.models.down = True
    (uploaded,) = api.upload("handbook", ("wait.txt", b"The patient heron waits.")).json()["documents"]
    waiting = api.document_when("handbook", uploaded["id"], lambda d: d["error_code"] == "retrying")
    assert waiting["status"] == "queued" and "unreachable" in waiting["error_message"]
    api.models.down = False
    document = api.settled("handbook", uploaded["id"])
    assert document["status"] == "indexed" and document["error_code"] == ""


# -- cluster mode: the operator creates the index --------------------------------------------


def declared(api: KnowledgeApi, kb: KnowledgeBase) -> None:
    """Discovery's part: the KnowledgeBase resource listed or changed."""
    api.run(lambda: api.knowledge.put(kb))


def test_cluster_mode_waits_for_the_operators_index(cluster_api: KnowledgeApi) -> None:
    api = cluster_api
    handbook = KNOWLEDGE_BASES["handbook"]
    declared(api, handbook)
    listed = api.get(HANDBOOK)
    assert listed["ready"] is False and "operator" in listed["reason"]
    refused: list[Reply] = [
        api.upload("handbook", ("a.txt", b"too early")),
        api.client.post(f"{HANDBOOK}/search", json={"query": "anything"}, headers=auth()),
        api.client.post(f"{HANDBOOK}/reindex", headers=auth()),
    ]
    assert [(r.status_code, r.json()["error"]["code"]) for r in refused] == [
        (409, "knowledge_base_unavailable")
    ] * 3
    assert "operator" in refused[0].json()["error"]["message"]
    with pytest.raises(IndexMissingError):  # the API made no index of its own
        api.run(lambda: api.stores.chunks.ensure_index(handbook, create=False))

    api.run(lambda: api.stores.provision(handbook))  # the operator's reconcile
    status = handbook.status.model_copy(update={"index": handbook.generation_index(1)})
    declared(api, handbook.model_copy(update={"status": status}))  # then its status: the same spec
    assert api.get(HANDBOOK)["ready"] is True
    (uploaded,) = api.upload("handbook", ("runbook.md", RUNBOOK)).json()["documents"]
    assert api.settled("handbook", uploaded["id"])["status"] == "indexed"


def test_cluster_mode_finds_the_index_when_used(cluster_api: KnowledgeApi) -> None:
    """Without a status update in between, the next upload looks again and finds the index."""
    api = cluster_api
    handbook = KNOWLEDGE_BASES["handbook"]
    declared(api, handbook)
    assert api.get(HANDBOOK)["ready"] is False
    api.run(lambda: api.stores.provision(handbook))
    response = api.upload("handbook", ("runbook.md", RUNBOOK))
    assert response.status_code == 202, response.text
    assert api.get(HANDBOOK)["ready"] is True
