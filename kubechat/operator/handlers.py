"""kopf handlers: ChatModel → Triton children, KnowledgeBase → index and object prefix.

Everything is level-triggered: create, update, resume, a child's deletion and a periodic
resync all run one idempotent reconcile that renders the desired children and applies what
differs. Children carry owner references, so Kubernetes' garbage collector removes them with
their ChatModel; ChatModels get no finalizer, and uninstalling the operator never blocks their
deletion. KnowledgeBases do get one: their index and objects live outside Kubernetes.

kopf's own bookkeeping goes to annotations (`kubechat.io/...`), so status holds only what the
CRD's status schema declares.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import logging
from typing import Any, cast

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from kubechat.core.resources import (
    GROUP,
    VERSION,
    ChatModel,
    DeletionPolicy,
    KnowledgeBase,
    Phase,
    R,
    ResourceError,
    parse_resource,
)
from kubechat.operator import status as st
from kubechat.operator.knowledge import KnowledgeStores
from kubechat.operator.kube import Applied, Kube, api_failure
from kubechat.operator.manifests import (
    Children,
    grpc_endpoint,
    http_endpoint,
    render_children,
    selector,
    spec_hash,
)
from kubechat.operator.settings import OperatorSettings
from kubechat.stores.errors import EmbeddingMismatchError, StoreError
from kubechat.triton.repository import RenderError

logger = logging.getLogger(__name__)

MANAGED_BY = {"app.kubernetes.io/managed-by": "kubechat-operator"}
CHAT_MODEL_LABEL = "kubechat.io/chat-model"
_CHILD_KINDS = [
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("apps", "v1", "deployments"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
]
FINALIZER = f"{GROUP}/finalizer"
_RENDER_CACHE_SIZE = 4096


def _generation(meta: kopf.Meta) -> int | None:
    value = meta.get("generation")
    return int(value) if value is not None else None


def _parse(kind: type[R], body: kopf.Body) -> R:
    document = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": dict(body.metadata),
    }
    document["spec"] = dict(body.spec)
    return parse_resource(kind, document)


def _absent(children: Children) -> list[dict[str, Any]]:
    """Stand-ins naming the optional children `children` does not have (to delete them)."""
    meta = {k: children.deployment["metadata"][k] for k in ("name", "namespace")}
    absent = []
    if children.pdb is None:
        absent.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta})
    if children.hpa is None:
        absent.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta})
    return absent


class Operator:
    """The reconcilers, bound to one API client and one set of knowledge stores."""

    def __init__(self, settings: OperatorSettings, kube: Kube, stores: KnowledgeStores | None) -> None:
        self.settings = settings
        self.kube = kube
        self.stores = stores
        self._rendered: dict[tuple[str, str, str], Children] = {}
        self._locks: collections.defaultdict[tuple[str, str], asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )

    # -- ChatModel ---------------------------------------------------------------------------

    def desired(self, body: kopf.Body) -> tuple[ChatModel, Children]:
        model: ChatModel = _parse(ChatModel, body)
        # Rendering parses every config.pbtxt back (~50 ms for a TensorRT-LLM ensemble); resyncs
        # render the same specs over and over, so renders are kept by spec hash.
        key = (model.metadata.namespace, model.name, spec_hash(model))
        if key not in self._rendered:
            if len(self._rendered) >= _RENDER_CACHE_SIZE:
                self._rendered.pop(next(iter(self._rendered)))
            self._rendered[key] = render_children(model, self.settings)
        children = copy.deepcopy(self._rendered[key])
        for manifest in children.all():
            kopf.adopt(manifest, owner=body)
        return model, children

    async def reconcile_chat_model(self, body: kopf.Body, patch: kopf.Patch) -> dict[str, Applied]:
        # kopf's handler, a child's event and the resync loop may reconcile one model at once.
        async with self._locks[(str(body.metadata.namespace), str(body.metadata.name))]:
            return await self._reconcile_chat_model(body, patch)

    async def _reconcile_chat_model(self, body: kopf.Body, patch: kopf.Patch) -> dict[str, Applied]:
        generation = _generation(body.metadata)
        try:
            model, children = self.desired(body)
        except (ResourceError, ValidationError, RenderError) as exc:
            phase, conditions = st.invalid(str(exc), generation)
            self._status(patch, body, phase, conditions, {"observedGeneration": generation})
            raise kopf.PermanentError(f"invalid ChatModel: {exc}") from exc
        applied: dict[str, Applied] = {}
        deployment: dict[str, Any] | None = None
        try:
            for manifest in children.all():
                outcome, live = await self.kube.apply(manifest)
                applied[f"{manifest['kind']}/{manifest['metadata']['name']}"] = outcome
                if manifest is children.deployment:
                    deployment = live
            # Optional children a changed spec no longer asks for (autoscaling off, one replica);
            # only on spec changes, so that a resync of an unchanged model writes nothing.
            observed = (body.get("status") or {}).get("observedGeneration")
            if observed is None or observed != generation:
                for absent in _absent(children):
                    await self.kube.delete(absent)
        except ApiException as exc:
            raise api_failure(exc, f"applying the children of ChatModel {model.name}") from exc
        changed = {k: v for k, v in applied.items() if v is not Applied.UNCHANGED}
        if changed:
            logger.info("ChatModel %s/%s: %s", model.metadata.namespace, model.name, changed)
        self._status(patch, body, *self._chat_model_status(model, deployment, generation))
        return applied

    def _chat_model_status(
        self, model: ChatModel, deployment: dict[str, Any] | None, generation: int | None
    ) -> tuple[Phase, list[Any], dict[str, Any]]:
        autoscaling = model.spec.autoscaling
        desired = autoscaling.min_replicas if autoscaling else model.spec.replicas
        phase, conditions, counts = st.chat_model_conditions(deployment, desired, generation)
        extra = {
            **counts,
            "observedGeneration": generation,
            "endpoint": grpc_endpoint(model),
            "httpEndpoint": http_endpoint(model),
            "selector": selector(model),
            "specHash": spec_hash(model),
        }
        return phase, conditions, extra

    def _status(
        self,
        patch: kopf.Patch,
        body: kopf.Body,
        phase: Phase,
        conditions: list[Any],
        extra: dict[str, Any],
    ) -> None:
        current = body.get("status", {}).get("conditions") or []
        patch.status["phase"] = str(phase)
        patch.status["conditions"] = st.merge_conditions(current, conditions)
        for key, value in extra.items():
            if value is not None:
                patch.status[key] = value

    async def refresh(self, body: dict[str, Any], *, reapply: bool) -> None:
        """Outside kopf's handlers (child events, the resync loop): re-apply the children or just
        recompute the status, and write the status if it changed."""
        if body.get("metadata", {}).get("deletionTimestamp"):
            return  # the owner is going: the garbage collector takes the children
        wrapped = kopf.Body(cast(kopf.RawBody, body))
        patch = kopf.Patch()
        try:
            if reapply:
                await self.reconcile_chat_model(wrapped, patch)
            else:
                model, children = self.desired(wrapped)
                deployment = await self.kube.read(children.deployment)
                phase, conditions, extra = self._chat_model_status(
                    model, deployment, _generation(wrapped.metadata)
                )
                # Not observedGeneration: only a reconcile that applied this generation may say so.
                extra.pop("observedGeneration")
                self._status(patch, wrapped, phase, conditions, extra)
        except (kopf.PermanentError, ResourceError, ValidationError):
            return  # the ChatModel's own handler reports an invalid spec
        except kopf.TemporaryError as exc:
            logger.warning("ChatModel %s: %s (the next resync retries)", wrapped.metadata.name, exc)
            return
        status = dict(patch.status)
        current = body.get("status") or {}
        if status and status != {key: current.get(key) for key in status}:
            meta = wrapped.metadata
            await self.kube.patch_status("ChatModel", str(meta.namespace), str(meta.name), status)

    async def child_changed(self, owner_name: str, namespace: str, deleted: bool) -> None:
        """A Deployment's status moved (status follows), or someone deleted a child (recreate)."""
        body = await self.kube.read_custom("ChatModel", namespace, owner_name)
        if body is not None:
            await self.refresh(body, reapply=deleted)

    async def resync(self, concurrency: int = 16) -> int:
        """One drift-correction pass over every ChatModel in scope; how many were visited.

        One loop for all models rather than a kopf timer per model: kopf puts a finalizer on
        every object with a timer, and ChatModels must not need the operator to be deleted.
        """
        bodies = await self.kube.list_custom("ChatModel", self.settings.namespace or None)
        limit = asyncio.Semaphore(concurrency)

        async def one(listed: dict[str, Any]) -> None:
            async with limit:
                try:
                    # Read again: the listing may be older than a spec edit kopf already applied.
                    meta = listed["metadata"]
                    body = await self.kube.read_custom("ChatModel", meta["namespace"], meta["name"])
                    if body is not None:
                        await self.refresh(body, reapply=True)
                except ApiException as exc:
                    logger.warning(
                        "resync of ChatModel %s: HTTP %s", listed["metadata"].get("name"), exc.status
                    )

        await asyncio.gather(*(one(body) for body in bodies))
        return len(bodies)

    async def resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_interval_s)
            try:
                await self.resync()
            except ApiException as exc:
                logger.warning("resync: listing ChatModels failed: HTTP %s", exc.status)

    # -- KnowledgeBase -----------------------------------------------------------------------

    def _stores(self, patch: kopf.Patch | None = None, body: kopf.Body | None = None) -> KnowledgeStores:
        if self.stores is None:
            message = "the operator has no stores: set KUBECHAT_ELASTICSEARCH_URL and KUBECHAT_S3_ENDPOINT"
            if patch is not None and body is not None:
                generation = _generation(body.metadata)
                conditions = [st.condition(st.READY, "False", "StoresNotConfigured", message, generation)]
                self._status(patch, body, Phase.PENDING, conditions, {"observedGeneration": generation})
            raise kopf.TemporaryError(message, delay=60)
        return self.stores

    async def reconcile_knowledge_base(self, body: kopf.Body, patch: kopf.Patch) -> None:
        generation = _generation(body.metadata)
        try:
            kb: KnowledgeBase = _parse(KnowledgeBase, body)
        except (ResourceError, ValidationError) as exc:
            phase, conditions = st.invalid(str(exc), generation)
            self._status(patch, body, phase, conditions, {"observedGeneration": generation})
            raise kopf.PermanentError(f"invalid KnowledgeBase: {exc}") from exc
        base = {"observedGeneration": generation, "alias": kb.index_alias, "objectPrefix": kb.object_prefix}
        try:
            provisioned = await self._stores(patch, body).provision(kb)
        except EmbeddingMismatchError as exc:
            conditions = [
                st.condition(st.READY, "False", "EmbeddingMismatch", str(exc), generation),
                st.condition(st.DEGRADED, "True", "EmbeddingMismatch", str(exc), generation),
            ]
            self._status(patch, body, Phase.FAILED, conditions, base)
            raise kopf.PermanentError(str(exc)) from exc
        except StoreError as exc:
            conditions = [
                st.condition(st.READY, "False", "StoreUnavailable", str(exc), generation),
                st.condition(st.DEGRADED, "True", "StoreUnavailable", str(exc), generation),
            ]
            self._status(patch, body, Phase.DEGRADED, conditions, base)
            raise kopf.TemporaryError(f"knowledge-base stores: {exc}", delay=30) from exc
        conditions = [
            st.condition(
                st.READY, "True", "IndexReady", f"alias {kb.index_alias} → {provisioned.index}", generation
            ),
            st.condition(st.DEGRADED, "False", "AsExpected", "", generation),
        ]
        extra = {
            **base,
            "index": provisioned.index,
            "documentCount": provisioned.document_count,
            "chunkCount": provisioned.chunk_count,
        }
        self._status(patch, body, Phase.READY, conditions, extra)

    async def count_knowledge_base(self, body: kopf.Body, patch: kopf.Patch) -> None:
        """Refresh the counts of a ready knowledge base (its reconcile handles everything else)."""
        if body.get("status", {}).get("phase") != Phase.READY or self.stores is None:
            return
        try:
            kb: KnowledgeBase = _parse(KnowledgeBase, body)
            measured = await self.stores.measure(kb)
        except (ResourceError, ValidationError):
            return
        except StoreError as exc:
            logger.warning("KnowledgeBase %s: counting failed: %s", body.metadata.name, exc)
            return
        patch.status["documentCount"] = measured.document_count
        patch.status["chunkCount"] = measured.chunk_count
        patch.status["index"] = measured.index

    async def delete_knowledge_base(self, body: kopf.Body, patch: kopf.Patch) -> None:
        try:
            kb: KnowledgeBase = _parse(KnowledgeBase, body)
        except (ResourceError, ValidationError):
            return  # never provisioned: nothing outside Kubernetes to remove
        patch.status["phase"] = str(Phase.DELETING)
        if kb.spec.deletion_policy is DeletionPolicy.RETAIN:
            logger.info("KnowledgeBase %s deleted; its index and documents are retained", kb.name)
            return  # nothing to do outside Kubernetes, stores or not
        try:
            await self._stores().remove(kb)
        except StoreError as exc:
            raise kopf.TemporaryError(f"deleting knowledge base {kb.name}: {exc}", delay=30) from exc


def register(operator: Operator, registry: kopf.OperatorRegistry) -> None:
    """Bind the handlers to `operator` in `registry` (one registry per operator instance)."""
    settings = operator.settings

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.posting.level = logging.WARNING

    chat = (GROUP, VERSION, "chatmodels")

    @kopf.on.resume(*chat, registry=registry)
    @kopf.on.create(*chat, registry=registry)
    @kopf.on.update(*chat, registry=registry, field="spec")
    async def chat_model(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await operator.reconcile_chat_model(body, patch)

    for group, version, plural in _CHILD_KINDS:

        @kopf.on.event(
            group, version, plural, id=f"child-{plural}", registry=registry,
            labels={**MANAGED_BY, CHAT_MODEL_LABEL: kopf.PRESENT},
        )  # fmt: skip
        async def child(event: kopf.RawEvent, labels: kopf.Labels, namespace: str | None, **_: Any) -> None:
            if namespace is None:
                return
            deleted = event["type"] == "DELETED"
            if not deleted and event["object"].get("kind") != "Deployment":
                return
            await operator.child_changed(labels[CHAT_MODEL_LABEL], namespace, deleted)

    kbs = (GROUP, VERSION, "knowledgebases")

    @kopf.on.resume(*kbs, registry=registry)
    @kopf.on.create(*kbs, registry=registry)
    @kopf.on.update(*kbs, registry=registry, field="spec")
    async def knowledge_base(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await operator.reconcile_knowledge_base(body, patch)

    @kopf.timer(
        *kbs, registry=registry, interval=settings.count_interval_s, initial_delay=settings.count_interval_s
    )
    async def knowledge_base_counts(body: kopf.Body, patch: kopf.Patch, meta: kopf.Meta, **_: Any) -> None:
        if not meta.get("deletionTimestamp"):
            await operator.count_knowledge_base(body, patch)

    @kopf.on.delete(*kbs, registry=registry)
    async def knowledge_base_deleted(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await operator.delete_knowledge_base(body, patch)
