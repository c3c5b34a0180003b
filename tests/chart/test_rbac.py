"""The chart's RBAC covers every Kubernetes API call the operator and the API make, and grants
little more.

The programs run for real against kmock's emulated API server, as the chart deploys them: the
operator watching the release's namespace only (KUBECHAT_OPERATOR_NAMESPACE), the API in cluster
mode for that namespace. Each HTTP request they send is mapped to what the API server's RBAC
authorizer checks (verb, API group, resource[/subresource], namespace, name) and must be allowed
by the rules the chart binds to that program's ServiceAccount (RoleBindings in the namespace,
ClusterRoleBindings everywhere). Then the other way round: every (verb, resource) the chart grants
must have been used, or be listed below with the reason it is needed anyway.

Discovery (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`, `/version`) is left out: the
API server's default `system:discovery` role lets every authenticated client read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kmock import KubernetesEmulator
from kmock._internal import parsing
from kubernetes_asyncio import client

from kubechat.api.app import create_app
from kubechat.api.settings import Discovery, Settings
from kubechat.core.resources import GROUP, VERSION
from kubechat.operator.knowledge_bases import KnowledgeStores
from kubechat.operator.runner import run
from kubechat.operator.settings import OperatorSettings
from kubechat.stores.objects.files import FileObjectStore
from kubechat.stores.sqlite.chunks import SQLiteChunkStore
from kubechat.stores.sqlite.documents import SQLiteDocumentCatalog
from tests.chart.rendering import NAMESPACE, RELEASE, Manifest, Rendered, rendered
from tests.kube import install_cluster
from tests.polling import eventually

OPERATOR_ACCOUNT = f"{RELEASE}-operator"
API_ACCOUNT = f"{RELEASE}-api"
TEST_HEADER = "X-Kubechat-Test"  # on the test's own requests, which are not the programs'
DEADLINE_S = 20.0

# Granted but not exercised by the scenarios, and why each is needed all the same.
OPERATOR_UNUSED_BUT_NEEDED = {
    # kopf posts Events for what a handler logs through kopf's `logger` at WARNING and above
    # (posting.level); today's handlers log through module loggers, so none is posted here.
    ("create", "", "events"),
    # Owner references with blockOwnerDeletion, on clusters that enforce it (OpenShift's
    # OwnerReferencesPermissionEnforcement): checked at create, never called itself.
    ("update", "kubechat.io", "chatmodels/finalizers"),
    # kopf's documented RBAC for namespace and CRD observation; which of get/list/watch it
    # sends depends on kopf's version and on errors (it re-reads after a failed watch).
    ("get", "", "namespaces"),
    ("get", "apiextensions.k8s.io", "customresourcedefinitions"),
    # Reads of a single ChatModel/KnowledgeBase (kopf re-reads an object before handling a
    # stale event; the operator's resync reads each model before applying it).
    ("get", "kubechat.io", "knowledgebases"),
    # An HPA is patched only when it drifts from its render (a changed metric or bounds); the
    # ConfigMap and the Service only when a change other than scaling (engine, source, ports)
    # or a hand edit touches them: this scenario only scales and edits the Deployment.
    ("patch", "autoscaling", "horizontalpodautoscalers"),
    ("patch", "", "configmaps"),
    ("patch", "", "services"),
    # Children are deleted by the garbage collector with their ChatModel; the operator deletes
    # only an HPA (autoscaling turned off) or a PDB (replicas down to one) itself.
    ("delete", "", "configmaps"),
    ("delete", "", "services"),
    ("delete", "apps", "deployments"),
    ("delete", "policy", "poddisruptionbudgets"),
    # A GPU model's weight cache (claim and Job) is made once per source and left to the garbage
    # collector; it is patched only when a hand edit or a label change touches it.
    ("patch", "", "persistentvolumeclaims"),
    ("patch", "batch", "jobs"),
    ("delete", "", "persistentvolumeclaims"),
    ("delete", "batch", "jobs"),
}
API_UNUSED_BUT_NEEDED = {
    # docs/cluster-mode.md promises get, list and watch; the informers list and watch only.
    ("get", "kubechat.io", "chatmodels"),
    ("get", "kubechat.io", "knowledgebases"),
}


# --- Requests → what RBAC checks -----------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    verb: str
    group: str
    resource: str  # plural, or plural/subresource
    namespace: str | None
    name: str | None

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else " (cluster)"
        group = self.group or "core"
        return f"{self.verb} {group}/{self.resource}{f' {self.name}' if self.name else ''}{where}"


def kubernetes_call(method: str, path: str, params: dict[str, str]) -> Call | None:
    """The RBAC request of one HTTP request; None for discovery (a non-resource URL)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        rest = []
    if not rest:
        assert method == "GET", f"{method} {path} is not a discovery read"
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, "/".join(rest[2:])
    resource = f"{plural}/{sub}" if sub else plural
    verbs = {
        "GET": "watch" if params.get("watch") in ("true", "1") else "get" if name else "list",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }
    return Call(verbs[method], group, resource, namespace, name)


def test_requests_map_to_rbac_checks() -> None:
    assert kubernetes_call("GET", "/apis/apps/v1", {}) is None
    assert kubernetes_call("GET", "/api/v1/namespaces", {}) == Call("list", "", "namespaces", None, None)
    assert kubernetes_call("GET", "/api/v1/namespaces/a", {}) == Call("get", "", "namespaces", None, "a")
    assert kubernetes_call(
        "GET", "/apis/kubechat.io/v1alpha1/namespaces/a/chatmodels", {"watch": "true"}
    ) == (Call("watch", "kubechat.io", "chatmodels", "a", None))
    assert kubernetes_call("PATCH", "/apis/kubechat.io/v1alpha1/namespaces/a/chatmodels/m/status", {}) == (
        Call("patch", "kubechat.io", "chatmodels/status", "a", "m")
    )
    assert kubernetes_call("POST", "/api/v1/namespaces/a/events", {}) == Call(
        "create", "", "events", "a", None
    )


# --- The chart's rules for one ServiceAccount ---------------------------------------------------


@dataclass(frozen=True)
class Grant:
    namespace: str | None  # None: cluster-wide (a ClusterRoleBinding)
    rule: Manifest


def grants(chart: Rendered, account: str) -> list[Grant]:
    """The rules bound to a ServiceAccount of the release's namespace."""

    def binds(binding: Manifest) -> bool:
        return any(
            s["kind"] == "ServiceAccount" and s["name"] == account and s.get("namespace") == NAMESPACE
            for s in binding.get("subjects", [])
        )

    found: list[Grant] = []
    for binding in chart.of_kind("RoleBinding") + chart.of_kind("ClusterRoleBinding"):
        if not binds(binding):
            continue
        ref = binding["roleRef"]
        role = chart.get(ref["kind"], ref["name"])
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        found += [Grant(scope, rule) for rule in role["rules"]]
    return found


def _matches(values: list[str], value: str) -> bool:
    return "*" in values or value in values


def allowed(call: Call, granted: Iterable[Grant]) -> bool:
    for grant in granted:
        rule = grant.rule
        if grant.namespace is not None and call.namespace != grant.namespace:
            continue  # a Role grants only namespaced resources of its own namespace
        if not (
            _matches(rule.get("apiGroups", []), call.group)
            and _matches(rule.get("resources", []), call.resource)
        ):
            continue
        if not _matches(rule["verbs"], call.verb):
            continue
        names = rule.get("resourceNames")
        if names and (call.name is None or call.name not in names):
            continue
        return True
    return False


def granted_permissions(granted: Iterable[Grant]) -> set[tuple[str, str, str]]:
    return {
        (verb, group, resource)
        for grant in granted
        for group in grant.rule["apiGroups"]
        for resource in grant.rule["resources"]
        for verb in grant.rule["verbs"]
    }


def program_calls(kmock: KubernetesEmulator) -> list[Call]:
    """The requests the program under test sent (not the test's own), as RBAC checks."""
    calls = []
    for request in kmock:
        if request.headers.get(TEST_HEADER):
            continue
        call = kubernetes_call(request.method.value, request.url.path, dict(request.params))
        if call is not None:
            calls.append(call)
    return calls


def assert_covered(
    calls: list[Call], granted: list[Grant], unused_but_needed: set[tuple[str, str, str]]
) -> None:
    uncovered = sorted({str(c) for c in calls if not allowed(c, granted)})
    assert uncovered == [], "calls the chart's RBAC does not allow:\n" + "\n".join(uncovered)
    used = {(c.verb, c.group, c.resource) for c in calls}
    unexplained = sorted(granted_permissions(granted) - used - unused_but_needed)
    assert unexplained == [], f"granted, never used, and not explained: {unexplained}"
    stale = sorted(unused_but_needed & used)
    assert stale == [], f"used after all: drop them from the unused list: {stale}"


def test_a_missing_or_misplaced_rule_is_caught() -> None:
    """The check means something: without the watch verb, or in another namespace, or for a
    cluster-scoped resource that only a Role names, the call is not allowed."""
    granted = grants(rendered("default"), OPERATOR_ACCOUNT)
    watch = Call("watch", "kubechat.io", "chatmodels", NAMESPACE, None)
    assert allowed(watch, granted)
    assert not allowed(Call("watch", "kubechat.io", "chatmodels", "elsewhere", None), granted)
    assert not allowed(Call("watch", "kubechat.io", "chatmodels", None, None), granted)  # cluster-wide
    assert not allowed(Call("create", "", "secrets", NAMESPACE, None), granted)
    without_watch = [
        Grant(g.namespace, {**g.rule, "verbs": [v for v in g.rule["verbs"] if v != "watch"]}) for g in granted
    ]
    assert not allowed(watch, without_watch)
    with pytest.raises(AssertionError, match="does not allow"):
        assert_covered([watch], without_watch, OPERATOR_UNUSED_BUT_NEEDED)


# --- The emulated cluster -------------------------------------------------------------------------


@pytest.fixture
def kmock_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """kmock 0.8 reads `/api/v1/namespaces[/<name>]` as a namespace prefix with nothing after it
    and answers 500; kopf lists and watches namespaces when it serves one namespace. Parse them
    as the cluster-scoped resource they are."""
    original = parsing.parse_path

    def parse_path(path: str) -> parsing.ParsedPath:
        parts = [p for p in path.split("/") if p]
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
            name = parts[3] if len(parts) == 4 else None
            return parsing.ParsedPath("", "v1", "namespaces", None, name, None)
        return original(path)

    monkeypatch.setattr(parsing, "parse_path", parse_path)


@contextlib.asynccontextmanager
async def own_client(server: str) -> AsyncIterator[client.ApiClient]:
    async with client.ApiClient(
        client.Configuration(host=server), header_name=TEST_HEADER, header_value="1"
    ) as api:
        yield api


def _document(kind: str, name: str, spec: dict[str, Any]) -> Manifest:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        # kmock sets none of these; kopf and the operator read them.
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": spec,
    }


CHAT_MODEL = _document(
    "ChatModel",
    "rbac-model",
    {
        "engine": {"backend": "synthetic"},
        "replicas": 2,
        "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
        "capabilities": ["chat"],
    },
)
KNOWLEDGE_BASE = _document(
    "KnowledgeBase",
    "rbac-docs",
    {
        "embedding": {"model": "rbac-model", "dimensions": 4},
        "chunking": {"size": 64, "overlap": 16},
        "access": {"owners": ["alice"]},
        "deletionPolicy": "Delete",
    },
)


async def _read(read: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await read()
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


# --- The operator -------------------------------------------------------------------------------


async def test_the_operator_rbac_covers_every_call_it_makes(
    kmock: KubernetesEmulator, kmock_namespaces: None, tmp_path: Path
) -> None:
    """Create a ChatModel with autoscaling (every kind of child), turn autoscaling off (the HPA
    is deleted), delete a child by hand (recreated), edit a Deployment (patched back), create and
    delete a KnowledgeBase (finalizer, index, Delete policy), delete the ChatModel."""
    server = install_cluster(kmock)
    async with own_client(server) as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        custom, autoscaling = client.CustomObjectsApi(api), client.AutoscalingV2Api(api)
        namespace: Any = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        await core.create_namespace(namespace)
        stores = KnowledgeStores(
            chunks=await SQLiteChunkStore.open(tmp_path / "chunks.sqlite3"),
            objects=FileObjectStore(tmp_path / "objects"),
            documents=await SQLiteDocumentCatalog.open(tmp_path / "documents.sqlite3"),
        )
        # As the chart runs it: one namespace (KUBECHAT_OPERATOR_NAMESPACE), short intervals.
        settings = OperatorSettings(namespace=NAMESPACE, resync_interval_s=0.5, count_interval_s=0.5)
        stop, ready = asyncio.Event(), asyncio.Event()
        operator = asyncio.create_task(
            run(settings, server=server, stores=stores, stop_flag=stop, ready_flag=ready)
        )
        try:
            await asyncio.wait_for(ready.wait(), 30)
            name, child = CHAT_MODEL["metadata"]["name"], "rbac-model-triton"
            await custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "chatmodels", copy.deepcopy(CHAT_MODEL)
            )
            await eventually(
                lambda: _read(
                    lambda: autoscaling.read_namespaced_horizontal_pod_autoscaler(child, NAMESPACE)
                ),
                "the HPA",
            )
            await custom.patch_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "chatmodels", name,
                {"metadata": {"generation": 2}, "spec": {"autoscaling": None}},
            )  # fmt: skip
            await eventually(
                lambda: _none(
                    _read(lambda: autoscaling.read_namespaced_horizontal_pod_autoscaler(child, NAMESPACE))
                ),
                "the HPA deleted",
            )
            await core.delete_namespaced_service(child, NAMESPACE)
            await eventually(
                lambda: _read(lambda: core.read_namespaced_service(child, NAMESPACE)), "the Service back"
            )
            patch: Any = apps.patch_namespaced_deployment  # the stubs lack _content_type
            await patch(
                child,
                NAMESPACE,
                {"spec": {"revisionHistoryLimit": 9}},
                _content_type="application/merge-patch+json",
            )

            async def restored() -> bool:
                deployment = await apps.read_namespaced_deployment(child, NAMESPACE)
                return bool(deployment.spec.revision_history_limit == 3)

            await eventually(restored, "the Deployment patched back")

            kb = KNOWLEDGE_BASE["metadata"]["name"]
            await custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "knowledgebases", copy.deepcopy(KNOWLEDGE_BASE)
            )

            async def kb_ready() -> bool:
                found = await _read(
                    lambda: custom.get_namespaced_custom_object(
                        GROUP, VERSION, NAMESPACE, "knowledgebases", kb
                    )
                )
                conditions = ((found or {}).get("status") or {}).get("conditions") or []
                return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

            await eventually(kb_ready, "the KnowledgeBase Ready")
            await custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "knowledgebases", kb)
            await eventually(
                lambda: _none(
                    _read(
                        lambda: custom.get_namespaced_custom_object(
                            GROUP, VERSION, NAMESPACE, "knowledgebases", kb
                        )
                    )
                ),
                "the KnowledgeBase gone (finalizer released)",
            )
            await custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "chatmodels", name)

            # A GPU model: its weight cache (a claim and the Job that fills it) comes first.
            gpu = _document(
                "ChatModel",
                "rbac-gpu",
                {
                    "engine": {"backend": "tensorrtllm"},
                    "resources": {"gpus": 1},
                    "source": {"huggingFace": {"repo": "org/model"}},
                },
            )
            await custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "chatmodels", gpu)
            batch = client.BatchV1Api(api)

            async def cache_job() -> bool:
                jobs = await batch.list_namespaced_job(NAMESPACE)
                return any(j.metadata.name.startswith("rbac-gpu-fetch-") for j in jobs.items)

            await eventually(cache_job, "the weight cache Job")
            await custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "chatmodels", "rbac-gpu")

            # A spec the CRD would refuse (TensorRT-LLM without a GPU) got through: InvalidSpec.
            invalid = _document(
                "ChatModel", "rbac-invalid", {"engine": {"backend": "tensorrtllm"}, "resources": {"gpus": 0}}
            )
            invalid["spec"]["source"] = {"huggingFace": {"repo": "org/model"}}
            await custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "chatmodels", invalid)

            async def refused() -> bool:
                found = await custom.get_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, "chatmodels", "rbac-invalid"
                )
                conditions = (found.get("status") or {}).get("conditions") or []
                return any(c["type"] == "Ready" and c.get("reason") == "InvalidSpec" for c in conditions)

            await eventually(refused, "InvalidSpec")
            await asyncio.sleep(1.0)  # a resync pass after the deletion
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(operator, 30)

    calls = program_calls(kmock)
    assert any(c.verb == "watch" and c.resource == "chatmodels" and c.namespace == NAMESPACE for c in calls)
    assert not any(c.resource in ("chatmodels", "configmaps") and c.namespace is None for c in calls)
    for name in ("default", "production", "kind"):
        assert_covered(calls, grants(rendered(name), OPERATOR_ACCOUNT), OPERATOR_UNUSED_BUT_NEEDED)
    # The record, for the reader of a failure.
    print("\n".join(sorted({f"{c.verb} {c.group or 'core'}/{c.resource}" for c in calls})))


async def _none(found: Awaitable[Any]) -> bool:
    return (await found) is None


# --- The API ------------------------------------------------------------------------------------


async def test_the_api_rbac_covers_every_call_it_makes(
    kmock: KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API in cluster mode (its real app and lifespan) lists and watches the namespace's
    ChatModels and KnowledgeBases; a model added and removed while it runs arrives by watch."""
    server = install_cluster(kmock)
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "api",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "api", "user": {"token": "api-service-account"}}],
        "contexts": [{"name": "api", "context": {"cluster": "kmock", "user": "api", "namespace": NAMESPACE}}],
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = Settings(
        discovery=Discovery.KUBERNETES, kubernetes_namespace=NAMESPACE, state_dir=tmp_path / "state"
    )
    (tmp_path / "state").mkdir()
    app = create_app(settings)
    async with own_client(server) as api:
        custom = client.CustomObjectsApi(api)
        await custom.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "chatmodels", copy.deepcopy(CHAT_MODEL)
        )
        await custom.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "knowledgebases", copy.deepcopy(KNOWLEDGE_BASE)
        )
        async with app.router.lifespan_context(app):
            services = app.state.services

            async def synced() -> bool:
                return bool(services.discovery.synced and services.catalog.find("rbac-model"))

            await eventually(synced, "discovery synced")
            later = copy.deepcopy(CHAT_MODEL)
            later["metadata"].update(name="rbac-later", uid=str(uuid.uuid4()))
            await custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "chatmodels", later)

            async def added() -> bool:
                return services.catalog.find("rbac-later") is not None

            await eventually(added, "a ChatModel by watch")
            await custom.delete_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "chatmodels", "rbac-later"
            )

            async def removed() -> bool:
                return services.catalog.find("rbac-later") is None

            await eventually(removed, "a deletion by watch")

    calls = program_calls(kmock)
    assert {(c.verb, c.resource) for c in calls} >= {("list", "chatmodels"), ("watch", "knowledgebases")}
    assert all(c.namespace == NAMESPACE for c in calls)
    for name in ("default", "production", "kind"):
        assert_covered(calls, grants(rendered(name), API_ACCOUNT), API_UNUSED_BUT_NEEDED)
    # The API writes nothing: its account may not either.
    writes = {"create", "update", "patch", "delete", "deletecollection"}
    assert not any(
        verb in writes for verb, _, _ in granted_permissions(grants(rendered("default"), API_ACCOUNT))
    )
