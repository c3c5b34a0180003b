"""Which stores a process uses: the embedded ones under STATE_DIR, or the cluster's.

Elasticsearch (chunks, the document catalog, chat history) when KUBECHAT_ELASTICSEARCH_URL is
set, MinIO when KUBECHAT_S3_ENDPOINT is; credentials come only from the environment (in a
cluster, from Kubernetes Secrets).
"""

from __future__ import annotations

from kubechat.core.settings import StoreSettings
from kubechat.stores.chunks import ChunkStore
from kubechat.stores.documents import DocumentCatalog
from kubechat.stores.elasticsearch.chunks import connect
from kubechat.stores.elasticsearch.documents import open_catalog
from kubechat.stores.elasticsearch.history import open_history
from kubechat.stores.history import HistoryStore
from kubechat.stores.objects import ObjectStore
from kubechat.stores.objects.files import FileObjectStore
from kubechat.stores.objects.s3 import S3ObjectStore
from kubechat.stores.sqlite.chunks import SQLiteChunkStore
from kubechat.stores.sqlite.documents import SQLiteDocumentCatalog
from kubechat.stores.sqlite.history import SQLiteHistoryStore


async def open_object_store(settings: StoreSettings) -> ObjectStore:
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


async def open_chunk_store(settings: StoreSettings) -> ChunkStore:
    if not settings.elasticsearch_url:
        return await SQLiteChunkStore.open(settings.state_dir / "chunks.sqlite3")
    return connect(settings.elasticsearch_url, **settings.elasticsearch_credentials())


async def open_document_catalog(settings: StoreSettings) -> DocumentCatalog:
    """Shared by every API replica in a cluster (Elasticsearch), on disk when embedded."""
    if not settings.elasticsearch_url:
        return await SQLiteDocumentCatalog.open(settings.state_dir / "documents.sqlite3")
    return await open_catalog(
        settings.elasticsearch_url,
        index=settings.elasticsearch_documents_index,
        **settings.elasticsearch_credentials(),
    )


async def open_history_store(settings: StoreSettings) -> HistoryStore:
    """Shared by every API replica in a cluster (Elasticsearch), SQLite in STATE_DIR when embedded."""
    if not settings.elasticsearch_url:
        return await SQLiteHistoryStore.open(settings.history_database())
    return await open_history(
        settings.elasticsearch_url,
        index=settings.elasticsearch_history_index,
        **settings.elasticsearch_credentials(),
    )
