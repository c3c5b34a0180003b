"""kopf's view of a custom resource, for the reconcilers of both kinds: its spec parsed into
kubechat's resource models, and its phase and conditions written into kopf's status patch."""

from __future__ import annotations

from typing import Any

import kopf

from kubechat.core.resources import Condition, Phase, R, parse_resource
from kubechat.operator.metrics import RESOURCE_STATES
from kubechat.operator.status import READY, merge_conditions


def generation(meta: kopf.Meta) -> int | None:
    value = meta.get("generation")
    return int(value) if value is not None else None


def parse_body(kind: type[R], body: kopf.Body) -> R:
    """The resource without its status: what the operator acts on is the spec alone."""
    document = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
    }
    return parse_resource(kind, document)


def write_status(
    patch: kopf.Patch,
    body: kopf.Body,
    phase: Phase,
    conditions: list[Condition],
    extra: dict[str, Any],
) -> None:
    """Put phase, conditions (merged with the live ones) and the set `extra` fields in `patch`;
    the phase and readiness also go to the operator's gauges."""
    current = body.get("status", {}).get("conditions") or []
    patch.status["phase"] = str(phase)
    merged = merge_conditions(current, conditions)
    patch.status["conditions"] = merged
    ready = any(c.get("type") == READY and c.get("status") == "True" for c in merged)
    meta = body.metadata
    RESOURCE_STATES.set(str(body.get("kind")), str(meta.namespace), str(meta.name), str(phase), ready)
    for key, value in extra.items():
        if value is not None:
            patch.status[key] = value
