"""kmock's Kubernetes emulator set up as a cluster with kubechat's CRDs installed."""

from __future__ import annotations

from typing import Any

from kubechat.core.resources import GROUP, VERSION

_ALL_VERBS = {"list", "watch", "get", "create", "update", "patch", "delete"}

# (group/version/plural, kind, namespaced, subresources)
_RESOURCES = [
    (f"{GROUP}/{VERSION}/chatmodels", "ChatModel", True, {"status", "scale"}),
    (f"{GROUP}/{VERSION}/knowledgebases", "KnowledgeBase", True, {"status"}),
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False, set()),
    ("v1/namespaces", "Namespace", False, set()),
    ("v1/events", "Event", True, set()),
    ("v1/configmaps", "ConfigMap", True, set()),
    ("v1/services", "Service", True, set()),
    ("v1/secrets", "Secret", True, set()),
    ("apps/v1/deployments", "Deployment", True, {"status", "scale"}),
    ("v1/persistentvolumeclaims", "PersistentVolumeClaim", True, {"status"}),
    ("batch/v1/jobs", "Job", True, {"status"}),
    ("policy/v1/poddisruptionbudgets", "PodDisruptionBudget", True, {"status"}),
    ("autoscaling/v2/horizontalpodautoscalers", "HorizontalPodAutoscaler", True, {"status"}),
]


def install_cluster(kmock: Any) -> str:
    """Register kubechat's resources and the built-ins it touches; return the API server URL."""
    for key, kind, namespaced, subresources in _RESOURCES:
        kmock.resources[key] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, verbs=set(_ALL_VERBS), subresources=subresources
        )
    return str(kmock.url).rstrip("/")
