"""kopf registration: which events of which resources run which reconcile.

Only the decorators live here. Each handler names the kwargs it uses and calls into the
module of its kind: `chat_models` (ChatModel → Triton children and status) and
`knowledge_bases` (KnowledgeBase → index, prefix, counts, deletion policy). `runner` opens the
clients and stores and runs kopf with the registry filled here.

The handlers go into a registry of each run's own rather than kopf's global one: the tests, the
benchmark and the RBAC check run several operators, each with its own settings (the count
timer's interval among them), in one process.

kopf's own bookkeeping goes to annotations (`kubechat.io/...`), so status holds only what the
CRD's status schema declares.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import kopf

from kubechat.core.resources import GROUP, VERSION
from kubechat.operator.chat_models import ChatModelReconciler
from kubechat.operator.crds import PLURALS
from kubechat.operator.knowledge_bases import KnowledgeBaseReconciler
from kubechat.operator.kube import CHILD_RESOURCES
from kubechat.operator.manifests import CHAT_MODEL_LABEL, MANAGED_BY
from kubechat.operator.metrics import RESOURCE_STATES, observe_reconcile

# Only KnowledgeBases end up holding it: ChatModels have neither a delete handler nor a timer.
FINALIZER = f"{GROUP}/finalizer"

Reconcile = TypeVar("Reconcile", bound=Callable[..., Awaitable[None]])


def _on_spec(
    resource: tuple[str, str, str], registry: kopf.OperatorRegistry
) -> Callable[[Reconcile], Reconcile]:
    """Creation, a change of `spec`, and the operator's start (resume) all run one kind's whole,
    idempotent reconcile: level-triggered, whatever the event."""

    def decorate(handler: Reconcile) -> Reconcile:
        kopf.on.update(*resource, registry=registry, field="spec")(handler)
        kopf.on.create(*resource, registry=registry)(handler)
        kopf.on.resume(*resource, registry=registry)(handler)
        return handler

    return decorate


def register(
    registry: kopf.OperatorRegistry,
    chat_models: ChatModelReconciler,
    knowledge_bases: KnowledgeBaseReconciler,
    *,
    count_interval_s: float,
) -> None:
    """Bind the handlers of both kinds to these reconcilers in `registry`."""

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.posting.level = logging.WARNING

    chat = (GROUP, VERSION, PLURALS["ChatModel"])

    @_on_spec(chat, registry)
    async def chat_model(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await observe_reconcile("ChatModel", chat_models.reconcile(body, patch))

    # Optional: no finalizer (ChatModels never wait for the operator); only the gauges forget it.
    @kopf.on.delete(*chat, registry=registry, optional=True)
    async def chat_model_deleted(name: str, namespace: str | None, **_: Any) -> None:
        RESOURCE_STATES.forget("ChatModel", str(namespace), name)

    for group, version, plural in CHILD_RESOURCES:

        @kopf.on.event(
            group, version, plural, id=f"child-{plural}", registry=registry,
            labels={**MANAGED_BY, CHAT_MODEL_LABEL: kopf.PRESENT},
        )  # fmt: skip
        async def child(event: kopf.RawEvent, labels: kopf.Labels, namespace: str | None, **_: Any) -> None:
            if namespace is None:
                return
            deleted = event["type"] == "DELETED"
            if not deleted and event["object"].get("kind") not in ("Deployment", "Job"):
                return  # only the Deployment's and the weight cache Job's status feed the ChatModel's
            await chat_models.child_changed(labels[CHAT_MODEL_LABEL], namespace, deleted)

    kbs = (GROUP, VERSION, PLURALS["KnowledgeBase"])

    @_on_spec(kbs, registry)
    async def knowledge_base(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await observe_reconcile("KnowledgeBase", knowledge_bases.reconcile(body, patch))

    @kopf.timer(*kbs, registry=registry, interval=count_interval_s, initial_delay=count_interval_s)
    async def knowledge_base_counts(body: kopf.Body, patch: kopf.Patch, meta: kopf.Meta, **_: Any) -> None:
        if not meta.get("deletionTimestamp"):
            await observe_reconcile("KnowledgeBase", knowledge_bases.count(body, patch))

    @kopf.on.delete(*kbs, registry=registry)
    async def knowledge_base_deleted(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await observe_reconcile("KnowledgeBase", knowledge_bases.delete(body, patch))
        RESOURCE_STATES.forget("KnowledgeBase", str(body.metadata.namespace), str(body.metadata.name))


def register_login(registry: kopf.OperatorRegistry, server: str | None) -> None:
    """How kopf reaches the API server: `server` (tests, benchmarks), else the pod's service
    account, else the kubeconfig (a developer's machine)."""
    if server is not None:

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=server, scheme="Bearer", token="test", insecure=True)

    else:
        # A registry of our own has none of kopf's default login handlers.
        kopf.on.login(registry=registry)(kopf.login_with_service_account)
        kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)
