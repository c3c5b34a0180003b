"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from kubechat.api.dependencies import Services, get_services

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process serves requests. Never checks dependencies."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "a dependency is not ready"}})
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
    services = get_services(request)
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
        },
        status_code=200 if ok else 503,
    )


async def _triton_checks(services: Services) -> dict[str, str]:
    names = services.catalog.names()
    states = await asyncio.gather(*(services.triton.model_ready(n) for n in names))
    checks: dict[str, str] = {
        f"model:{n}": "ready" if ok else "not ready" for n, ok in zip(names, states, strict=True)
    }
    if not await services.triton.server_ready():
        checks["triton"] = f"unreachable at {services.triton.default_url}"
    else:
        checks["triton"] = "ready"
    return checks
