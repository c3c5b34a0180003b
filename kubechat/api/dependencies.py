"""Typed FastAPI dependencies: the principal of a request and the services on app.state."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Protocol

from fastapi import Depends
from starlette.requests import HTTPConnection

from kubechat.api.settings import Settings
from kubechat.catalog import CatalogEntry, ModelCatalog, Readiness
from kubechat.chat.embeddings import EmbeddingService
from kubechat.chat.service import ChatService
from kubechat.core.errors import StorageUnavailableError, UnauthenticatedError
from kubechat.core.logs import current_request, principal_hash
from kubechat.discovery import ClusterDiscovery
from kubechat.images.service import ImageService
from kubechat.images.vision import VisionService
from kubechat.knowledge.service import KnowledgeService
from kubechat.mcp.toolbox import McpToolbox
from kubechat.remote.router import ModelRouter
from kubechat.stores.history import HistoryStore


class Supervised(Protocol):
    """A process the API's runtime keeps up beside it (`kubechat serve`'s tritonserver), as
    /ready reports it: `state` ("running" when it serves) and whatever else says how it fares."""

    def status(self) -> Mapping[str, object]: ...


@dataclass
class Services:
    settings: Settings
    catalog: ModelCatalog
    store: HistoryStore
    triton: ModelRouter  # Triton models and remote (OpenAI-compatible) ones alike
    chat: ChatService
    embeddings: EmbeddingService
    knowledge: KnowledgeService
    images: ImageService
    vision: VisionService
    principals_by_key: dict[str, str]
    tools: McpToolbox  # the tools of the configured MCP servers
    discovery: ClusterDiscovery | None = None  # cluster mode only
    supervised: Mapping[str, Supervised] = field(default_factory=dict)  # kubechat serve: tritonserver

    async def readiness(self, entry: CatalogEntry) -> Readiness:
        """Cluster mode: the ChatModel's Ready condition. Files mode: whether Triton has it loaded,
        or for a remote model, whether its endpoint answers and lists it."""
        readiness = entry.readiness()
        if readiness is not None:
            return readiness
        probe = await self.triton.probe(entry.name)
        if probe is not None:
            return Readiness(
                probe.ready, "" if probe.ready else probe.reason, "" if probe.ready else probe.message
            )
        return Readiness(await self.triton.model_ready(entry.name))


def services_of(connection: HTTPConnection) -> Services:
    services: Services | None = connection.app.state.services
    if services is None:  # started without usable stores (kubechat.api.app's lifespan says why)
        raise StorageUnavailableError(
            f"kubechat cannot use its stores: {connection.app.state.stores_problem}"
        )
    return services


# The dependencies are async though they never await: FastAPI runs a plain `def` dependency in its
# thread pool, two thread hand-offs per request for a lookup and a key comparison (seen with
# py-spy under 64 concurrent /v1 streams).
async def get_services(connection: HTTPConnection) -> Services:
    return services_of(connection)


ServicesDep = Annotated[Services, Depends(get_services)]


def authenticate(connection: HTTPConnection, services: ServicesDep) -> str:
    """Every request has a principal: the owner of a bearer API key, or the local user.

    Browsers cannot set headers on a WebSocket, so `?token=` is accepted there too.
    """
    principal = _principal(connection, services)
    context = current_request()
    if context is not None:
        context.principal_hash = principal_hash(principal)  # logs say who by a hash, never the name
    return principal


def _principal(connection: HTTPConnection, services: Services) -> str:
    keys = services.principals_by_key
    if not keys:
        return services.settings.local_principal
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        token = connection.query_params.get("token", "") if connection.scope["type"] == "websocket" else ""
    for key, principal in keys.items():
        # Constant-time comparison: no timing oracle on the key.
        if token and hmac.compare_digest(token.encode(), key.encode()):
            return principal
    raise UnauthenticatedError("a valid API key is required (Authorization: Bearer <key>)")


async def _authenticated(connection: HTTPConnection, services: ServicesDep) -> str:
    return authenticate(connection, services)


PrincipalDep = Annotated[str, Depends(_authenticated)]
