"""ChatModel → its Triton children (ConfigMap, Deployment, Service, PDB, HPA) and its status.

Everything is level-triggered: create, update, resume, a child's deletion and a periodic
resync all run one idempotent reconcile that renders the desired children
(`kubechat.operator.manifests`) and applies what differs (`kubechat.operator.kube`). Children
carry owner references, so Kubernetes' garbage collector removes them with their ChatModel;
ChatModels get no finalizer, and uninstalling the operator never blocks their deletion.
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

from kubechat.core.resources import CachePhase, CacheStatus, ChatModel, Condition, Phase, ResourceError
from kubechat.operator import status as st
from kubechat.operator.bodies import generation, parse_body, write_status
from kubechat.operator.kube import Applied, Kube, api_failure
from kubechat.operator.manifests import (
    CACHE_BYTES_ANNOTATION,
    CACHE_ERROR_ANNOTATION,
    CACHE_TOTAL_ANNOTATION,
    Children,
    grpc_endpoint,
    http_endpoint,
    render_children,
    selector,
    spec_hash,
)
from kubechat.operator.metrics import DRIFT_CORRECTED
from kubechat.operator.settings import OperatorSettings
from kubechat.remote.openai import OpenAIEndpoint, Probe
from kubechat.remote.router import remote_model
from kubechat.triton.repository import RenderError

logger = logging.getLogger(__name__)

_RENDER_CACHE_SIZE = 4096


def _absent(children: Children) -> list[dict[str, Any]]:
    """Stand-ins naming the optional children `children` does not have (to delete them)."""
    meta = {k: children.deployment["metadata"][k] for k in ("name", "namespace")}
    absent = []
    if children.pdb is None:
        absent.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta})
    if children.hpa is None:
        absent.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta})
    return absent


def _cache(job: dict[str, Any] | None) -> CacheStatus:
    return st.cache_status(job, CACHE_BYTES_ANNOTATION, CACHE_TOTAL_ANNOTATION)


class ChatModelReconciler:
    """Keeps every ChatModel's children at their rendered state and its status current."""

    def __init__(self, settings: OperatorSettings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self._rendered: dict[tuple[str, str, str], Children] = {}
        self._locks: collections.defaultdict[tuple[str, str], asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )

    def desired(self, body: kopf.Body) -> tuple[ChatModel, Children]:
        model: ChatModel = parse_body(ChatModel, body)
        # Rendering parses every config.pbtxt back (tens of ms under load); resyncs
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

    async def reconcile(self, body: kopf.Body, patch: kopf.Patch) -> dict[str, Applied]:
        # kopf's handler, a child's event and the resync loop may reconcile one model at once.
        async with self._locks[(str(body.metadata.namespace), str(body.metadata.name))]:
            return await self._reconcile(body, patch)

    async def _reconcile(self, body: kopf.Body, patch: kopf.Patch) -> dict[str, Applied]:
        observed_generation = generation(body.metadata)
        try:
            if parse_body(ChatModel, body).spec.engine.backend.is_remote:
                return await self._reconcile_remote(parse_body(ChatModel, body), body, patch)
            model, children = self.desired(body)
        except (ResourceError, ValidationError, RenderError) as exc:
            phase, conditions = st.invalid(str(exc), observed_generation)
            write_status(patch, body, phase, conditions, {"observedGeneration": observed_generation})
            raise kopf.PermanentError(f"invalid ChatModel: {exc}") from exc
        applied: dict[str, Applied] = {}
        deployment: dict[str, Any] | None = None
        job: dict[str, Any] | None = None
        try:
            for manifest in children.all():
                if manifest is children.deployment and children.cache_job is not None:
                    cache = _cache(job)
                    if cache.phase is not CachePhase.READY:
                        # No new pods until the weights are in the cache: they would fail to load.
                        # Pods of an earlier cache (a changed source) keep serving meanwhile.
                        failure = st.job_failure_message(job, CACHE_ERROR_ANNOTATION)
                        serving = await self.kube.read(children.deployment)
                        phase, conditions, extra = self._status(model, serving, observed_generation)
                        cached, cache_conditions = st.cache_conditions(cache, failure, observed_generation)
                        if serving is None:
                            phase, conditions = cached, cache_conditions
                        else:  # serving, while the next weights download
                            conditions = [c for c in conditions if c.type != st.PROGRESSING]
                            conditions += [c for c in cache_conditions if c.type == st.PROGRESSING]
                            conditions += [c for c in cache_conditions if c.type == st.WEIGHTS_CACHED]
                        extra["cache"] = cache.model_dump(mode="json", by_alias=True)
                        write_status(patch, body, phase, conditions, extra)
                        return applied
                outcome, live = await self.kube.apply(manifest)
                applied[f"{manifest['kind']}/{manifest['metadata']['name']}"] = outcome
                if manifest is children.deployment:
                    deployment = live
                if manifest is children.cache_job:
                    job = live
            # Optional children a changed spec no longer asks for (autoscaling off, one replica);
            # only on spec changes, so that a resync of an unchanged model writes nothing.
            observed = (body.get("status") or {}).get("observedGeneration")
            if observed is None or observed != observed_generation:
                for absent in _absent(children):
                    await self.kube.delete(absent)
        except ApiException as exc:
            raise api_failure(exc, f"applying the children of ChatModel {model.name}") from exc
        changed = {k: v for k, v in applied.items() if v is not Applied.UNCHANGED}
        if changed:
            logger.info("ChatModel %s/%s: %s", model.metadata.namespace, model.name, changed)
        phase, conditions, extra = self._status(model, deployment, observed_generation)
        if children.cache_job is not None:
            conditions.append(st.condition(st.WEIGHTS_CACHED, "True", "Downloaded", "", observed_generation))
            extra["cache"] = _cache(job).model_dump(mode="json", by_alias=True)
        write_status(patch, body, phase, conditions, extra)
        return applied

    async def _reconcile_remote(
        self, model: ChatModel, body: kopf.Body, patch: kopf.Patch
    ) -> dict[str, Applied]:
        """A model an OpenAI-compatible endpoint serves: no children (no pods, no Service), and a
        Ready condition from a probe of the endpoint (GET /models lists the model), repeated at
        every resync."""
        observed_generation = generation(body.metadata)
        probe = await self.probe(model)
        phase, conditions = st.remote_model_conditions(
            probe.ready, probe.reason, probe.message, observed_generation
        )
        endpoint = model.spec.endpoint
        extra = {
            "observedGeneration": observed_generation,
            "endpoint": endpoint.url if endpoint else "",
            "replicas": 0,
            "readyReplicas": 0,
            "specHash": spec_hash(model),
        }
        write_status(patch, body, phase, conditions, extra)
        return {}

    async def probe(self, model: ChatModel) -> Probe:
        endpoint = model.spec.endpoint
        assert endpoint is not None, "backend openai requires spec.endpoint"
        key = None
        ref = endpoint.api_key_secret_ref
        if ref is not None:
            try:
                key = await self.kube.read_secret_key(model.metadata.namespace, ref.name, ref.key)
            except ApiException as exc:
                raise api_failure(exc, f"reading the API key of ChatModel {model.name}") from exc
            if key is None:
                return Probe(False, "SecretNotFound", f"Secret {ref.name} has no key {ref.key}")
        remote = remote_model(model, key)
        assert remote is not None
        client = OpenAIEndpoint(model.name, remote)
        try:
            return await client.probe()
        finally:
            await client.close()

    def _status(
        self, model: ChatModel, deployment: dict[str, Any] | None, observed_generation: int | None
    ) -> tuple[Phase, list[Condition], dict[str, Any]]:
        autoscaling = model.spec.autoscaling
        desired = autoscaling.min_replicas if autoscaling else model.spec.replicas
        phase, conditions, counts = st.chat_model_conditions(deployment, desired, observed_generation)
        extra = {
            **counts,
            "observedGeneration": observed_generation,
            "endpoint": grpc_endpoint(model),
            "httpEndpoint": http_endpoint(model),
            "selector": selector(model),
            "specHash": spec_hash(model),
        }
        return phase, conditions, extra

    async def refresh(self, body: dict[str, Any], *, reapply: bool) -> None:
        """Outside kopf's handlers (child events, the resync loop): re-apply the children or just
        recompute the status, and write the status if it changed."""
        if body.get("metadata", {}).get("deletionTimestamp"):
            return  # the owner is going: the garbage collector takes the children
        wrapped = kopf.Body(cast(kopf.RawBody, body))
        patch = kopf.Patch()
        try:
            model = parse_body(ChatModel, wrapped)
            # A GPU model with a weight cache is reconciled whole: the cache Job's progress decides
            # whether its Deployment exists yet.
            cached = (
                not model.spec.engine.backend.is_remote and self.desired(wrapped)[1].cache_job is not None
            )
            if reapply or cached or model.spec.engine.backend.is_remote:
                applied = await self.reconcile(wrapped, patch)
                # Outside kopf's spec handler nothing asked for a change: what had to be created
                # or patched had drifted (deleted or edited by hand).
                for child, outcome in applied.items():
                    if outcome is not Applied.UNCHANGED:
                        action = "recreated" if outcome is Applied.CREATED else "patched"
                        DRIFT_CORRECTED.labels(child.partition("/")[0], action).inc()
            else:
                model, children = self.desired(wrapped)
                deployment = await self.kube.read(children.deployment)
                phase, conditions, extra = self._status(model, deployment, generation(wrapped.metadata))
                # Not observedGeneration: only a reconcile that applied this generation may say so.
                extra.pop("observedGeneration")
                write_status(patch, wrapped, phase, conditions, extra)
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
