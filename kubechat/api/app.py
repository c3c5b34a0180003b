"""The FastAPI application factory and its lifespan (clients opened once, closed on exit)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from kubechat import __version__
from kubechat.api.catalog import ModelCatalog, load_catalog
from kubechat.api.chat import ChatService
from kubechat.api.cluster import ClusterDiscovery, load_kubernetes_configuration
from kubechat.api.dependencies import Services
from kubechat.api.errors import ErrorBody, KubechatError, StorageUnavailableError
from kubechat.api.history import SQLiteHistoryStore
from kubechat.api.routers import (
    chat_socket,
    health,
    images,
    knowledge_bases,
    models,
    openai_compat,
    sessions,
)
from kubechat.api.settings import Discovery, Settings, get_settings
from kubechat.api.triton import TritonRouter
from kubechat.api.vision import VisionService
from kubechat.images.service import ImageService
from kubechat.rag.stores import StoreError
from kubechat.rag.wiring import close_knowledge_stores, open_knowledge_service

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cluster = settings.discovery is Discovery.KUBERNETES
        # First: without credentials for the Kubernetes API, cluster mode cannot start at all.
        kubernetes = await load_kubernetes_configuration() if cluster else None
        if cluster:
            # Filled and kept up to date by discovery; each model on its own Triton.
            catalog = ModelCatalog([], settings.default_model)
            triton = TritonRouter(None, settings.triton_timeout_s)
        else:
            catalog = load_catalog(settings.models_dir, settings.state_dir, settings.default_model)
            triton = TritonRouter(settings.triton_url, settings.triton_timeout_s)
        store = await SQLiteHistoryStore.open(settings.history_database())
        knowledge = await open_knowledge_service(settings, catalog, triton)
        # Images share the documents' object store (STATE_DIR/documents, or the MinIO bucket).
        image_service = ImageService(knowledge.objects, settings.image_limits())
        vision = VisionService(catalog, triton, image_service, settings.vision_model)
        discovery = None
        if kubernetes is not None:
            namespace, tokenizers = settings.namespace(), settings.cluster_tokenizers_dir()
            discovery = ClusterDiscovery(kubernetes, namespace, catalog, triton, knowledge, tokenizers)
        keys = settings.principals_by_key()
        if not keys:
            logger.warning("no KUBECHAT_API_KEYS: every request acts as %r", settings.local_principal)
        app.state.services = Services(
            settings=settings,
            catalog=catalog,
            store=store,
            triton=triton,
            chat=ChatService(settings, catalog, store, triton, knowledge, vision),
            knowledge=knowledge,
            images=image_service,
            vision=vision,
            principals_by_key=keys,
            discovery=discovery,
        )
        await knowledge.start()
        if discovery is not None:
            # Serving starts at once; /ready waits for the first lists.
            discovery.start()
            logger.info("kubechat API up: discovering resources in namespace %s", discovery.namespace)
        else:
            logger.info("kubechat API up: models %s, Triton at %s", catalog.names(), settings.triton_url)
        try:
            yield
        finally:
            if discovery is not None:
                await discovery.stop()
            await knowledge.stop()
            await close_knowledge_stores(knowledge)
            await triton.close()
            await store.close()

    app = FastAPI(title="kubechat", version=__version__, lifespan=lifespan)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )

    @app.exception_handler(KubechatError)
    async def kubechat_error(_request: Request, exc: KubechatError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.body().model_dump()}, status_code=exc.status, headers=headers)

    @app.exception_handler(StoreError)
    async def store_error(_request: Request, exc: StoreError) -> JSONResponse:
        # Every store call that is not wrapped where it happens still gets the one error shape.
        logger.warning("store failure: %s", exc)
        body = StorageUnavailableError(f"a store failed: {exc}").body()
        return JSONResponse({"error": body.model_dump()}, status_code=StorageUnavailableError.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        body = ErrorBody(code="invalid_request", message=f"{where}: {first['msg']}")
        return JSONResponse({"error": body.model_dump()}, status_code=422)

    for router in (
        health.router,
        models.router,
        sessions.router,
        chat_socket.router,
        openai_compat.router,
        knowledge_bases.router,
        images.router,
    ):
        app.include_router(router)
    return app
