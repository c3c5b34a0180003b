"""kubechat as an MCP server at /mcp: its knowledge bases and the vision model, as tools.

Streamable HTTP in the SDK's stateless mode with JSON responses: no session lives in a replica,
so any API replica answers any request. Requests authenticate exactly like the REST API (a
bearer API key, or the local principal when no key is configured); the principal is put into
the request's ASGI state, where the tools read it through the SDK's request context. Domain
errors (unknown or unreadable knowledge base, missing image...) are MCP tool errors whose text
starts with kubechat's stable error code, and whose structured content is the API's error body.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from kubechat import __version__
from kubechat.api.dependencies import Services, authenticate
from kubechat.api.errors import ErrorBody, error_response
from kubechat.core.errors import DocumentNotFoundError, KubechatError, StorageUnavailableError
from kubechat.images.vision import TRANSCRIBE_PROMPT
from kubechat.knowledge.retrieval import Citation
from kubechat.stores.errors import StoreError

PRINCIPAL_STATE = "kubechat_principal"  # the key of the principal in the request's ASGI state
INSTRUCTIONS = (
    "kubechat's knowledge bases and vision model. list_knowledge_bases names what you may search; "
    "search_knowledge_base returns numbered, cited chunks ([n] document, page or section); "
    "get_document_chunk fetches one chunk by its id; describe_image describes an image you "
    "uploaded to kubechat (POST /images) by its id."
)


class KnowledgeBaseSummary(BaseModel):
    name: str
    description: str
    documents: int = Field(description="Documents in the knowledge base, whatever their status.")
    ready: bool = Field(description="False while its index or embedding model is unavailable.")


class KnowledgeBaseList(BaseModel):
    knowledge_bases: list[KnowledgeBaseSummary]


class SearchResult(BaseModel):
    sources: list[Citation] = Field(description="Best first; cite them as [n].")


class DocumentChunk(BaseModel):
    knowledge_base: str
    chunk_id: str
    document_id: str
    document_name: str
    ordinal: int = Field(description="Position of the chunk in its document, from 0.")
    page: int | None
    section: str
    text: str


class ImageDescriptionResult(BaseModel):
    image_id: str
    name: str
    model: str = Field(description="The vision model that described the image.")
    description: str


class McpApp:
    """The ASGI endpoint of /mcp and the lifetime of the SDK's session manager, which the API's
    lifespan enters (a route's app has no lifespan of its own)."""

    def __init__(self, server: MCPServer, endpoint: ASGIApp) -> None:
        self.server = server
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._endpoint(scope, receive, send)

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        async with self.server.session_manager.run():
            yield


def create_mcp_app(services: Callable[[], Services], *, local_only: bool = False) -> McpApp:
    """The /mcp endpoint. `services` returns the API's services once its lifespan made them.

    `local_only` (no API keys: every request is the local principal) turns on the SDK's DNS
    rebinding protection, so that a web page cannot reach the local tools through a hostname
    that resolves to 127.0.0.1; with API keys, the key is the protection.
    """
    server = _quiet_server()

    @server.tool(description="The knowledge bases you may search: name, description, document count.")
    async def list_knowledge_bases(ctx: Context) -> Annotated[CallToolResult, KnowledgeBaseList]:
        return await _answer(ctx, lambda principal: _list_knowledge_bases(services(), principal))

    @server.tool(
        description="Hybrid (semantic and keyword) search of one knowledge base. Returns the k best "
        "chunks, numbered [n], with their document, page or section, and chunk id."
    )
    async def search_knowledge_base(
        knowledge_base: Annotated[str, Field(description="Its name, from list_knowledge_bases.")],
        query: Annotated[str, Field(min_length=1, max_length=4000)],
        ctx: Context,
        k: Annotated[int, Field(ge=1, le=50, description="How many chunks to return.")] = 5,
    ) -> Annotated[CallToolResult, SearchResult]:
        return await _answer(ctx, lambda principal: _search(services(), principal, knowledge_base, query, k))

    @server.tool(description="One chunk of a knowledge base by its id (`chunk_id` of a search result).")
    async def get_document_chunk(
        knowledge_base: str, chunk_id: str, ctx: Context
    ) -> Annotated[CallToolResult, DocumentChunk]:
        return await _answer(ctx, lambda principal: _chunk(services(), principal, knowledge_base, chunk_id))

    @server.tool(
        description="Describe an image you uploaded to kubechat (POST /images), by its id, with the "
        "vision model; `question` asks about something in particular."
    )
    async def describe_image(
        image_id: str, ctx: Context, question: Annotated[str, Field(max_length=4000)] = ""
    ) -> Annotated[CallToolResult, ImageDescriptionResult]:
        return await _answer(ctx, lambda principal: _describe(services(), principal, image_id, question))

    if local_only:
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    else:
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    # The SDK's Starlette app routes /mcp itself; it is served at the same path of the API.
    app = server.streamable_http_app(
        streamable_http_path="/mcp", stateless_http=True, json_response=True, transport_security=security
    )
    return McpApp(server, _Authenticated(app, services))


def _quiet_server() -> MCPServer:
    """MCPServer() calls logging.basicConfig, which would put a handler at INFO on the root logger
    of the API process (under bare uvicorn, whose own loggers are separate); logging belongs to
    the deployment, so the root logger is left as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return MCPServer("kubechat", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


class _Authenticated:
    """Resolves the principal as the REST API does; answers 401 with the API's error shape."""

    def __init__(self, app: ASGIApp, services: Callable[[], Services]) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                principal = authenticate(HTTPConnection(scope), self.services())
            except KubechatError as exc:
                await error_response(exc)(scope, receive, send)
                return
            if scope["method"] == "GET":
                # Stateless: there is no stream of server-initiated messages to open (the spec's
                # answer is 405); the SDK would hold the request open, idle, for ever.
                body = ErrorBody(code="method_not_allowed", message="POST JSON-RPC requests to /mcp")
                response = JSONResponse(
                    {"error": body.model_dump()}, status_code=405, headers={"Allow": "POST"}
                )
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})[PRINCIPAL_STATE] = principal
        await self.app(scope, receive, send)


async def _answer(ctx: Context, work: Callable[[str], Awaitable[tuple[BaseModel, str]]]) -> CallToolResult:
    """Runs a tool for the request's principal: its model as structured content and its text, or
    kubechat's error as a tool error (code and message)."""
    scope: dict[str, Any] = getattr(ctx.request_context.request, "scope", {})
    principal = scope.get("state", {}).get(PRINCIPAL_STATE)
    if not isinstance(principal, str):
        return _error("unauthenticated", "no principal: /mcp is served only over authenticated HTTP")
    try:
        model, text = await work(principal)
    except StoreError as exc:
        error = StorageUnavailableError(f"a store failed: {exc}")
        return _error(error.code, error.message)
    except KubechatError as exc:
        return _error(exc.code, exc.message)
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=model.model_dump(mode="json")
    )


def _error(code: str, message: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=f"{code}: {message}")],
        structured_content={"error": {"code": code, "message": message}},
        is_error=True,
    )


async def _list_knowledge_bases(services: Services, principal: str) -> tuple[KnowledgeBaseList, str]:
    knowledge = services.knowledge
    summaries = []
    for kb in knowledge.readable(principal):
        counts = await knowledge.documents.status_counts(kb.name)
        summaries.append(
            KnowledgeBaseSummary(
                name=kb.name,
                description=kb.spec.description,
                documents=sum(counts.values()),
                ready=knowledge.unavailable_reason(kb.name) is None,
            )
        )
    lines = [
        f"{s.name}: {s.description or '(no description)'} ({s.documents} documents"
        f"{'' if s.ready else ', unavailable'})"
        for s in summaries
    ]
    return KnowledgeBaseList(knowledge_bases=summaries), "\n".join(lines) or "No knowledge base."


async def _search(
    services: Services, principal: str, knowledge_base: str, query: str, k: int
) -> tuple[SearchResult, str]:
    candidates = max(k, services.settings.retrieval_candidates)
    sources = await services.knowledge.search(
        principal, [knowledge_base], query, limit=k, candidates=candidates
    )
    text = "\n\n".join(f"[{c.n}] {_where(c)}: {c.text}" for c in sources)
    return SearchResult(sources=sources), text or f"Nothing in {knowledge_base} matches the query."


def _where(citation: Citation) -> str:
    """`document, page 2` or `document, section Install`, as the chat's sources are cited."""
    if citation.page is not None:
        return f"{citation.document_name}, page {citation.page}"
    if citation.section:
        return f"{citation.document_name}, section {citation.section}"
    return citation.document_name


async def _chunk(
    services: Services, principal: str, knowledge_base: str, chunk_id: str
) -> tuple[DocumentChunk, str]:
    knowledge = services.knowledge
    kb = knowledge.get(knowledge_base, principal)
    record = await knowledge.chunks.get_chunk(kb, chunk_id)
    if record is None:
        raise DocumentNotFoundError(f"no chunk {chunk_id!r} in knowledge base {kb.name}")
    chunk = DocumentChunk(
        knowledge_base=kb.name,
        chunk_id=record.chunk_id,
        document_id=record.document_id,
        document_name=record.document_name,
        ordinal=record.ordinal,
        page=record.page,
        section=record.section,
        text=record.text,
    )
    where = f"{record.document_name}, page {record.page}" if record.page is not None else record.document_name
    if record.page is None and record.section:
        where += f", section {record.section}"
    return chunk, f"{where}:\n{record.text}"


async def _describe(
    services: Services, principal: str, image_id: str, question: str
) -> tuple[ImageDescriptionResult, str]:
    vision = services.vision
    attachments = await vision.attachments(principal, [image_id])
    describer = vision.describer()
    describer.check_ready()
    (described,) = await vision.describe(describer, attachments, question or TRANSCRIBE_PROMPT)
    result = ImageDescriptionResult(
        image_id=described.id, name=described.name, model=describer.name, description=described.description
    )
    return result, described.description
