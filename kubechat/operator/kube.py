"""The few Kubernetes API calls the operator makes, through the official async client.

Children are kept at their desired state with "create, else merge-patch when drifted":
a live object that already contains every field the operator renders is left alone, so
fields the API server or other controllers add (defaults, status, clusterIP) never count as
drift and a resync of an unchanged object costs one GET.
"""

from __future__ import annotations

import base64
import copy
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubechat.core.resources import GROUP, VERSION
from kubechat.operator.crds import PLURALS

MERGE_PATCH = "application/merge-patch+json"
# What the operator applied last, so that a key it stops rendering can be removed.
LAST_APPLIED = "kubechat.io/last-applied"

# The kinds of a ChatModel's children: (apiVersion, kind) -> (API class, method suffix, plural)
_KINDS: dict[tuple[str, str], tuple[type[Any], str, str]] = {
    ("v1", "ConfigMap"): (client.CoreV1Api, "config_map", "configmaps"),
    ("v1", "Service"): (client.CoreV1Api, "service", "services"),
    ("v1", "PersistentVolumeClaim"): (
        client.CoreV1Api,
        "persistent_volume_claim",
        "persistentvolumeclaims",
    ),
    ("batch/v1", "Job"): (client.BatchV1Api, "job", "jobs"),
    ("apps/v1", "Deployment"): (client.AppsV1Api, "deployment", "deployments"),
    ("policy/v1", "PodDisruptionBudget"): (
        client.PolicyV1Api,
        "pod_disruption_budget",
        "poddisruptionbudgets",
    ),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): (
        client.AutoscalingV2Api,
        "horizontal_pod_autoscaler",
        "horizontalpodautoscalers",
    ),
}

# The same kinds as (group, version, plural), the way kopf's handlers name what they watch.
CHILD_RESOURCES = [
    (api_version.rpartition("/")[0], api_version.rpartition("/")[2], plural)
    for (api_version, _), (_, _, plural) in _KINDS.items()
]


class Applied(enum.StrEnum):
    CREATED = "created"
    PATCHED = "patched"
    UNCHANGED = "unchanged"


def contains(live: Any, desired: Any) -> bool:
    """Whether `live` holds every field of `desired` with the same value (lists element-wise)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and contains(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)


def api_failure(exc: ApiException, what: str) -> kopf.TemporaryError | kopf.PermanentError:
    """kopf's retry for conflicts, throttling and server errors; no retry for a refusal
    (403 missing RBAC, 422 an invalid or immutable field): retrying cannot change the answer."""
    message = f"{what}: HTTP {exc.status} {exc.reason}"
    status = exc.status or 0
    if 400 <= status < 500 and status not in (404, 409, 429):
        return kopf.PermanentError(message)
    return kopf.TemporaryError(message, delay=1.0 if status in (409, 429) else 10.0)


def merge_patch(last_applied: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch taking a child to `desired`, as `kubectl apply` computes it.

    A merge patch replaces lists whole but only adds or overwrites map keys, so keys the
    operator applied last time and no longer renders (a nodeSelector entry, the rollingUpdate
    of a strategy, replicas once an HPA owns them) are set to null, which deletes them. Keys
    others added (defaults, clusterIP, a controller's annotations) were never applied by the
    operator and are left alone.
    """
    patch = copy.deepcopy(dict(desired))
    if last_applied:
        _null_removed(last_applied, patch)
    return patch


def _null_removed(last: Mapping[str, Any], patch: dict[str, Any]) -> None:
    for key, value in last.items():
        if key not in patch:
            patch[key] = None
        elif isinstance(value, Mapping) and isinstance(patch[key], dict):
            _null_removed(value, patch[key])


def _with_last_applied(manifest: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(manifest)
    annotations = body["metadata"].setdefault("annotations", {})
    annotations.pop(LAST_APPLIED, None)
    annotations[LAST_APPLIED] = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return body


def _last_applied(live: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    try:
        found = json.loads(raw) if raw else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


@dataclass
class Kube:
    """Typed access to the built-in kinds the operator owns, and to its custom resources."""

    api: client.ApiClient

    def _methods(self, manifest: Mapping[str, Any]) -> tuple[Any, str]:
        key = (manifest["apiVersion"], manifest["kind"])
        if key not in _KINDS:
            raise ValueError(f"the operator does not manage {key[1]} ({key[0]})")
        api_class, suffix, _ = _KINDS[key]
        return api_class(self.api), suffix

    def _plain(self, obj: Any) -> dict[str, Any]:
        plain: dict[str, Any] = self.api.sanitize_for_serialization(obj)
        return plain

    async def read(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        api, suffix = self._methods(manifest)
        meta = manifest["metadata"]
        try:
            live = await getattr(api, f"read_namespaced_{suffix}")(meta["name"], meta["namespace"])
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._plain(live)

    async def apply(self, manifest: dict[str, Any]) -> tuple[Applied, dict[str, Any] | None]:
        """Create the object, or merge-patch it where it differs from `manifest`.

        Returns what was done and the object as the API server answered the write (or as read,
        when nothing changed): the status that the operator computes from it describes the
        object after this write, not before.
        """
        api, suffix = self._methods(manifest)
        meta = manifest["metadata"]
        body = _with_last_applied(manifest)
        live = await self.read(manifest)
        if live is None:
            try:
                created = await getattr(api, f"create_namespaced_{suffix}")(meta["namespace"], body)
                return Applied.CREATED, self._plain(created)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                live = await self.read(manifest)  # created meanwhile (a concurrent event)
        if live is not None and contains(live, body):
            return Applied.UNCHANGED, live
        patch = merge_patch(_last_applied(live) if live is not None else None, body)
        patched = await getattr(api, f"patch_namespaced_{suffix}")(
            meta["name"], meta["namespace"], patch, _content_type=MERGE_PATCH
        )
        return Applied.PATCHED, self._plain(patched)

    async def delete(self, manifest: Mapping[str, Any]) -> bool:
        api, suffix = self._methods(manifest)
        meta = manifest["metadata"]
        try:
            await getattr(api, f"delete_namespaced_{suffix}")(meta["name"], meta["namespace"])
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded; None if the Secret or the key is not there."""
        try:
            secret = await client.CoreV1Api(self.api).read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        value = (secret.data or {}).get(key)
        return None if value is None else base64.b64decode(value).decode("utf-8").strip()

    async def read_custom(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        api = client.CustomObjectsApi(self.api)
        try:
            found: dict[str, Any] = await api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    async def list_custom(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        api = client.CustomObjectsApi(self.api)
        if namespace:
            found = await api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind])
        else:
            found = await api.list_cluster_custom_object(GROUP, VERSION, PLURALS[kind])
        return list(found.get("items") or [])

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        # The stubs leave out the generated client's `_content_type` keyword.
        patch: Any = client.CustomObjectsApi(self.api).patch_namespaced_custom_object_status
        await patch(
            GROUP, VERSION, namespace, PLURALS[kind], name, {"status": status}, _content_type=MERGE_PATCH
        )
