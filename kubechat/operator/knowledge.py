"""What a KnowledgeBase is outside Kubernetes: an index behind an alias, and an object prefix.

The operator creates the index through the same `ChunkStore` the API writes with (on
Elasticsearch in a cluster), so the mapping, the embedding pin and the alias scheme have one
definition (kubechat.stores.elasticsearch.chunks.index_body). Deleting honours deletionPolicy:
Retain leaves index, documents and catalog entries for a later KnowledgeBase of the same name;
Delete removes all three.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from kubechat.core.resources import DeletionPolicy, KnowledgeBase
from kubechat.stores.chunks import ChunkStore
from kubechat.stores.documents import DocumentCatalog
from kubechat.stores.objects import ObjectStore

logger = logging.getLogger(__name__)

# Written under the prefix so that it exists (S3 has no folders) and says whose it is.
MARKER = ".kubechat-knowledge-base.json"


@dataclass(frozen=True)
class Provisioned:
    index: str
    document_count: int
    chunk_count: int


@dataclass
class KnowledgeStores:
    chunks: ChunkStore
    objects: ObjectStore
    documents: DocumentCatalog

    async def close(self) -> None:
        await self.chunks.close()
        await self.objects.close()
        await self.documents.close()

    async def provision(self, kb: KnowledgeBase) -> Provisioned:
        """Create (or find) the index and the prefix; idempotent."""
        index = await self.chunks.ensure_index(kb)
        marker = kb.object_prefix + MARKER
        if not await self.objects.exists(marker):
            identity = {"namespace": kb.metadata.namespace, "name": kb.name, "alias": kb.index_alias}
            await self.objects.put(
                marker, json.dumps(identity).encode(), "application/json", {"knowledge-base": kb.name}
            )
        return await self.measure(kb, index)

    async def measure(self, kb: KnowledgeBase, index: str | None = None) -> Provisioned:
        counts = await self.documents.status_counts(kb.name)
        return Provisioned(
            index=index or await self.chunks.ensure_index(kb),
            document_count=sum(counts.values()),
            chunk_count=await self.chunks.count(kb),
        )

    async def remove(self, kb: KnowledgeBase) -> bool:
        """Apply the deletion policy; True when data was deleted."""
        if kb.spec.deletion_policy is DeletionPolicy.RETAIN:
            logger.info("KnowledgeBase %s deleted; its index and documents are retained", kb.name)
            return False
        await self.chunks.drop(kb)
        while page := (await self.documents.list_documents(kb.name, limit=200, cursor=None)).items:
            for document in page:
                await self.documents.delete(document.id)
        for key in await self.objects.list_keys(kb.object_prefix):
            await self.objects.delete(key)
        logger.info("KnowledgeBase %s deleted with its index, documents and objects", kb.name)
        return True
