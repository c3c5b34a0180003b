"""Cluster mode: the API (a real process) discovers ChatModels and KnowledgeBases through the
Kubernetes API (kmock's emulator, reached through a generated kubeconfig) and routes each model
to the Triton its status names (the session's real tritonserver).

The test plays the operator: it creates, patches and deletes the custom resources and writes
their status (metadata.uid and generation included, which kmock does not set)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kmock import KubernetesEmulator, action, resource
from kubernetes_asyncio import client, config

from kubechat.catalog import ChatTurn, cluster_entry, load_catalog
from kubechat.core.resources import GROUP, VERSION, KnowledgeBase, load_chat_models_from_dir, parse_resource
from kubechat.embedded.tritonserver import TritonServer
from kubechat.knowledge.service import KnowledgeService
from kubechat.knowledge.uploads import Upload
from kubechat.stores.documents import DocumentStatus
from kubechat.stores.objects.files import FileObjectStore
from kubechat.stores.sqlite.chunks import SQLiteChunkStore
from kubechat.stores.sqlite.documents import SQLiteDocumentCatalog
from kubechat.triton.artifacts import tokenizer_dir
from kubechat.triton.client import TritonRouter
from tests.conftest import ALICE_KEY, BOB_KEY, EXAMPLE_MODELS, ApiProcess, auth, free_port
from tests.integration.conftest import chatting, new_session
from tests.integration.test_ingestion_durability import long_document
from tests.kube import install_cluster
from tests.polling import eventually

pytestmark = pytest.mark.triton

NAMESPACE = "team-a"
CHAT_MODELS = resource(f"{GROUP}/{VERSION}/chatmodels")
EXAMPLES = {model.name: model for model in load_chat_models_from_dir(EXAMPLE_MODELS)}
HANDBOOK = {
    "embedding": {"model": "minilm", "dimensions": 384},
    "chunking": {"size": 64, "overlap": 16},
    "access": {"owners": ["alice"], "readers": ["bob"]},
}
DEADLINE_S = 30.0


# -- the operator's side -------------------------------------------------------------------


def ready_status(
    endpoint: str, ready: bool = True, reason: str = "ReplicasReady", message: str = ""
) -> dict[str, Any]:
    """A status as the operator writes it."""
    return {
        "phase": "Ready" if ready else "Degraded",
        "observedGeneration": 1,
        "endpoint": endpoint,
        "replicas": 1,
        "readyReplicas": 1 if ready else 0,
        "conditions": [
            {"type": "Ready", "status": "True" if ready else "False", "reason": reason, "message": message,
             "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Progressing", "status": "False", "reason": "RolloutComplete", "observedGeneration": 1},
        ],
    }  # fmt: skip


class Operator:
    """Writes ChatModel and KnowledgeBase resources (and their status) through the Kubernetes API."""

    def __init__(self, api: client.CustomObjectsApi) -> None:
        self.api = api
        self.uids = 0

    def _document(self, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        self.uids += 1
        return {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{self.uids}", "generation": 1},
            "spec": spec,
        }  # fmt: skip

    async def create_model(self, name: str, spec: dict[str, Any] | None = None) -> None:
        if spec is None:
            spec = EXAMPLES[name].model_dump(mode="json", by_alias=True, exclude_defaults=True)["spec"]
        await self.api.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "chatmodels", self._document("ChatModel", name, spec)
        )

    async def model_status(self, name: str, status: dict[str, Any]) -> None:
        await self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, NAMESPACE, "chatmodels", name, {"status": status}
        )

    async def patch_model(self, name: str, patch: dict[str, Any]) -> None:
        await self.api.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "chatmodels", name, patch)

    async def delete_model(self, name: str) -> None:
        await self.api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "chatmodels", name)

    async def create_knowledge_base(self, name: str, spec: dict[str, Any]) -> None:
        await self.api.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "knowledgebases", self._document("KnowledgeBase", name, spec)
        )

    async def delete_knowledge_base(self, name: str) -> None:
        await self.api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "knowledgebases", name)


def write_kubeconfig(path: Path, server: str) -> Path:
    context = {"cluster": "kmock", "user": "api", "namespace": NAMESPACE}
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "api", "user": {"token": "unused-by-kmock"}}],
        "contexts": [{"name": "test", "context": context}],
    }
    path.write_text(yaml.safe_dump(kubeconfig))
    return path


def tokenizers(state_dir: Path, folder: Path) -> Path:
    """KUBECHAT_TOKENIZERS_DIR as a chart would mount it: one tokenizer folder per model name
    (here links to the ones the session's embedded runtime uses)."""
    folder.mkdir()
    for name in ("smollm2", "minilm"):
        source = tokenizer_dir(EXAMPLES[name], state_dir)
        assert source is not None and (source / "tokenizer.json").exists()
        (folder / name).symlink_to(source)
    return folder


@dataclass
class Cluster:
    kmock: KubernetesEmulator
    operator: Operator
    api: ApiProcess
    http: httpx.AsyncClient
    triton: TritonServer
    tokenizers: Path

    async def models(self) -> dict[str, dict[str, Any]]:
        response = await self.http.get("/models")
        assert response.status_code == 200, response.text
        return {m["name"]: m for m in response.json()["items"]}

    async def openai_models(self) -> list[str]:
        response = await self.http.get("/v1/models")
        assert response.status_code == 200, response.text
        return sorted(m["id"] for m in response.json()["data"])

    async def complete(self, model: str, content: str = "Say hi.", max_tokens: int = 8) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
        return await self.http.post("/v1/chat/completions", json={**body, "temperature": 0})

    def log(self) -> str:
        return self.api.log.read_text()


@pytest.fixture
async def operator(kmock: KubernetesEmulator, tmp_path: Path) -> AsyncIterator[Operator]:
    server = install_cluster(kmock)
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(write_kubeconfig(tmp_path / "kubeconfig", server)),
        client_configuration=configuration, persist_config=False,
    )  # fmt: skip
    async with client.ApiClient(configuration) as api_client:
        yield Operator(client.CustomObjectsApi(api_client))


@asynccontextmanager
async def cluster_api(
    kmock: KubernetesEmulator, operator: Operator, triton: TritonServer, state_dir: Path, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """The API in cluster mode, in its own process, watching the namespace through kmock."""
    state = tmp_path / "state"
    state.mkdir()
    env = {
        "KUBECHAT_DISCOVERY": "kubernetes",
        "KUBECHAT_KUBERNETES_NAMESPACE": NAMESPACE,
        "KUBECONFIG": str(tmp_path / "kubeconfig"),
        "KUBECHAT_TOKENIZERS_DIR": str(tokenizers(state_dir, tmp_path / "tokenizers")),
        "KUBECHAT_STATE_DIR": str(state),
        "KUBECHAT_API_KEYS": f"{ALICE_KEY}=alice,{BOB_KEY}=bob",
        # Files mode's inputs, unused here: nothing may come from them.
        "KUBECHAT_TRITON_URL": triton.grpc_url,
        "KUBECHAT_MODELS_DIR": str(tmp_path / "no-models"),
        "KUBECHAT_KNOWLEDGE_BASES_DIR": str(tmp_path / "no-knowledge-bases"),
        "KUBECHAT_DEFAULT_MODEL": "",
    }
    api = ApiProcess(env, tmp_path / "api.log")
    # The API talks to kmock, which this event loop serves: start it without blocking the loop.
    await asyncio.to_thread(api.start)
    try:
        async with httpx.AsyncClient(base_url=api.url, headers=auth(), timeout=60) as http:
            yield Cluster(kmock, operator, api, http, triton, Path(env["KUBECHAT_TOKENIZERS_DIR"]))
    finally:
        await asyncio.to_thread(api.stop)


@pytest.fixture
async def cluster(
    kmock: KubernetesEmulator, operator: Operator, triton: TritonServer, state_dir: Path, tmp_path: Path
) -> AsyncIterator[Cluster]:
    async with cluster_api(kmock, operator, triton, state_dir, tmp_path) as running:
        await eventually(lambda: ready(running), "the first sync", within_s=DEADLINE_S)
        yield running


async def ready(cluster: Cluster) -> bool:
    return (await cluster.http.get("/ready")).status_code == 200


async def chat_over_socket(cluster: Cluster, model: str, content: str = "Say hi.") -> dict[str, Any]:
    """One WebSocket turn: its first error event (a refused message has nothing else), else done."""
    session = await new_session(cluster.http)
    async with chatting(cluster.api, session) as chat:
        await chat.ask(content, model=model, options={"temperature": 0, "max_tokens": 8})
        first = await chat.event()
        if first["type"] == "error":
            return first
        assert first["type"] == "start", first
        errors = []
        while (event := await chat.event())["type"] != "done":
            if event["type"] == "error":
                errors.append(event)
        return errors[0] if errors else event


# -- readiness -----------------------------------------------------------------------------


async def test_ready_before_and_after_the_first_sync(
    kmock: KubernetesEmulator, operator: Operator, triton: TritonServer, state_dir: Path, tmp_path: Path
) -> None:
    """Until both kinds are listed /ready is 503 (naming what it waits for) while /health and
    the routes answer; once listed it is 200, and an unready model is reported, not gating."""
    failing = {"on": True}
    kmock[CHAT_MODELS, action.LIST][lambda _: failing["on"]] << 503
    await operator.create_model("synthetic")
    async with cluster_api(kmock, operator, triton, state_dir, tmp_path) as cluster:
        assert (await cluster.http.get("/health")).status_code == 200
        response = await cluster.http.get("/ready")
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["checks"]["discovery"].startswith("not synced (chatmodels: HTTP 503")
        assert body["checks"]["history"] == "ready"
        assert await cluster.models() == {}

        failing["on"] = False  # the API server answers again: the back-off re-lists
        await eventually(lambda: ready(cluster), "the first sync", within_s=DEADLINE_S)
        body = (await cluster.http.get("/ready")).json()
        assert body["checks"] == {"discovery": "ready", "history": "ready"}
        assert body["discovery"] == {"chatmodels": "watching", "knowledgebases": "watching"}
        # Listed, but not reported ready by the operator yet: reported, not gating.
        assert body["models"] == {"synthetic": "not ready: Pending"}
        assert len(kmock[CHAT_MODELS, action.LIST]) >= 2


# -- ChatModels ----------------------------------------------------------------------------


async def test_chat_model_lifecycle(cluster: Cluster) -> None:
    """Added → listed (not offered to OpenAI clients, refused to chat) until Ready → chat streams
    through the endpoint in its status → follows the endpoint when it moves → deleted: gone."""
    operator, triton = cluster.operator, cluster.triton
    await operator.create_model("smollm2")
    models = await eventually(cluster.models, "smollm2 in /models", within_s=DEADLINE_S)
    assert models["smollm2"]["ready"] is False and models["smollm2"]["reason"] == "Pending"
    assert models["smollm2"]["default"] is True
    assert await cluster.openai_models() == []
    refused = await cluster.complete("smollm2")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_unavailable"
    error = await chat_over_socket(cluster, "smollm2")
    assert error["type"] == "error" and error["error"]["code"] == "model_unavailable"

    await operator.model_status("smollm2", ready_status(triton.grpc_url))
    assert await eventually(cluster.openai_models, "smollm2 offered", within_s=DEADLINE_S) == ["smollm2"]
    assert (await cluster.models())["smollm2"]["ready"] is True
    question = "What is the capital of France? Answer in one sentence."
    session = await new_session(cluster.http)
    async with chatting(cluster.api, session) as chat:
        await chat.ask(question, options={"max_tokens": 40})
        turn = await chat.turn()
    assert "Paris" in turn.text, turn.text  # SmolLM2 itself, through the routed endpoint
    assert turn.done is not None and turn.done["status"] == "complete"
    # Its template and token count come from KUBECHAT_TOKENIZERS_DIR/smollm2.
    expected = cluster_entry(EXAMPLES["smollm2"], cluster.tokenizers).build_prompt(
        [ChatTurn("user", question)]
    )
    assert expected.tokens > len(expected.text.split())  # a real tokenizer, not the word count
    assert turn.done["usage"]["prompt_tokens"] == expected.tokens

    # The model moves to another Service: requests follow (here one nobody listens on).
    dead = f"127.0.0.1:{free_port()}"
    await operator.model_status("smollm2", ready_status(dead))

    async def routed_to_dead() -> bool:
        response = await cluster.complete("smollm2")
        return response.status_code == 503 and response.json()["error"]["code"] == "model_unavailable"

    await eventually(routed_to_dead, "requests routed to the new endpoint", within_s=DEADLINE_S)
    # And back, under another name for the same server.
    await operator.model_status("smollm2", ready_status(f"localhost:{triton.grpc_port}"))

    async def answered() -> bool:
        return (await cluster.complete("smollm2")).status_code == 200

    await eventually(answered, "requests routed to the live endpoint again", within_s=DEADLINE_S)

    await operator.delete_model("smollm2")
    await eventually(lambda: _absent(cluster, "smollm2"), "smollm2 gone", within_s=DEADLINE_S)
    assert await cluster.openai_models() == []
    gone = await cluster.complete("smollm2")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
    error = await chat_over_socket(cluster, "smollm2")
    assert error["error"]["code"] == "model_not_found"


async def _absent(cluster: Cluster, name: str) -> bool:
    return name not in await cluster.models()


async def test_unready_model_is_reported_with_its_reason_and_refused(cluster: Cluster) -> None:
    """Ready=False: /models gives the condition's reason and message, OpenAI clients are not
    offered it, chatting is refused with model_unavailable, and /ready stays 200."""
    await cluster.operator.create_model("synthetic")
    await cluster.operator.model_status("synthetic", ready_status(cluster.triton.grpc_url))
    await eventually(cluster.openai_models, "synthetic offered", within_s=DEADLINE_S)
    done = await chat_over_socket(cluster, "synthetic")
    assert done["type"] == "done" and done["status"] == "complete", done

    down = ready_status(
        cluster.triton.grpc_url, ready=False, reason="NoReplicaReady", message="0/1 replicas ready"
    )
    await cluster.operator.model_status("synthetic", down)

    async def reported() -> dict[str, Any] | None:
        model = (await cluster.models())["synthetic"]
        return model if not model["ready"] else None

    model = await eventually(reported, "synthetic reported not ready", within_s=DEADLINE_S)
    assert (model["reason"], model["message"]) == ("NoReplicaReady", "0/1 replicas ready")
    assert await cluster.openai_models() == []
    refused = await cluster.complete("synthetic")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "model_unavailable"
    assert "NoReplicaReady" in refused.json()["error"]["message"]
    error = await chat_over_socket(cluster, "synthetic")
    assert error["error"]["code"] == "model_unavailable"
    response = await cluster.http.get("/ready")
    assert response.status_code == 200
    assert response.json()["models"] == {"synthetic": "not ready: NoReplicaReady"}


async def test_invalid_chat_models_are_skipped_and_the_rest_served(cluster: Cluster) -> None:
    """A ChatModel that does not parse is logged and skipped; a valid one that turns invalid
    keeps its last valid version; deleting it removes it whatever its content."""
    operator = cluster.operator
    # Passes a loose schema but not the model: tensorrtllm needs GPUs.
    await operator.create_model(
        "broken", {"engine": {"backend": "tensorrtllm"}, "source": {"s3": {"uri": "s3://b/m"}}}
    )
    await operator.create_model("synthetic")
    await operator.model_status("synthetic", ready_status(cluster.triton.grpc_url))
    assert await eventually(cluster.openai_models, "synthetic offered", within_s=DEADLINE_S) == ["synthetic"]
    assert set(await cluster.models()) == {"synthetic"}
    assert "skipping an invalid ChatModel broken" in cluster.log()
    done = await chat_over_socket(cluster, "synthetic")
    assert done["type"] == "done" and done["status"] == "complete", done

    await operator.patch_model("synthetic", {"spec": {"engine": {"maxOutputTokens": 0}}})  # invalid now
    await eventually(
        lambda: _logged(cluster, "skipping an invalid ChatModel synthetic"),
        "the skip logged",
        within_s=DEADLINE_S,
    )
    assert (await cluster.models())["synthetic"]["max_output_tokens"] == 4096  # the last valid version
    done = await chat_over_socket(cluster, "synthetic")
    assert done["type"] == "done", done

    await operator.delete_model("synthetic")
    await eventually(lambda: _absent(cluster, "synthetic"), "synthetic gone", within_s=DEADLINE_S)
    await operator.delete_model("broken")
    assert (await cluster.http.get("/ready")).status_code == 200


async def _logged(cluster: Cluster, text: str) -> bool:
    return text in cluster.log()


# -- KnowledgeBases ------------------------------------------------------------------------


async def test_knowledge_base_lifecycle(cluster: Cluster) -> None:
    """A KnowledgeBase resource is listed (unavailable until its embedder is declared), takes
    documents embedded through the embedder's routed endpoint, and goes when deleted."""
    operator, http = cluster.operator, cluster.http
    await operator.create_knowledge_base("handbook", HANDBOOK)

    async def listed() -> dict[str, Any] | None:
        found = {kb["name"]: kb for kb in (await http.get("/knowledge-bases")).json()["items"]}
        return found.get("handbook")

    handbook = await eventually(listed, "handbook listed", within_s=DEADLINE_S)
    assert handbook["ready"] is False and "minilm" in handbook["reason"]
    private = await http.get("/knowledge-bases", headers=auth(BOB_KEY))
    assert [kb["name"] for kb in private.json()["items"]] == ["handbook"]  # bob reads it

    await operator.create_model("minilm")
    await operator.model_status("minilm", ready_status(cluster.triton.grpc_url))

    async def usable() -> bool:
        kb = await listed()
        return kb is not None and kb["ready"]

    await eventually(usable, "handbook ready once minilm is declared", within_s=DEADLINE_S)
    upload = await http.post(
        "/knowledge-bases/handbook/documents",
        files=[("files", ("ports.md", b"# Ports\nThe gateway listens on port 8000.\n"))],
    )
    assert upload.status_code == 202, upload.text
    document_id = upload.json()["documents"][0]["id"]

    async def indexed() -> bool:
        document = (await http.get(f"/knowledge-bases/handbook/documents/{document_id}")).json()
        assert document["status"] != "failed", document
        return bool(document["status"] == "indexed")

    await eventually(indexed, "the document indexed", within_s=120)
    found = await http.post("/knowledge-bases/handbook/search", json={"query": "which port?"})
    assert found.status_code == 200 and found.json()["sources"][0]["document_name"] == "ports.md"

    await operator.delete_knowledge_base("handbook")
    await eventually(lambda: _no_knowledge_base(cluster, "handbook"), "handbook gone", within_s=DEADLINE_S)
    missing = await http.get("/knowledge-bases/handbook")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "knowledge_base_not_found"


async def _no_knowledge_base(cluster: Cluster, name: str) -> bool:
    return name not in [kb["name"] for kb in (await cluster.http.get("/knowledge-bases")).json()["items"]]


async def test_removing_a_knowledge_base_stops_its_ingestion_cleanly(
    triton: TritonServer, state_dir: Path, tmp_path: Path
) -> None:
    """In-process (cluster mode's knowledge service): removing a knowledge base mid-ingestion
    stops it with nothing failed and no lease held; declaring it again resumes and finishes it."""
    catalog = await SQLiteDocumentCatalog.open(tmp_path / "documents.sqlite3")
    chunks = await SQLiteChunkStore.open(tmp_path / "chunks.sqlite3")
    router = TritonRouter(triton.grpc_url)
    service = KnowledgeService(
        [], load_catalog(EXAMPLE_MODELS, state_dir), catalog, FileObjectStore(tmp_path / "documents"),
        chunks, router, workers=1, dynamic=True,
    )  # fmt: skip
    kb = parse_resource(
        KnowledgeBase,
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "KnowledgeBase",
         "metadata": {"name": "handbook", "namespace": NAMESPACE}, "spec": HANDBOOK},
    )  # fmt: skip
    await service.start()
    try:
        await service.put(kb)
        assert service.unavailable_reason("handbook") is None
        (outcome,) = await service.upload(
            "handbook", "alice", [Upload("big.txt", long_document("gear", 300))]
        )
        document_id = outcome.document.id

        async def embedding() -> bool:
            document = await catalog.find(document_id)
            return document is not None and document.status is DocumentStatus.EMBEDDING

        await eventually(embedding, "ingestion under way", within_s=120)
        await service.remove("handbook")
        assert service.ingestion.running == set()  # stopped before remove() returned
        assert service.names() == []
        document = await catalog.find(document_id)
        assert document is not None and document.status is DocumentStatus.EMBEDDING  # pending, not failed
        assert not document.lease_owner

        await service.put(kb)  # declared again: its pending document is picked up

        async def settled() -> bool:
            document = await catalog.find(document_id)
            assert document is not None and document.status is not DocumentStatus.FAILED
            return document.status is DocumentStatus.INDEXED

        await eventually(settled, "the document indexed after all", within_s=180)
        assert await chunks.count(kb) == (await catalog.get("handbook", document_id)).chunks
    finally:
        await service.stop()
        await router.close()
        await catalog.close()
        await chunks.close()


# -- the watch -----------------------------------------------------------------------------


async def test_watch_resumes_after_the_api_server_ends_it(
    kmock: KubernetesEmulator, operator: Operator, triton: TritonServer, state_dir: Path, tmp_path: Path
) -> None:
    """The API server ends a watch (its timeout, a restart, an idle load balancer): the API
    watches again from where it was, without re-listing, and catches up."""
    ended = asyncio.Event()

    async def hold() -> None:
        await ended.wait()

    # The first watch stays open without delivering anything, then ends.
    kmock[CHAT_MODELS, action.WATCH][:1] << (b"", hold)
    async with cluster_api(kmock, operator, triton, state_dir, tmp_path) as cluster:
        await eventually(lambda: ready(cluster), "the first sync", within_s=DEADLINE_S)
        await eventually(lambda: _watching(kmock, 1), "the first watch", within_s=DEADLINE_S)
        await operator.create_model("synthetic")
        await asyncio.sleep(0.5)
        assert await cluster.models() == {}  # the held watch delivers nothing
        ended.set()
        await eventually(cluster.models, "synthetic, seen by the next watch", within_s=DEADLINE_S)
        assert len(kmock[CHAT_MODELS, action.WATCH]) == 2
        assert len(kmock[CHAT_MODELS, action.LIST]) == 1  # resumed, not re-listed
        assert (await cluster.http.get("/ready")).json()["discovery"]["chatmodels"] == "watching"


@pytest.mark.parametrize("code", [410, 500])
async def test_watch_errors_relist_and_reconcile(
    code: int,
    kmock: KubernetesEmulator,
    operator: Operator,
    triton: TritonServer,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    """An ERROR event (410 Gone: the resourceVersion is too old; 500: the server failed) makes
    the API list again: what was deleted meanwhile goes, what was added comes."""
    ended = asyncio.Event()

    async def hold() -> None:
        await ended.wait()

    reason = "Expired" if code == 410 else "InternalError"
    status = {"kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": "as tested"}
    kmock[CHAT_MODELS, action.WATCH][:1] << (b"", hold, {"type": "ERROR", "object": status})
    await operator.create_model("synthetic")
    async with cluster_api(kmock, operator, triton, state_dir, tmp_path) as cluster:
        await eventually(lambda: ready(cluster), "the first sync", within_s=DEADLINE_S)
        assert set(await cluster.models()) == {"synthetic"}
        await eventually(lambda: _watching(kmock, 1), "the first watch", within_s=DEADLINE_S)
        await operator.delete_model("synthetic")  # unseen: the watch delivers nothing
        await operator.create_model("smollm2")
        ended.set()

        async def reconciled() -> bool:
            return set(await cluster.models()) == {"smollm2"}

        await eventually(reconciled, "the re-listed state", within_s=DEADLINE_S)
        assert len(kmock[CHAT_MODELS, action.LIST]) == 2
        assert (await cluster.http.get("/ready")).status_code == 200
        if code != 410:  # expiry is routine (logged at info); a failure is a warning
            assert "chatmodels: list/watch failed (HTTP 500" in cluster.log()


async def _watching(kmock: KubernetesEmulator, count: int) -> bool:
    return len(kmock[CHAT_MODELS, action.WATCH]) >= count
