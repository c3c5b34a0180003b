"""Which stores back the knowledge bases: embedded ones under STATE_DIR, or the cluster's.

Elasticsearch (chunks and the document catalog) when KUBECHAT_ELASTICSEARCH_URL is set, MinIO
when KUBECHAT_S3_ENDPOINT is;
credentials come only from the environment (in a cluster, from Kubernetes Secrets).
"""

from __future__ import annotations

from typing import TypedDict

from kubechat.api.catalog import ModelCatalog
from kubechat.api.settings import Discovery, Settings
from kubechat.api.triton import TritonInference
from kubechat.rag.documents import DocumentCatalog, SQLiteDocumentCatalog
from kubechat.rag.elasticsearch_documents import open_catalog
from kubechat.rag.elasticsearch_store import connect
from kubechat.rag.objects import FileObjectStore, S3ObjectStore
from kubechat.rag.service import KnowledgeService
from kubechat.rag.sqlite_store import SQLiteChunkStore
from kubechat.rag.stores import ChunkStore, ObjectStore
from kubechat.resources import load_knowledge_bases_from_dir


def _secret(value: object) -> str | None:
    get = getattr(value, "get_secret_value", None)
    return str(get()) if callable(get) else None


async def open_object_store(settings: Settings) -> ObjectStore:
    if not settings.s3_endpoint:
        return FileObjectStore(settings.state_dir / "documents")
    access, secret = _secret(settings.s3_access_key), _secret(settings.s3_secret_key)
    if not access or not secret:
        raise ValueError("KUBECHAT_S3_ENDPOINT needs KUBECHAT_S3_ACCESS_KEY and KUBECHAT_S3_SECRET_KEY")
    store = S3ObjectStore(
        endpoint=settings.s3_endpoint, access_key=access, secret_key=secret, bucket=settings.s3_bucket,
        secure=settings.s3_secure, region=settings.s3_region or None,
    )  # fmt: skip
    await store.ensure_bucket()
    return store


class ElasticsearchCredentials(TypedDict):
    api_key: str | None
    username: str | None
    password: str | None
    ca_certs: str | None


def elasticsearch_credentials(settings: Settings) -> ElasticsearchCredentials:
    """The keyword arguments of new_client, open_catalog and open_history (chat history uses them too)."""
    return ElasticsearchCredentials(
        api_key=_secret(settings.elasticsearch_api_key),
        username=settings.elasticsearch_username or None,
        password=_secret(settings.elasticsearch_password),
        ca_certs=settings.elasticsearch_ca_certs or None,
    )


async def open_chunk_store(settings: Settings) -> ChunkStore:
    if not settings.elasticsearch_url:
        return await SQLiteChunkStore.open(settings.state_dir / "chunks.sqlite3")
    return connect(settings.elasticsearch_url, **elasticsearch_credentials(settings))


async def open_document_catalog(settings: Settings) -> DocumentCatalog:
    """Shared by every API replica in a cluster (Elasticsearch), on disk when embedded."""
    if not settings.elasticsearch_url:
        return await SQLiteDocumentCatalog.open(settings.state_dir / "documents.sqlite3")
    return await open_catalog(
        settings.elasticsearch_url,
        index=settings.elasticsearch_documents_index,
        **elasticsearch_credentials(settings),
    )


async def open_knowledge_service(
    settings: Settings, models: ModelCatalog, triton: TritonInference
) -> KnowledgeService:
    """Files mode: the KnowledgeBase YAML files. Cluster mode: none at first; discovery adds the
    namespace's KnowledgeBase resources as it lists and watches them."""
    cluster = settings.discovery is Discovery.KUBERNETES
    return KnowledgeService(
        [] if cluster else load_knowledge_bases_from_dir(settings.knowledge_bases_dir),
        models,
        await open_document_catalog(settings),
        await open_object_store(settings),
        await open_chunk_store(settings),
        triton,
        workers=settings.ingest_workers,
        max_files=settings.max_upload_files,
        dynamic=cluster,
        image_limits=settings.image_limits(),
        vision_model=settings.vision_model,
    )


async def close_knowledge_stores(service: KnowledgeService) -> None:
    await service.documents.close()
    await service.objects.close()
    await service.chunks.close()
