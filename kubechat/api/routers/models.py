"""The models this API routes to, with their capabilities and limits."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from kubechat.api.dependencies import PrincipalDep, ServicesDep

router = APIRouter(prefix="/models", tags=["models"])


class ModelOut(BaseModel):
    name: str
    display_name: str
    capabilities: list[str]
    ready: bool
    max_input_tokens: int
    max_output_tokens: int
    default: bool


@router.get("")
async def list_models(services: ServicesDep, _principal: PrincipalDep) -> list[ModelOut]:
    out = []
    for entry in services.catalog:
        spec = entry.model.spec
        out.append(
            ModelOut(
                name=entry.name,
                display_name=spec.display_name or entry.name,
                capabilities=[str(c) for c in spec.capabilities],
                ready=await services.triton.model_ready(entry.name),
                max_input_tokens=spec.engine.max_input_tokens,
                max_output_tokens=spec.engine.max_output_tokens,
                default=entry.name == services.catalog.default_model,
            )
        )
    return out
