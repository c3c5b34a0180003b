"""The operator's metrics: reconcile timing and errors, drift repairs, phases as gauges.

The reconciler runs against a Kube stand-in that answers each apply with a chosen outcome, so
what is counted does not depend on which of kopf's handler, a child event or the resync loop
got to a change first (against kmock, kopf's replays race the resync).
"""

from __future__ import annotations

import copy
from typing import Any, cast

import kopf
import pytest

from kubechat.operator.chat_models import ChatModelReconciler
from kubechat.operator.kube import Applied, Kube
from kubechat.operator.metrics import REGISTRY, RESOURCE_STATES, observe_reconcile
from kubechat.operator.settings import OperatorSettings
from tests.operator.test_chat_model_operator import DOCUMENT

NAMESPACE = "team-a"


class OutcomeKube:
    """Answers applies with `outcomes` by kind (UNCHANGED otherwise) and remembers nothing."""

    def __init__(self, outcomes: dict[str, Applied]) -> None:
        self.outcomes = outcomes

    async def apply(self, manifest: dict[str, Any]) -> tuple[Applied, dict[str, Any]]:
        live = copy.deepcopy(manifest)
        if manifest["kind"] == "Deployment":
            live["status"] = {
                "observedGeneration": 1,
                "replicas": 1,
                "updatedReplicas": 1,
                "readyReplicas": 1,
            }
        return self.outcomes.get(manifest["kind"], Applied.UNCHANGED), live

    async def delete(self, manifest: dict[str, Any]) -> None:
        pass

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        pass


def body() -> dict[str, Any]:
    document = copy.deepcopy(DOCUMENT)
    document["metadata"].update(namespace=NAMESPACE, uid="u-1", generation=1)
    document["status"] = {"observedGeneration": 1}
    return document


def drift(kind: str, action: str) -> float:
    labels = {"kind": kind, "action": action}
    return REGISTRY.get_sample_value("kubechat_operator_children_drift_corrected_total", labels) or 0.0


async def test_repairs_outside_the_spec_handler_are_counted_as_drift() -> None:
    kube = OutcomeKube({"Service": Applied.CREATED, "Deployment": Applied.PATCHED})
    reconciler = ChatModelReconciler(OperatorSettings(), cast(Kube, kube))
    recreated, patched = drift("Service", "recreated"), drift("Deployment", "patched")
    await reconciler.refresh(body(), reapply=True)
    assert drift("Service", "recreated") == recreated + 1
    assert drift("Deployment", "patched") == patched + 1
    # The status it computed is what the gauges say: one replica ready.
    labels = {"kind": "ChatModel", "namespace": NAMESPACE, "name": DOCUMENT["metadata"]["name"]}
    assert REGISTRY.get_sample_value("kubechat_operator_resource_ready", labels) == 1.0
    assert REGISTRY.get_sample_value("kubechat_operator_resource_phase", {**labels, "phase": "Ready"}) == 1.0
    RESOURCE_STATES.forget("ChatModel", NAMESPACE, DOCUMENT["metadata"]["name"])
    assert REGISTRY.get_sample_value("kubechat_operator_resource_ready", labels) is None


async def test_the_spec_handler_counts_no_drift() -> None:
    kube = OutcomeKube({"Service": Applied.CREATED, "Deployment": Applied.PATCHED})
    reconciler = ChatModelReconciler(OperatorSettings(), cast(Kube, kube))
    before = drift("Service", "recreated")
    await reconciler.reconcile(kopf.Body(cast(kopf.RawBody, body())), kopf.Patch())
    assert drift("Service", "recreated") == before


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (kopf.PermanentError("invalid"), "permanent"),
        (kopf.TemporaryError("wait", delay=1), "temporary"),
        (RuntimeError("bug"), "unexpected"),
    ],
)
async def test_failed_reconciles_are_counted_by_kind_of_error(error: Exception, label: str) -> None:
    labels = {"kind": "KnowledgeBase", "error": label}
    before = REGISTRY.get_sample_value("kubechat_operator_reconcile_errors_total", labels) or 0.0
    runs = REGISTRY.get_sample_value(
        "kubechat_operator_reconcile_duration_seconds_count", {"kind": "KnowledgeBase"}
    )

    async def failing() -> None:
        raise error

    with pytest.raises(type(error)):
        await observe_reconcile("KnowledgeBase", failing())
    assert REGISTRY.get_sample_value("kubechat_operator_reconcile_errors_total", labels) == before + 1
    after = REGISTRY.get_sample_value(
        "kubechat_operator_reconcile_duration_seconds_count", {"kind": "KnowledgeBase"}
    )
    assert after == (runs or 0.0) + 1
