"""The FastAPI application factory and its lifespan (clients opened once, closed on exit)."""

from __future__ import annotations

import functools
import logging
import re
import resource
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from kubechat import __version__
from kubechat.api.dependencies import Services, Supervised
from kubechat.api.docs import add_api_docs
from kubechat.api.errors import error_response, status_error_response, validation_error_response
from kubechat.api.mcp_server import create_mcp_app
from kubechat.api.observability import MetricsServer, RequestObservation
from kubechat.api.routers import (
    chat_socket,
    health,
    images,
    knowledge_bases,
    models,
    openai_compat,
    openai_embeddings,
    sessions,
)
from kubechat.api.settings import Discovery, Settings, get_settings
from kubechat.api.web import serve_chat_page
from kubechat.catalog import ModelCatalog, load_catalog
from kubechat.chat.embeddings import EmbeddingService
from kubechat.chat.service import ChatConfig, ChatService
from kubechat.core.errors import KubechatError, StorageUnavailableError, as_kubechat_error
from kubechat.core.logs import configure_logging, install_redaction
from kubechat.core.resources import load_knowledge_bases_from_dir
from kubechat.core.tracing import configure_tracing
from kubechat.discovery import ClusterDiscovery, load_kubernetes_configuration
from kubechat.images.service import ImageService
from kubechat.images.vision import VisionService
from kubechat.knowledge.service import KnowledgeService
from kubechat.mcp.config import load_mcp_servers
from kubechat.mcp.toolbox import McpToolbox
from kubechat.remote.router import ModelRouter, env_api_key, remote_model
from kubechat.stores.errors import StoreError, UnsupportedServerError
from kubechat.stores.open import Stores, open_stores
from kubechat.triton.client import TritonInference

logger = logging.getLogger(__name__)


def open_knowledge_service(
    settings: Settings, models: ModelCatalog, triton: TritonInference, stores: Stores
) -> KnowledgeService:
    """Files mode: the KnowledgeBase YAML files. Cluster mode: none at first; discovery adds the
    namespace's KnowledgeBase resources as it lists and watches them.

    The operator creates the indices where it manages the stores: in a cluster with
    Elasticsearch (kubechat.operator.runner.open_stores reads the same settings). Without it each
    API pod keeps embedded stores only it can reach, and creates their indices as in files mode.
    """
    cluster = settings.discovery is Discovery.KUBERNETES
    operator_creates_indices = cluster and bool(settings.elasticsearch_url)
    return KnowledgeService(
        [] if cluster else load_knowledge_bases_from_dir(settings.knowledge_bases_dir),
        models,
        stores.documents,
        stores.objects,
        stores.chunks,
        triton,
        workers=settings.ingest_workers,
        max_files=settings.max_upload_files,
        dynamic=cluster,
        creates_indices=not operator_creates_indices,
        image_limits=settings.image_limits(),
        vision_model=settings.vision_model,
        min_score=settings.retrieval_min_score,
    )


def raise_open_files_limit() -> int:
    """Every WebSocket is a file descriptor: the soft limit (often 1024) is raised to the hard
    one, which the process may do without privileges. The limit in force is returned."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # a hard limit above the kernel's nr_open
            logger.warning("could not raise the open files limit from %d: %s", soft, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def create_app(
    settings: Settings | None = None, supervised: Mapping[str, Supervised] | None = None
) -> FastAPI:
    """The API. `supervised` names the processes its runtime keeps up beside it, which /ready
    reports (`kubechat serve` passes its tritonserver's supervisor)."""
    settings = settings or get_settings()
    raise_open_files_limit()  # thousands of sockets (benchmarks/sockets.py)
    # Under a bare `uvicorn --factory` (the chart), uvicorn has configured its own loggers; an
    # explicit KUBECHAT_LOG_FORMAT/LOG_LEVEL takes logging over. Credentials are masked either way.
    if {"log_format", "log_level"} & settings.model_fields_set:
        configure_logging(settings.log_format, settings.log_level)
    install_redaction()
    configure_tracing("kubechat-api")
    # Without API keys every request is the local principal: /mcp then accepts only local hosts.
    local_only = settings.api_keys is None
    mcp_app = (
        create_mcp_app(lambda: app.state.services, local_only=local_only)
        if settings.mcp_server_enabled
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A malformed MCP configuration stops the start before anything is opened.
        mcp_servers = [
            # A server that sets no timeout_s gets the API's default.
            s
            if "timeout_s" in s.model_fields_set
            else s.model_copy(update={"timeout_s": settings.mcp_tool_timeout_s})
            for s in load_mcp_servers(settings.mcp_servers)
        ]
        cluster = settings.discovery is Discovery.KUBERNETES
        metrics_server = None
        if settings.metrics_port is not None:
            metrics_server = MetricsServer(settings.metrics_host, settings.metrics_port)
            metrics_server.start()
            app.state.metrics_port = metrics_server.port
        # First: without credentials for the Kubernetes API, cluster mode cannot start at all.
        kubernetes = await load_kubernetes_configuration() if cluster else None
        if cluster:
            # Filled and kept up to date by discovery; each model on its own Triton.
            catalog = ModelCatalog([], settings.default_model)
            triton = ModelRouter(None, settings.triton_timeout_s)
        else:
            catalog = load_catalog(settings.models_dir, settings.state_dir, settings.default_model)
            triton = ModelRouter(settings.triton_url, settings.triton_timeout_s)
            for entry in catalog:
                if entry.model.spec.endpoint is not None:  # backend openai: the key from the env
                    await triton.set_remote(entry.name, remote_model(entry.model, env_api_key(entry.model)))
        # One Elasticsearch client (in a cluster) for every store, closed once after them.
        try:
            stores = await open_stores(settings)
        except UnsupportedServerError as exc:
            # A server kubechat cannot talk to (Elasticsearch of another major) will not come
            # right by restarting: serve /health, and a /ready that says why; every other route
            # answers 503 storage_unavailable with the same reason.
            logger.error("kubechat API not ready: %s", exc)
            app.state.services = None
            app.state.stores_problem = str(exc)
            try:
                yield
            finally:
                await triton.close()
            return
        store = await stores.open_history()
        knowledge = open_knowledge_service(settings, catalog, triton, stores)
        # Images share the documents' object store (STATE_DIR/documents, or the MinIO bucket).
        image_service = ImageService(knowledge.objects, settings.image_limits())
        vision = VisionService(catalog, triton, image_service, settings.vision_model)
        discovery = None
        if kubernetes is not None:
            namespace, tokenizers = settings.namespace(), settings.cluster_tokenizers_dir()
            discovery = ClusterDiscovery(kubernetes, namespace, catalog, triton, knowledge, tokenizers)
        tools = McpToolbox(mcp_servers, refresh_interval_s=settings.mcp_refresh_interval_s)
        keys = settings.principals_by_key()
        if not keys:
            logger.warning("no KUBECHAT_API_KEYS: every request acts as %r", settings.local_principal)
        app.state.services = Services(
            settings=settings,
            catalog=catalog,
            store=store,
            triton=triton,
            chat=ChatService(chat_config(settings), catalog, store, triton, knowledge, vision, tools),
            embeddings=EmbeddingService(catalog, triton),
            knowledge=knowledge,
            images=image_service,
            vision=vision,
            principals_by_key=keys,
            tools=tools,
            discovery=discovery,
            supervised=dict(supervised or {}),
        )
        await knowledge.start()
        # Connects every MCP server; one that fails is retried in the background, not fatal.
        await tools.start()
        if discovery is not None:
            # Serving starts at once; /ready waits for the first lists.
            discovery.start()
            logger.info("kubechat API up: discovering resources in namespace %s", discovery.namespace)
        else:
            logger.info("kubechat API up: models %s, Triton at %s", catalog.names(), settings.triton_url)
        try:
            async with AsyncExitStack() as stack:
                if mcp_app is not None:
                    # A route's app has no lifespan: the SDK's session manager runs in this one.
                    await stack.enter_async_context(mcp_app.run())
                yield
        finally:
            await tools.stop()
            if discovery is not None:
                await discovery.stop()
            await knowledge.stop()
            await triton.close()
            await stores.close()
            if metrics_server is not None:
                metrics_server.stop()

    # FastAPI's /docs and /redoc would load their scripts from a CDN: api/docs.py serves them.
    app = FastAPI(title="kubechat", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    add_api_docs(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )

    @app.exception_handler(KubechatError)
    async def kubechat_error(_request: Request, exc: KubechatError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StoreError)
    async def store_error(_request: Request, exc: StoreError) -> JSONResponse:
        # Every store call that is not wrapped where it happens still gets the one error shape.
        logger.warning("store failure: %s", exc)
        return error_response(StorageUnavailableError(f"a store failed: {exc}"))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # OpenAI answers a request that does not validate with 400, and OpenAI clients (and the
        # frameworks built on them) raise BadRequestError on it; the rest of the API keeps 422.
        return validation_error_response(exc.errors(), 400 if is_openai_path(request) else 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # What the framework answers by itself (no route has the method, a body it cannot read)
        # gets the one error shape too, with a stable code per status (api/errors.py).
        headers, message = dict(exc.headers or {}), str(exc.detail)
        if exc.status_code == 405:
            # Starlette lists the methods of the one route it found, and a path's methods are
            # often spread over several routes (GET, PATCH and DELETE /sessions/{id}).
            headers["Allow"] = ", ".join(allowed_methods(request, headers.get("Allow", "")))
            message = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
        return status_error_response(exc.status_code, message, headers)

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the exception with its traceback after this answer; the client learns
        # only that it happened.
        return error_response(as_kubechat_error(exc))

    for router in (
        health.router,
        models.router,
        sessions.router,
        chat_socket.router,
        openai_compat.router,
        openai_embeddings.router,
        knowledge_bases.router,
        images.router,
    ):
        app.include_router(router)
    if mcp_app is not None:
        # A route, not a mount: a mount would answer /mcp with a redirect to /mcp/.
        app.router.routes.append(Route("/mcp", endpoint=mcp_app, include_in_schema=False))
    # Last: the page answers only what no API route matches.
    serve_chat_page(app.router, settings.web_dir)
    # Outermost (added last): request ids and request metrics cover every response, CORS's too.
    app.add_middleware(RequestObservation, count=settings.metrics_enabled)
    return app


def allowed_methods(request: Request, framework: str = "") -> list[str]:
    """The methods the OpenAPI schema documents for the request's path, and `framework`'s: the
    Allow header Starlette set for the route it found."""
    app: FastAPI = request.app
    path = request.url.path.removeprefix(request.scope.get("root_path", "")) or "/"
    methods = {m.strip().upper() for m in framework.split(",") if m.strip()}
    for template, operations in app.openapi()["paths"].items():
        if _path_pattern(template).fullmatch(path):
            methods |= {m.upper() for m in operations if m in HTTP_METHODS}
    return sorted(methods)


def is_openai_path(request: Request) -> bool:
    """Whether the request is for the OpenAI-compatible API (/v1), whose errors are OpenAI's."""
    path = request.url.path.removeprefix(request.scope.get("root_path", ""))
    return path == "/v1" or path.startswith("/v1/")


HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


@functools.cache
def _path_pattern(template: str) -> re.Pattern[str]:
    """An OpenAPI path template as a regular expression: `{name}` is one path segment."""
    segments = template.split("/")
    return re.compile("/".join("[^/]+" if s.startswith("{") else re.escape(s) for s in segments))


def chat_config(settings: Settings) -> ChatConfig:
    """The chat service's part of the API's settings."""
    return ChatConfig(
        max_message_chars=settings.max_message_chars,
        history_turns=settings.history_turns,
        retrieval_sources=settings.retrieval_sources,
        retrieval_candidates=settings.retrieval_candidates,
        tool_timeout_s=settings.mcp_tool_timeout_s,
        metrics=settings.metrics_enabled,
    )
