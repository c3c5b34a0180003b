"""ChatModel reconciliation against kmock: children, status, updates, drift, deletion, bad specs."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from kubernetes_asyncio import client

from kubechat.operator.kube import Kube
from kubechat.operator.metrics import REGISTRY
from tests.operator.conftest import NAMESPACE, Cluster
from tests.polling import eventually

NAME = "llama"
TRITON = f"{NAME}-triton"
REPOSITORY = f"{NAME}-model-repository"

DOCUMENT: dict[str, Any] = {
    "apiVersion": "kubechat.io/v1alpha1",
    "kind": "ChatModel",
    "metadata": {"name": NAME, "namespace": NAMESPACE},
    "spec": {
        "displayName": "Llama 3.1 8B Instruct",
        # Weights on a claim: no weight cache to wait for (tests/operator/test_weight_cache.py).
        "source": {"pvc": {"claimName": "model-store", "path": "llama-3.1-8b-instruct"}},
        "engine": {"backend": "tensorrtllm", "dtype": "bfloat16", "maxBatchSize": 64},
        "resources": {"gpus": 1, "gpuType": "NVIDIA-H100-80GB-HBM3"},
        "replicas": 1,
        "capabilities": ["chat"],
    },
}


def chat_model(**spec: Any) -> dict[str, Any]:
    document = copy.deepcopy(DOCUMENT)
    document["spec"].update(spec)
    return document


_API_VERSIONS = {
    "ConfigMap": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
}


async def read(cluster: Cluster, kind: str, name: str) -> dict[str, Any] | None:
    stub = {
        "apiVersion": _API_VERSIONS[kind],
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE},
    }
    return await Kube(cluster.api).read(stub)


async def exists(cluster: Cluster, kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = await eventually(lambda: read(cluster, kind, name), what=f"{kind} {name}")
    return found


async def set_deployment_status(cluster: Cluster, status: dict[str, Any]) -> None:
    """What the Deployment controller would write (kmock runs no controllers)."""
    patch: Any = client.AppsV1Api(cluster.api).patch_namespaced_deployment_status  # stubs lack _content_type
    await patch(TRITON, NAMESPACE, {"status": status}, _content_type="application/merge-patch+json")


async def condition(cluster: Cluster, type_: str, status: str, reason: str | None = None) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found = await cluster.condition("ChatModel", NAME, type_)
        if found and found["status"] == status and (reason is None or found["reason"] == reason):
            return found
        return None

    found: dict[str, Any] = await eventually(check, what=f"{type_}={status} {reason or ''}")
    return found


async def test_a_chat_model_gets_its_children_owned_and_a_pending_status(cluster: Cluster) -> None:
    created = await cluster.create(chat_model())
    uid = created["metadata"]["uid"]
    for kind, name in [("ConfigMap", REPOSITORY), ("Deployment", TRITON), ("Service", TRITON)]:
        child = await exists(cluster, kind, name)
        owners = child["metadata"]["ownerReferences"]
        assert owners == [
            {
                "apiVersion": "kubechat.io/v1alpha1", "kind": "ChatModel", "name": NAME, "uid": uid,
                "controller": True, "blockOwnerDeletion": True,
            }
        ]  # fmt: skip
        assert child["metadata"]["labels"]["kubechat.io/chat-model"] == NAME
    # One replica: no disruption budget; no autoscaling: no HPA.
    assert await read(cluster, "PodDisruptionBudget", TRITON) is None
    assert await read(cluster, "HorizontalPodAutoscaler", TRITON) is None

    ready = await condition(cluster, "Ready", "False", "NoReplicaReady")
    assert ready["observedGeneration"] == 1
    status = await cluster.status("ChatModel", NAME)
    assert status["phase"] == "Progressing"
    assert status["endpoint"] == f"{TRITON}.{NAMESPACE}.svc:8001"
    assert status["observedGeneration"] == 1
    assert status["specHash"]
    assert "kubechat.io/chat-model=llama" in status["selector"]


async def test_status_follows_the_deployment(cluster: Cluster) -> None:
    await cluster.create(chat_model())
    await exists(cluster, "Deployment", TRITON)
    await condition(cluster, "Ready", "False")
    await set_deployment_status(
        cluster, {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}
    )
    await condition(cluster, "Ready", "True", "ReplicasReady")
    await condition(cluster, "Progressing", "False", "RolloutComplete")
    status = await cluster.status("ChatModel", NAME)
    assert status["phase"] == "Ready"
    assert status["readyReplicas"] == 1
    # The operator's gauges follow: the phase, and readiness.
    labels = {"kind": "ChatModel", "namespace": NAMESPACE, "name": NAME}
    assert REGISTRY.get_sample_value("kubechat_operator_resource_ready", labels) == 1.0
    assert REGISTRY.get_sample_value("kubechat_operator_resource_phase", {**labels, "phase": "Ready"}) == 1.0
    assert (
        REGISTRY.get_sample_value("kubechat_operator_resource_phase", {**labels, "phase": "Pending"}) == 0.0
    )

    # A crash-looping replica: the Deployment reports a failure, the ChatModel says Degraded.
    await set_deployment_status(
        cluster,
        {
            "readyReplicas": 0,
            "conditions": [
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "x"}
            ],
        },
    )
    await condition(cluster, "Degraded", "True", "ReplicaFailure")
    await condition(cluster, "Ready", "False", "NoReplicaReady")
    assert REGISTRY.get_sample_value("kubechat_operator_resource_ready", labels) == 0.0
    assert (
        REGISTRY.get_sample_value("kubechat_operator_reconcile_duration_seconds_count", {"kind": "ChatModel"})
        or 0
    ) > 0


async def test_a_spec_change_patches_the_children(cluster: Cluster) -> None:
    await cluster.create(chat_model())
    before = await exists(cluster, "Deployment", TRITON)
    await cluster.patch_spec("ChatModel", NAME, {"replicas": 3}, generation=2)

    async def scaled() -> dict[str, Any] | None:
        found = await read(cluster, "Deployment", TRITON)
        return found if found and found["spec"].get("replicas") == 3 else None

    after = await eventually(scaled, what="3 replicas")
    assert (
        after["metadata"]["labels"]["kubechat.io/spec-hash"]
        != before["metadata"]["labels"]["kubechat.io/spec-hash"]
    )
    pdb = await exists(cluster, "PodDisruptionBudget", TRITON)
    assert pdb["spec"]["maxUnavailable"] == 1

    async def observed() -> bool:
        return (await cluster.status("ChatModel", NAME)).get("observedGeneration") == 2

    await eventually(observed, what="observedGeneration 2")


async def test_autoscaling_adds_and_removes_an_hpa(cluster: Cluster) -> None:
    await cluster.create(chat_model(autoscaling={"minReplicas": 1, "maxReplicas": 4}))
    hpa = await exists(cluster, "HorizontalPodAutoscaler", TRITON)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["scaleTargetRef"]["name"] == TRITON
    await exists(cluster, "PodDisruptionBudget", TRITON)

    await cluster.patch_spec("ChatModel", NAME, {"autoscaling": None}, generation=2)

    async def removed() -> bool:
        return await read(cluster, "HorizontalPodAutoscaler", TRITON) is None

    await eventually(removed, what="the HPA deleted")


async def test_a_child_deleted_by_hand_is_recreated(cluster: Cluster) -> None:
    await cluster.create(chat_model())
    await exists(cluster, "Service", TRITON)
    await client.CoreV1Api(cluster.api).delete_namespaced_service(TRITON, NAMESPACE)
    await exists(cluster, "Service", TRITON)


async def test_drift_is_corrected_on_resync(cluster: Cluster) -> None:
    await cluster.create(chat_model())
    deployment = await exists(cluster, "Deployment", TRITON)
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    tampered = copy.deepcopy(deployment["spec"]["template"]["spec"]["containers"])
    tampered[0]["image"] = "example.com/not-triton:latest"
    patch: Any = client.AppsV1Api(cluster.api).patch_namespaced_deployment  # stubs lack _content_type
    body = {"spec": {"template": {"spec": {"containers": tampered}}}}
    await patch(TRITON, NAMESPACE, body, _content_type="application/merge-patch+json")

    async def restored() -> bool:
        found = await read(cluster, "Deployment", TRITON)
        return found is not None and found["spec"]["template"]["spec"]["containers"][0]["image"] == image

    await eventually(restored, what="the image restored")


async def test_an_invalid_spec_gets_a_condition_and_no_children(cluster: Cluster) -> None:
    # TensorRT-LLM without a GPU: the CRD's CEL rule refuses it at admission; the operator
    # must still refuse to act if it gets through (an older CRD, a disabled webhook).
    await cluster.create(chat_model(resources={"gpus": 0}))
    found = await condition(cluster, "Ready", "False", "InvalidSpec")
    assert "gpus" in found["message"]
    assert (await cluster.status("ChatModel", NAME))["phase"] == "Failed"
    assert await read(cluster, "Deployment", TRITON) is None


async def test_deleting_the_model_leaves_cleanup_to_owner_references(cluster: Cluster) -> None:
    await cluster.create(chat_model())
    await exists(cluster, "Deployment", TRITON)
    found = await cluster.get("ChatModel", NAME)
    assert found is not None
    assert not found["metadata"].get("finalizers"), "a ChatModel must not wait for the operator to go"
    await cluster.delete("ChatModel", NAME)
    assert await cluster.get("ChatModel", NAME) is None
    # What the garbage collector does (kmock has none), once the owner is gone and the events
    # queued before the deletion have been handled; the operator must not bring them back.
    await asyncio.sleep(1.0)
    await client.AppsV1Api(cluster.api).delete_namespaced_deployment(TRITON, NAMESPACE)
    await client.CoreV1Api(cluster.api).delete_namespaced_service(TRITON, NAMESPACE)
    await asyncio.sleep(1.5)  # longer than the resync interval
    assert await read(cluster, "Deployment", TRITON) is None
    assert await read(cluster, "Service", TRITON) is None
