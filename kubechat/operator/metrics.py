"""The operator's Prometheus metrics, served on its own port (`kubechat operator --metrics-port`).

- reconcile durations and errors per kind (every kopf handler's run);
- each ChatModel's and KnowledgeBase's phase and readiness as gauges, from the status the
  operator computes (kube-state-metrics style: one series per phase, 1 for the current one);
- children corrected after drift: recreated (deleted by hand) or patched back (edited by hand),
  by the child's kind, as the resync loop and child events find them.

A registry of the operator's own: tests and the benchmark run several operators in one process
next to an API, and each process serves only what it does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Iterable
from typing import TypeVar

import kopf
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubechat.core.resources import Phase

T = TypeVar("T")

REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

RECONCILE_DURATION = Histogram(
    "kubechat_operator_reconcile_duration_seconds",
    "One run of a kopf handler (create, update, resume, delete, counts) by resource kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "kubechat_operator_reconcile_errors",
    "Handler runs that failed, by kind and error: permanent (an invalid spec, a refusal no retry "
    "changes), temporary (retried with back-off: conflicts, throttling, stores down), unexpected.",
    ["kind", "error"],
    registry=REGISTRY,
)
DRIFT_CORRECTED = Counter(
    "kubechat_operator_children_drift_corrected",
    "ChatModel children put back by the resync loop or a child's event: recreated (deleted by "
    "hand) or patched (a rendered field was changed by hand), by the child's kind.",
    ["kind", "action"],
    registry=REGISTRY,
)


class ResourceStates(Collector):
    """The last phase and readiness computed for each resource, as two gauge families."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str, str], tuple[str, bool]] = {}

    def set(self, kind: str, namespace: str, name: str, phase: str, ready: bool) -> None:
        with self._lock:
            self._states[(kind, namespace, name)] = (phase, ready)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._states.pop((kind, namespace, name), None)

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            states = dict(self._states)
        phases, ready = self._families()
        for (kind, namespace, name), (current, is_ready) in sorted(states.items()):
            for phase in Phase:
                phases.add_metric([kind, namespace, name, str(phase)], 1.0 if phase == current else 0.0)
            ready.add_metric([kind, namespace, name], 1.0 if is_ready else 0.0)
        return [phases, ready]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "kubechat_operator_resource_phase",
                "1 for the phase each ChatModel and KnowledgeBase is in (Pending, Progressing, Ready, "
                "Degraded, Failed, Deleting), 0 for the others.",
                labels=["kind", "namespace", "name", "phase"],
            ),
            GaugeMetricFamily(
                "kubechat_operator_resource_ready",
                "1 while the resource's Ready condition is True (a ChatModel: at least one replica serves).",
                labels=["kind", "namespace", "name"],
            ),
        )


RESOURCE_STATES = ResourceStates()
REGISTRY.register(RESOURCE_STATES)


async def observe_reconcile(kind: str, work: Awaitable[T]) -> T:
    """Run one handler's work, timed, its failure counted by kind (and re-raised to kopf)."""
    started = time.perf_counter()
    try:
        return await work
    except kopf.PermanentError:
        RECONCILE_ERRORS.labels(kind, "permanent").inc()
        raise
    except kopf.TemporaryError:
        RECONCILE_ERRORS.labels(kind, "temporary").inc()
        raise
    except Exception:
        RECONCILE_ERRORS.labels(kind, "unexpected").inc()
        raise
    finally:
        RECONCILE_DURATION.labels(kind).observe(time.perf_counter() - started)
