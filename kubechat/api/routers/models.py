"""The models this API routes to, with their capabilities, limits and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel, Field

from kubechat.api.dependencies import PrincipalDep, ServicesDep
from kubechat.api.errors import error_responses
from kubechat.api.pages import Cursor, ItemPage, Limit
from kubechat.api.routing import ApiRoute
from kubechat.core.errors import UnauthenticatedError
from kubechat.core.pagination import page_by_name
from kubechat.core.resources import ModelPurpose

router = APIRouter(prefix="/models", tags=["models"], route_class=ApiRoute)


class ModelOut(BaseModel):
    name: str
    display_name: str
    capabilities: list[str]
    ready: bool = Field(
        description="Files mode: Triton has the model loaded. Cluster mode: the ChatModel's Ready condition."
    )
    reason: str = Field(default="", description="Cluster mode, when not ready: the Ready condition's reason.")
    message: str = Field(default="", description="Cluster mode, when not ready: its message.")
    max_input_tokens: int
    max_output_tokens: int
    purpose: ModelPurpose = Field(
        description="general: for people (a general chat model is one to chat with). development: for "
        "benchmarks, tests and demos (callable by name, but not one to offer for chatting)."
    )
    default: bool = Field(description="The model a message without `model` goes to: the one to offer first.")


class ModelPage(ItemPage[ModelOut]):
    """The models, by name."""


@router.get("", responses=error_responses(UnauthenticatedError))
async def list_models(
    services: ServicesDep, _principal: PrincipalDep, limit: Limit = 50, cursor: Cursor = None
) -> ModelPage:
    page = page_by_name(list(services.catalog), limit, cursor, lambda entry: entry.name)
    entries = page.items
    states = await asyncio.gather(*(services.readiness(entry) for entry in entries))
    default = services.catalog.default_model
    out = []
    for entry, readiness in zip(entries, states, strict=True):
        spec = entry.model.spec
        out.append(
            ModelOut(
                name=entry.name,
                display_name=spec.display_name or entry.name,
                capabilities=[str(c) for c in spec.capabilities],
                ready=readiness.ready,
                reason=readiness.reason,
                message=readiness.message,
                max_input_tokens=spec.engine.max_input_tokens,
                max_output_tokens=spec.engine.max_output_tokens,
                purpose=spec.purpose,
                default=entry.name == default,
            )
        )
    return ModelPage(items=out, next_cursor=page.next_cursor)
