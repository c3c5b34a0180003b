"""Status of kubechat's custom resources: phase, standard conditions, observed generation.

Pure functions of what the operator sees, so every rule here is unit-tested without a cluster.
Conditions follow metav1.Condition: `lastTransitionTime` changes only when `status` does.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from kubechat.core.resources import CachePhase, CacheStatus, Condition, Phase

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
WEIGHTS_CACHED = "WeightsCached"

ConditionStatus = Literal["True", "False", "Unknown"]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def condition(
    type_: str, status: ConditionStatus, reason: str, message: str = "", generation: int | None = None
) -> Condition:
    return Condition(
        type=type_, status=status, reason=reason, message=message, observed_generation=generation
    )


def merge_conditions(
    current: Sequence[Mapping[str, Any]], updates: Sequence[Condition], at: str | None = None
) -> list[dict[str, Any]]:
    """The condition list with `updates` applied, keeping transition times of unchanged statuses."""
    stamp = at or now()
    merged = {c["type"]: dict(c) for c in current if "type" in c}
    for update in updates:
        previous = merged.get(update.type)
        fresh = update.model_dump(by_alias=True, exclude_none=True)
        if previous is not None and previous.get("status") == update.status:
            fresh["lastTransitionTime"] = previous.get("lastTransitionTime", stamp)
        else:
            fresh["lastTransitionTime"] = stamp
        merged[update.type] = fresh
    return sorted(merged.values(), key=lambda c: str(c["type"]))


def invalid(message: str, generation: int | None) -> tuple[Phase, list[Condition]]:
    """A spec the schema let through but the operator cannot act on."""
    return Phase.FAILED, [
        condition(READY, "False", "InvalidSpec", message, generation),
        condition(PROGRESSING, "False", "InvalidSpec", message, generation),
        condition(DEGRADED, "True", "InvalidSpec", message, generation),
    ]


def chat_model_conditions(
    deployment: Mapping[str, Any] | None, desired: int, generation: int | None
) -> tuple[Phase, list[Condition], dict[str, int]]:
    """Phase and conditions of a ChatModel from its Triton Deployment.

    `desired` is spec.replicas, or the HPA's minimum when autoscaling (the HPA moves the rest).
    Ready means at least one replica serves; Degraded means fewer serve than wanted, or the
    Deployment reports a failure; Progressing means a rollout is under way.
    """
    if deployment is None:
        waiting = "the Triton Deployment does not exist yet"
        return (
            Phase.PENDING,
            [
                condition(READY, "False", "DeploymentMissing", waiting, generation),
                condition(PROGRESSING, "True", "Creating", waiting, generation),
                condition(DEGRADED, "False", "Creating", "", generation),
            ],
            {"replicas": 0, "readyReplicas": 0},
        )
    status = deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    replicas = int(status.get("replicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    wanted = int((deployment.get("spec") or {}).get("replicas", desired) or 0)
    observed = status.get("observedGeneration")
    stale = observed is None or (meta.get("generation") is not None and observed < meta["generation"])
    by_type = {c.get("type"): c for c in status.get("conditions") or []}
    failure = by_type.get("ReplicaFailure", {})
    progress = by_type.get("Progressing", {})
    # Only for the current generation: a failure of the previous rollout says nothing of this one.
    deadline = not stale and progress.get("reason") == "ProgressDeadlineExceeded"
    # The Deployment controller's word that the rollout finished; without it, judge by counts.
    complete = not stale and progress.get("reason") == "NewReplicaSetAvailable"
    counts = {"replicas": replicas, "readyReplicas": ready}

    conditions: list[Condition] = []
    if wanted == 0:
        conditions.append(condition(READY, "False", "ScaledToZero", "spec.replicas is 0", generation))
    elif ready > 0:
        conditions.append(
            condition(READY, "True", "ReplicasReady", f"{ready}/{wanted} replicas ready", generation)
        )
    else:
        conditions.append(
            condition(READY, "False", "NoReplicaReady", f"0/{wanted} replicas ready", generation)
        )

    rolling = not complete and (stale or updated < wanted or ready < wanted or replicas > wanted)
    if deadline:
        conditions.append(
            condition(
                PROGRESSING, "False", "ProgressDeadlineExceeded", progress.get("message", ""), generation
            )
        )
    elif rolling:
        conditions.append(
            condition(PROGRESSING, "True", "RollingOut", f"{updated}/{wanted} replicas updated", generation)
        )
    else:
        conditions.append(condition(PROGRESSING, "False", "RolloutComplete", "", generation))

    if failure.get("status") == "True":
        conditions.append(
            condition(DEGRADED, "True", "ReplicaFailure", failure.get("message", ""), generation)
        )
    elif deadline:
        conditions.append(
            condition(DEGRADED, "True", "ProgressDeadlineExceeded", progress.get("message", ""), generation)
        )
    elif ready < wanted and not rolling:
        conditions.append(
            condition(DEGRADED, "True", "ReplicasUnavailable", f"{ready}/{wanted} ready", generation)
        )
    else:
        conditions.append(condition(DEGRADED, "False", "AsExpected", "", generation))

    degraded = conditions[2].status == "True"
    if wanted > 0 and ready == 0 and degraded:
        phase = Phase.FAILED if failure.get("status") == "True" else Phase.DEGRADED
    elif degraded:
        phase = Phase.DEGRADED
    elif conditions[0].status == "True" and not rolling:
        phase = Phase.READY
    elif conditions[0].status == "True":
        phase = Phase.PROGRESSING  # serving, while a rollout goes on
    else:
        phase = Phase.PROGRESSING if wanted > 0 else Phase.PENDING
    return phase, conditions, counts


def remote_model_conditions(
    ready: bool, reason: str, message: str, generation: int | None
) -> tuple[Phase, list[Condition]]:
    """A ChatModel served by a remote endpoint: nothing to roll out, Ready is what the probe of
    the endpoint found (it answers and lists the model)."""
    if ready:
        return Phase.READY, [
            condition(READY, "True", reason, message, generation),
            condition(PROGRESSING, "False", reason, message, generation),
            condition(DEGRADED, "False", reason, message, generation),
        ]
    return Phase.DEGRADED, [
        condition(READY, "False", reason, message, generation),
        condition(PROGRESSING, "False", reason, message, generation),
        condition(DEGRADED, "True", reason, message, generation),
    ]


def cache_status(job: Mapping[str, Any] | None, bytes_key: str, total_key: str) -> CacheStatus:
    """The weight cache's state from its Job: Pending (not created, or no pod running yet),
    Downloading (a pod runs), Ready (succeeded), Failed (out of retries). Progress comes from the
    Job's annotations `bytes_key`/`total_key`, which the fetch step writes as it goes."""
    if job is None:
        return CacheStatus()
    status = job.get("status") or {}
    annotations = (job.get("metadata") or {}).get("annotations") or {}

    def count(key: str) -> int:
        try:
            return max(0, int(annotations.get(key, 0)))
        except (TypeError, ValueError):
            return 0

    failed = any(
        c.get("type") == "Failed" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    if int(status.get("succeeded") or 0) > 0:
        phase = CachePhase.READY
    elif failed:
        phase = CachePhase.FAILED
    elif int(status.get("active") or 0) > 0:
        phase = CachePhase.DOWNLOADING
    else:
        phase = CachePhase.PENDING
    done, total = count(bytes_key), count(total_key)
    if phase is CachePhase.READY and total:
        done = total
    return CacheStatus(phase=phase, bytes=done, total=total)


def job_failure_message(job: Mapping[str, Any] | None, error_key: str = "") -> str:
    """Why the Job failed: the fetch step's own words (annotation `error_key`) where it left
    them, else the Job controller's."""
    annotations = ((job or {}).get("metadata") or {}).get("annotations") or {}
    if error_key and annotations.get(error_key):
        return str(annotations[error_key])
    for c in ((job or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            return str(c.get("message") or c.get("reason") or "the download Job failed")
    return ""


def cache_conditions(
    cache: CacheStatus, failure: str, generation: int | None
) -> tuple[Phase, list[Condition]]:
    """Phase and conditions while the weight cache is not Ready (no pods exist yet)."""
    if cache.phase is CachePhase.FAILED:
        message = f"downloading the weights failed: {failure}"
        return Phase.FAILED, [
            condition(READY, "False", "WeightsDownloadFailed", message, generation),
            condition(PROGRESSING, "False", "WeightsDownloadFailed", message, generation),
            condition(DEGRADED, "True", "WeightsDownloadFailed", message, generation),
            condition(WEIGHTS_CACHED, "False", "DownloadFailed", message, generation),
        ]
    if cache.phase is CachePhase.DOWNLOADING:
        of = f" of {cache.total}" if cache.total else ""
        message = f"downloading the weights into the cache: {cache.bytes}{of} bytes"
        reason = "Downloading"
    else:
        message = "the weight cache's download has not started"
        reason = "DownloadPending"
    return Phase.PENDING if cache.phase is CachePhase.PENDING else Phase.PROGRESSING, [
        condition(READY, "False", reason, message, generation),
        condition(PROGRESSING, "True", reason, message, generation),
        condition(DEGRADED, "False", reason, "", generation),
        condition(WEIGHTS_CACHED, "False", reason, message, generation),
    ]
