"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from kubechat.api.dependencies import Services, services_of
from kubechat.api.errors import error_responses
from kubechat.api.routing import ApiRoute

router = APIRouter(tags=["health"], route_class=ApiRoute)


class Readiness(BaseModel):
    """The body of /ready, with 200 (ready) and 503 (not ready) alike."""

    status: Literal["ready", "not ready"]
    checks: dict[str, str] = Field(description='What gates readiness: each "ready", or why not.')
    discovery: dict[str, str] | None = Field(default=None, description="Cluster mode: each kind's watch.")
    models: dict[str, str] | None = Field(default=None, description="Cluster mode: each model's readiness.")
    knowledge_bases: dict[str, int] = Field(
        default_factory=dict, description="Counts `ready` and `unavailable` (not gating)."
    )
    mcp_servers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Each MCP server's connection (not gating)."
    )
    supervised: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="`kubechat serve`: the processes it keeps up (tritonserver): state, restarts, last exit.",
    )


@router.get("/health", responses=error_responses())
async def health() -> dict[str, str]:
    """Liveness: the process serves requests. Never checks dependencies."""
    return {"status": "ok"}


@router.get(
    "/ready",
    responses={
        **error_responses(),
        200: {"model": Readiness, "description": "Ready."},
        503: {"model": Readiness, "description": "A dependency is not ready: `checks` says which."},
    },
)
async def ready(request: Request) -> JSONResponse:
    """Readiness.

    Files mode: Triton serves every catalog model and the history store answers. Cluster mode:
    discovery has listed the namespace's resources and the history store answers; each model's
    readiness (its ChatModel's Ready condition) is reported but does not gate, so that one
    unready model does not take every API replica out of its Service. A process that started
    with stores it cannot use (an Elasticsearch of another major) is not ready, and says why.
    """
    problem = getattr(request.app.state, "stores_problem", None)
    if problem is not None:
        return JSONResponse(
            {"status": "not ready", "checks": {"stores": f"unsupported: {problem}"}}, status_code=503
        )
    services = services_of(request)
    body: dict[str, object] = {}
    if services.discovery is None:
        checks = await _triton_checks(services)
    else:
        discovery = services.discovery
        checks = {"discovery": "ready"}
        if not discovery.synced:
            waiting = [
                f"{plural}: {state.error or 'listing'}"
                for plural, state in discovery.states().items()
                if not state.synced
            ]
            checks["discovery"] = f"not synced ({'; '.join(waiting)})"
        body["discovery"] = {
            plural: f"retrying: {state.error}" if state.error else "watching" if state.synced else "listing"
            for plural, state in discovery.states().items()
        }
        models = {}
        for entry in services.catalog:
            readiness = await services.readiness(entry)
            models[entry.name] = "ready" if readiness.ready else f"not ready: {readiness.reason}"
        body["models"] = models
    supervised = {name: dict(process.status()) for name, process in services.supervised.items()}
    for name, process in supervised.items():
        # tritonserver restarting after a crash: its models' checks fail too, this says why.
        state = process.get("state")
        checks[name] = (
            "ready" if state == "running" else f"{state} ({process.get('last_exit') or 'starting'})"
        )
    try:
        await services.store.ping()
        checks["history"] = "ready"
    except Exception as exc:
        checks["history"] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ready" for v in checks.values())
    # Reported, not gating: one misconfigured knowledge base must not take the chat down. Counts
    # only: this route is unauthenticated; GET /knowledge-bases says which and why.
    knowledge = services.knowledge
    names = knowledge.names()
    unavailable = sum(knowledge.unavailable_reason(n) is not None for n in names)
    knowledge_bases = {"ready": len(names) - unavailable, "unavailable": unavailable}
    # Reported, not gating either: a model can answer without its tools.
    mcp_servers = services.tools.status()
    status = "ready" if ok else "not ready"
    return JSONResponse(
        {
            "status": status,
            "checks": checks,
            **body,
            "knowledge_bases": knowledge_bases,
            "mcp_servers": mcp_servers,
            "supervised": supervised,
        },
        status_code=200 if ok else 503,
    )


async def _triton_checks(services: Services) -> dict[str, str]:
    names = services.catalog.names()
    states = await asyncio.gather(*(_model_check(services, n) for n in names))
    checks: dict[str, str] = {f"model:{n}": state for n, state in zip(names, states, strict=True)}
    if not await services.triton.server_ready():
        checks["triton"] = f"unreachable at {services.triton.default_url}"
    else:
        checks["triton"] = "ready"
    return checks


async def _model_check(services: Services, name: str) -> str:
    """Triton has the model loaded; a remote model's endpoint answers and lists it (else why not)."""
    probe = await services.triton.probe(name)
    if probe is None:
        return "ready" if await services.triton.model_ready(name) else "not ready"
    return "ready" if probe.ready else f"not ready ({probe.reason}: {probe.message})"
