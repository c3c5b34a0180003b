"""The operator's pure parts: status from a Deployment, condition bookkeeping, drift detection."""

from __future__ import annotations

from typing import Any

import pytest

from kubechat.core.resources import Phase
from kubechat.operator.kube import contains, merge_patch
from kubechat.operator.status import chat_model_conditions, condition, merge_conditions


def deployment(wanted: int = 2, generation: int = 3, **status: Any) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {"replicas": wanted}, "status": status}


def by_type(conditions: list[Any]) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in conditions}


def test_no_deployment_yet_is_pending() -> None:
    phase, conditions, counts = chat_model_conditions(None, 1, 1)
    assert phase is Phase.PENDING
    assert by_type(conditions)["Ready"] == ("False", "DeploymentMissing")
    assert counts == {"replicas": 0, "readyReplicas": 0}


@pytest.mark.parametrize(
    ("status", "phase", "ready", "progressing", "degraded"),
    [
        # Rolling out, nothing serves yet.
        ({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2}, Phase.PROGRESSING,
         ("False", "NoReplicaReady"), ("True", "RollingOut"), ("False", "AsExpected")),
        # All replicas ready on the current generation.
        ({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}, Phase.READY,
         ("True", "ReplicasReady"), ("False", "RolloutComplete"), ("False", "AsExpected")),
        # Serving while the controller has not seen the newest generation yet.
        ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2},
         Phase.PROGRESSING, ("True", "ReplicasReady"), ("True", "RollingOut"), ("False", "AsExpected")),
        # The rollout gave up.
        ({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 1,
          "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]},
         Phase.DEGRADED, ("True", "ReplicasReady"), ("False", "ProgressDeadlineExceeded"),
         ("True", "ProgressDeadlineExceeded")),
        # The rollout finished, then a replica stopped serving (a crash loop).
        ({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1,
          "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]},
         Phase.DEGRADED, ("True", "ReplicasReady"), ("False", "RolloutComplete"),
         ("True", "ReplicasUnavailable")),
        # A deadline the previous generation missed says nothing of the new rollout.
        ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 0, "readyReplicas": 2,
          "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]},
         Phase.PROGRESSING, ("True", "ReplicasReady"), ("True", "RollingOut"), ("False", "AsExpected")),
        # Pods cannot be created at all.
        ({"observedGeneration": 3,
          "conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "x"}]},
         Phase.FAILED, ("False", "NoReplicaReady"), ("True", "RollingOut"), ("True", "ReplicaFailure")),
    ],
)  # fmt: skip
def test_conditions_follow_the_deployment(
    status: dict[str, Any],
    phase: Phase,
    ready: tuple[str, str],
    progressing: tuple[str, str],
    degraded: tuple[str, str],
) -> None:
    got_phase, conditions, _ = chat_model_conditions(deployment(**status), 2, 7)
    assert got_phase is phase
    assert by_type(conditions) == {"Ready": ready, "Progressing": progressing, "Degraded": degraded}


def test_scaled_to_zero_is_not_ready_and_not_an_error() -> None:
    phase, conditions, _ = chat_model_conditions(deployment(wanted=0, observedGeneration=3), 0, 1)
    assert by_type(conditions)["Ready"] == ("False", "ScaledToZero")
    assert by_type(conditions)["Degraded"][0] == "False"
    assert phase is Phase.PENDING


def test_transition_time_moves_only_when_the_status_does() -> None:
    first = merge_conditions([], [condition("Ready", "False", "NoReplicaReady")], at="t1")
    same = merge_conditions(first, [condition("Ready", "False", "StillWaiting", "msg")], at="t2")
    flipped = merge_conditions(same, [condition("Ready", "True", "ReplicasReady")], at="t3")
    assert first[0]["lastTransitionTime"] == "t1"
    assert same[0]["lastTransitionTime"] == "t1"
    assert same[0]["reason"] == "StillWaiting"
    assert flipped[0]["lastTransitionTime"] == "t3"


def test_conditions_of_other_writers_are_kept() -> None:
    merged = merge_conditions(
        [{"type": "Custom", "status": "True"}], [condition("Ready", "True", "R")], at="t"
    )
    assert [c["type"] for c in merged] == ["Custom", "Ready"]


def test_drift_means_a_desired_field_differs_not_an_added_one() -> None:
    desired = {"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}}
    live: dict[str, Any] = {
        "metadata": {"resourceVersion": "7"},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate"},
            "template": {
                "spec": {"containers": [{"name": "a", "image": "x", "terminationMessagePath": "/d"}]}
            },
        },
    }
    assert contains(live, desired)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "y"
    assert not contains(live, desired)
    live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar"})
    assert not contains(live, desired)
    assert not contains({"spec": {}}, desired)


def test_keys_the_operator_stops_rendering_are_removed_and_others_kept() -> None:
    last = {
        "spec": {
            "replicas": 2,
            "template": {"spec": {"nodeSelector": {"nvidia.com/gpu.product": "H100", "pool": "gpu"}}},
            "strategy": {"rollingUpdate": {"maxSurge": 0}},
        }
    }
    desired = {"spec": {"template": {"spec": {"nodeSelector": {"pool": "gpu"}}}, "strategy": {}}}
    assert merge_patch(last, desired) == {
        "spec": {
            "replicas": None,
            "template": {"spec": {"nodeSelector": {"pool": "gpu", "nvidia.com/gpu.product": None}}},
            "strategy": {"rollingUpdate": None},
        }
    }
    # Nothing applied before (or an unreadable record): a plain merge patch, nothing removed.
    assert merge_patch(None, desired) == desired
