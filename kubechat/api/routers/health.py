"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from kubechat.api.dependencies import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process serves requests. Never checks dependencies."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "a dependency is not ready"}})
async def ready(services: ServicesDep) -> JSONResponse:
    """Readiness: Triton serves every catalog model and the history store answers."""
    names = services.catalog.names()
    states = await asyncio.gather(*(services.triton.model_ready(n) for n in names))
    checks: dict[str, str] = {
        f"model:{n}": "ready" if ok else "not ready" for n, ok in zip(names, states, strict=True)
    }
    if not await services.triton.server_ready():
        checks["triton"] = f"unreachable at {services.triton.url}"
    else:
        checks["triton"] = "ready"
    try:
        await services.store.ping()
        checks["history"] = "ready"
    except Exception as exc:
        checks["history"] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ready" for v in checks.values())
    # Reported, not gating: one misconfigured knowledge base must not take the chat down. Counts
    # only: this route is unauthenticated; GET /knowledge-bases says which and why.
    knowledge = services.knowledge
    unavailable = sum(knowledge.unavailable_reason(n) is not None for n in knowledge.names())
    knowledge_bases = {"ready": len(knowledge.names()) - unavailable, "unavailable": unavailable}
    return JSONResponse(
        {"status": "ready" if ok else "not ready", "checks": checks, "knowledge_bases": knowledge_bases},
        status_code=200 if ok else 503,
    )
