"""Run the operator: `kubechat operator` in its pod, or in-process for tests and benchmarks.

Opens what the handlers need (the Kubernetes API client, the knowledge-base stores), fills a
kopf registry (`kubechat.operator.main`), and runs kopf beside the ChatModel resync loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

import kopf
from kubernetes_asyncio import client, config
from prometheus_client import start_http_server

from kubechat.core.logs import configure_logging
from kubechat.core.settings import StoreSettings
from kubechat.core.tracing import configure_tracing
from kubechat.operator import metrics
from kubechat.operator.chat_models import ChatModelReconciler
from kubechat.operator.knowledge_bases import KnowledgeBaseReconciler, KnowledgeStores
from kubechat.operator.kube import Kube
from kubechat.operator.main import register, register_login
from kubechat.operator.settings import OperatorSettings
from kubechat.stores.errors import UnsupportedServerError
from kubechat.stores.open import Stores
from kubechat.stores.open import open_stores as open_process_stores

logger = logging.getLogger(__name__)


async def api_client(server: str | None = None) -> client.ApiClient:
    """A client for `server` (tests), else the pod's service account, else the kubeconfig."""
    if server is not None:
        return client.ApiClient(client.Configuration(host=server))
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped in the stubs
    else:
        await config.load_kube_config()
    return client.ApiClient()


@dataclass
class _OpenedStores(KnowledgeStores):
    """The stores this process opened: closing them closes their one Elasticsearch client too."""

    opened: Stores

    async def close(self) -> None:
        await self.opened.close()


async def open_stores(settings: StoreSettings) -> KnowledgeStores | None:
    """The cluster's stores, opened as the API's are (one client); None when Elasticsearch is not set."""
    if not settings.elasticsearch_url:
        logger.warning("KUBECHAT_ELASTICSEARCH_URL is not set: KnowledgeBases stay pending")
        return None
    opened = await open_process_stores(settings)
    return _OpenedStores(opened.chunks, opened.objects, opened.documents, opened)


async def run(
    settings: OperatorSettings,
    *,
    server: str | None = None,
    stores: KnowledgeStores | None = None,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    liveness_endpoint: str | None = None,
    one_namespace: bool = True,
) -> None:
    """Reconcile until `stop_flag` is set (or the task is cancelled).

    With knowledge-base stores, `one_namespace` insists on KUBECHAT_OPERATOR_NAMESPACE; the
    kmock tests turn it off (kmock cannot serve the namespace observation kopf runs then).
    """
    stores_problem = None
    if stores is None:
        try:
            stores = await open_stores(StoreSettings())
        except UnsupportedServerError as exc:
            # KnowledgeBases say why in their status; ChatModels need no store and carry on.
            logger.error("knowledge-base stores unusable: %s", exc)
            stores_problem = str(exc)
    if one_namespace and stores is not None and not settings.namespace:
        # The document catalog is keyed by knowledge-base name: two namespaces' "docs" would
        # share counts, and deleting one with deletionPolicy Delete would remove the other's rows.
        await stores.close()
        raise SystemExit("KUBECHAT_OPERATOR_NAMESPACE must name the one namespace this installation serves")
    api = await api_client(server)
    registry = kopf.OperatorRegistry()
    chat_models = ChatModelReconciler(settings, Kube(api))
    knowledge_bases = KnowledgeBaseReconciler(stores, stores_problem=stores_problem)
    register(registry, chat_models, knowledge_bases, count_interval_s=settings.count_interval_s)
    register_login(registry, server)

    resync = asyncio.create_task(chat_models.resync_forever())
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=not settings.namespace,
            namespaces=[settings.namespace] if settings.namespace else [],
            standalone=True,  # one replica (Recreate); kopf's peering would need its own CRDs
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            liveness_endpoint=liveness_endpoint,
        )
    finally:
        resync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await resync
        await api.close()
        if stores is not None:
            await stores.close()


def main(liveness_endpoint: str = "http://0.0.0.0:8080/healthz") -> None:
    settings = OperatorSettings()
    configure_logging(settings.log_format, settings.log_level)
    configure_tracing("kubechat-operator")
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, "0.0.0.0", registry=metrics.REGISTRY)
        logger.info("metrics on http://0.0.0.0:%d/metrics", settings.metrics_port)
    asyncio.run(run(settings, liveness_endpoint=liveness_endpoint))
