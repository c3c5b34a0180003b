"""Which stores a process uses: the embedded ones under STATE_DIR, or the cluster's.

Elasticsearch (chunks, the document catalog, chat history) when KUBECHAT_ELASTICSEARCH_URL is
set, MinIO when KUBECHAT_S3_ENDPOINT is; credentials come only from the environment (in a
cluster, from Kubernetes Secrets). In a cluster the three Elasticsearch stores share one client,
so a process keeps one connection pool: `open_stores` makes it, and `Stores.close` closes it
once, after the stores (which never close it themselves).
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from elasticsearch import AsyncElasticsearch

from kubechat.core.settings import StoreSettings
from kubechat.stores.chunks import ChunkStore
from kubechat.stores.documents import DocumentCatalog
from kubechat.stores.elasticsearch.chunks import ElasticsearchChunkStore
from kubechat.stores.elasticsearch.client import check_server, new_client
from kubechat.stores.elasticsearch.documents import ElasticsearchDocumentCatalog
from kubechat.stores.elasticsearch.history import ElasticsearchHistoryStore
from kubechat.stores.history import HistoryStore
from kubechat.stores.objects import ObjectStore
from kubechat.stores.objects.files import FileObjectStore
from kubechat.stores.objects.s3 import S3ObjectStore
from kubechat.stores.sqlite.chunks import SQLiteChunkStore
from kubechat.stores.sqlite.documents import SQLiteDocumentCatalog
from kubechat.stores.sqlite.history import SQLiteHistoryStore

logger = logging.getLogger(__name__)


class Stores:
    """The stores of one process, closed together by `close`.

    The document catalog, the object store and the chunk store are opened with it; the chat
    history only by `open_history`, as only the API keeps one (the operator does not).
    """

    def __init__(
        self,
        settings: StoreSettings,
        elasticsearch: AsyncElasticsearch | None,
        documents: DocumentCatalog,
        objects: ObjectStore,
        chunks: ChunkStore,
        closing: AsyncExitStack,
    ) -> None:
        self._settings = settings
        self.elasticsearch = elasticsearch  # None when embedded
        self.documents = documents
        self.objects = objects
        self.chunks = chunks
        self._closing = closing

    async def open_history(self) -> HistoryStore:
        """The chat history: shared by every API replica in a cluster, SQLite when embedded."""
        store: HistoryStore
        if self.elasticsearch is None:
            store = await SQLiteHistoryStore.open(self._settings.history_database())
        else:
            store = ElasticsearchHistoryStore(self.elasticsearch, self._settings.elasticsearch_history_index)
            await store.ensure_index()
        self._closing.push_async_callback(store.close)
        return store

    async def close(self) -> None:
        """Close every store, then the Elasticsearch client they shared."""
        await self._closing.aclose()


async def open_stores(settings: StoreSettings) -> Stores:
    """The process's stores: one Elasticsearch client for all when the cluster's are configured.

    Raises UnsupportedServerError when that cluster is a version kubechat cannot talk to, and
    StoreError (or StoreUnavailableError) when a store cannot be opened.
    """
    closing = AsyncExitStack()
    try:
        elasticsearch = None
        if settings.elasticsearch_url:
            elasticsearch = new_client(settings.elasticsearch_url, **settings.elasticsearch_credentials())
            # First in, so last out: after every store that uses it.
            closing.push_async_callback(elasticsearch.close)
            # Before any store touches it: a server of another major would refuse every request
            # with an error that does not say so (UnsupportedServerError does).
            version = await check_server(elasticsearch)
            logger.info("Elasticsearch %s", version)
        documents = await _open_document_catalog(settings, elasticsearch)
        closing.push_async_callback(documents.close)
        objects = await _open_object_store(settings)
        closing.push_async_callback(objects.close)
        chunks = await _open_chunk_store(settings, elasticsearch)
        closing.push_async_callback(chunks.close)
    except BaseException:
        await closing.aclose()
        raise
    return Stores(settings, elasticsearch, documents, objects, chunks, closing)


async def _open_document_catalog(
    settings: StoreSettings, elasticsearch: AsyncElasticsearch | None
) -> DocumentCatalog:
    """Shared by every API replica in a cluster (Elasticsearch), on disk when embedded."""
    if elasticsearch is None:
        return await SQLiteDocumentCatalog.open(settings.state_dir / "documents.sqlite3")
    catalog = ElasticsearchDocumentCatalog(elasticsearch, settings.elasticsearch_documents_index)
    await catalog.ensure_index()
    return catalog


async def _open_object_store(settings: StoreSettings) -> ObjectStore:
    if not settings.s3_endpoint:
        return FileObjectStore(settings.state_dir / "documents")
    access, secret = settings.s3_access_key, settings.s3_secret_key
    if access is None or secret is None or not access.get_secret_value() or not secret.get_secret_value():
        raise ValueError("KUBECHAT_S3_ENDPOINT needs KUBECHAT_S3_ACCESS_KEY and KUBECHAT_S3_SECRET_KEY")
    store = S3ObjectStore(
        endpoint=settings.s3_endpoint, access_key=access.get_secret_value(),
        secret_key=secret.get_secret_value(), bucket=settings.s3_bucket, secure=settings.s3_secure,
        region=settings.s3_region or None,
    )  # fmt: skip
    await store.ensure_bucket()
    return store


async def _open_chunk_store(settings: StoreSettings, elasticsearch: AsyncElasticsearch | None) -> ChunkStore:
    if elasticsearch is None:
        return await SQLiteChunkStore.open(settings.state_dir / "chunks.sqlite3")
    return ElasticsearchChunkStore(elasticsearch)
