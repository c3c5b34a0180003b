"""KnowledgeBase → an index behind an alias and an object prefix, its counts, its deletion policy.

The operator creates the index through the same `ChunkStore` the API writes with (on
Elasticsearch in a cluster), so the mapping, the embedding pin and the alias scheme have one
definition (kubechat.stores.elasticsearch.chunks.index_body). KnowledgeBases hold a finalizer,
because their data lives outside Kubernetes: deleting one honours deletionPolicy. Retain leaves
index, documents and catalog entries for a later KnowledgeBase of the same name (and needs no
store, so it never blocks); Delete removes all three.

An index keeps the settings it was created with. When spec.index asks for others (similarity,
analyzer, type, HNSW, shards) the condition `ReindexRequired` lists them; with
`reindexPolicy: Automatic` the operator also starts the full re-index that applies them, the way
`POST /knowledge-bases/{kb}/reindex` does: a new generation, recorded in the shared catalog, every
document queued again for the API replicas to ingest into it. An index Elasticsearch refuses to
create from the spec (400) is `InvalidSpec` with the server's reason, not an outage to retry.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import kopf
from pydantic import ValidationError

from kubechat.core.resources import (
    Condition,
    DeletionPolicy,
    KnowledgeBase,
    Phase,
    ReindexPolicy,
    ResourceError,
)
from kubechat.operator import status as st
from kubechat.operator.bodies import generation, parse_body, write_status
from kubechat.stores.chunks import ChunkStore, SpecDrift
from kubechat.stores.documents import DocumentCatalog
from kubechat.stores.errors import (
    BucketMissingError,
    EmbeddingMismatchError,
    InvalidIndexSpecError,
    StoreError,
    UnsupportedServerError,
)
from kubechat.stores.objects import ObjectStore

logger = logging.getLogger(__name__)

# Written under the prefix so that it exists (S3 has no folders) and says whose it is.
MARKER = ".kubechat-knowledge-base.json"


@dataclass(frozen=True)
class Provisioned:
    index: str
    document_count: int
    chunk_count: int
    drift: tuple[SpecDrift, ...] = ()  # spec.index settings the live index does not follow
    rebuilding: str | None = None  # the generation a full re-index is filling, if one is


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
            drift=tuple(await self.chunks.index_drift(kb)),
            rebuilding=(await self.documents.rebuilds()).get(kb.name),
        )

    async def start_reindex(self, kb: KnowledgeBase) -> str:
        """Start a full re-index, as the API's does (kubechat.knowledge.generations): a new
        generation built from the spec, recorded so that every replica ingests into it, and every
        document queued again; the API replicas' scans take them up and switch the alias when the
        last is done. A knowledge base without documents switches at once."""
        index = await self.chunks.create_generation(kb)
        await self.documents.set_rebuild(kb.name, index)
        await self.documents.requeue(kb.name)
        if not await self.documents.count_pending(kb.name):
            await self.chunks.activate(kb, index)
            await self.documents.set_rebuild(kb.name, None)
        logger.info("KnowledgeBase %s: re-indexing into %s to apply its spec", kb.name, index)
        return index

    async def remove(self, kb: KnowledgeBase) -> None:
        """deletionPolicy Delete: every index generation, the documents' catalog rows, the objects."""
        await self.chunks.drop(kb)
        while page := (await self.documents.list_documents(kb.name, limit=200, cursor=None)).items:
            for document in page:
                await self.documents.delete(document.id)
        for key in await self.objects.list_keys(kb.object_prefix):
            await self.objects.delete(key)
        logger.info("KnowledgeBase %s deleted with its index, documents and objects", kb.name)


REINDEX_REQUIRED = "ReindexRequired"


def _store_reason(exc: StoreError) -> str:
    if isinstance(exc, BucketMissingError):
        return "BucketMissing"
    if isinstance(exc, UnsupportedServerError):
        return "UnsupportedServer"
    return "StoreUnavailable"


class KnowledgeBaseReconciler:
    """Provisions, counts and deletes KnowledgeBases; `stores` is None when the operator has
    no Elasticsearch, or one it cannot talk to (`stores_problem` says why): they stay pending, and
    only Retain deletions go through."""

    def __init__(self, stores: KnowledgeStores | None, *, stores_problem: str | None = None) -> None:
        self.stores = stores
        self.stores_problem = stores_problem

    def _stores(self, patch: kopf.Patch | None = None, body: kopf.Body | None = None) -> KnowledgeStores:
        if self.stores is None:
            if self.stores_problem is not None:
                reason, message, phase = "UnsupportedServer", self.stores_problem, Phase.FAILED
            else:
                reason, phase = "StoresNotConfigured", Phase.PENDING
                message = (
                    "the operator has no stores: set KUBECHAT_ELASTICSEARCH_URL and KUBECHAT_S3_ENDPOINT"
                )
            if patch is not None and body is not None:
                observed = generation(body.metadata)
                conditions = [st.condition(st.READY, "False", reason, message, observed)]
                write_status(patch, body, phase, conditions, {"observedGeneration": observed})
            raise kopf.TemporaryError(message, delay=60)
        return self.stores

    async def _reindex_condition(
        self, kb: KnowledgeBase, measured: Provisioned, observed: int | None
    ) -> Condition:
        """ReindexRequired from the drift, starting the re-index first under reindexPolicy Automatic."""
        if not measured.drift:
            return st.condition(REINDEX_REQUIRED, "False", "IndexMatchesSpec", "", observed)
        drift = "; ".join(str(d) for d in measured.drift)
        rebuilding = measured.rebuilding
        if (
            rebuilding is None
            and kb.spec.reindex_policy is ReindexPolicy.AUTOMATIC
            and self.stores is not None
        ):
            rebuilding = await self.stores.start_reindex(kb)
        if rebuilding is not None:
            message = f"re-indexing into {rebuilding}, which applies: {drift}"
            return st.condition(REINDEX_REQUIRED, "True", "Reindexing", message, observed)
        message = (
            f"the live index {measured.index} was built with other settings: {drift}; re-index to apply them "
            f"(POST /knowledge-bases/{kb.name}/reindex, or spec.reindexPolicy: Automatic)"
        )
        return st.condition(REINDEX_REQUIRED, "True", "SpecChanged", message, observed)

    async def reconcile(self, body: kopf.Body, patch: kopf.Patch) -> None:
        observed = generation(body.metadata)
        try:
            kb: KnowledgeBase = parse_body(KnowledgeBase, body)
        except (ResourceError, ValidationError) as exc:
            phase, conditions = st.invalid(str(exc), observed)
            write_status(patch, body, phase, conditions, {"observedGeneration": observed})
            raise kopf.PermanentError(f"invalid KnowledgeBase: {exc}") from exc
        base = {"observedGeneration": observed, "alias": kb.index_alias, "objectPrefix": kb.object_prefix}
        try:
            provisioned = await self._stores(patch, body).provision(kb)
            reindex = await self._reindex_condition(kb, provisioned, observed)
        except InvalidIndexSpecError as exc:
            phase, conditions = st.invalid(str(exc), observed)
            write_status(patch, body, phase, conditions, base)
            raise kopf.PermanentError(str(exc)) from exc
        except EmbeddingMismatchError as exc:
            conditions = [
                st.condition(st.READY, "False", "EmbeddingMismatch", str(exc), observed),
                st.condition(st.DEGRADED, "True", "EmbeddingMismatch", str(exc), observed),
            ]
            write_status(patch, body, Phase.FAILED, conditions, base)
            raise kopf.PermanentError(str(exc)) from exc
        except StoreError as exc:
            reason = _store_reason(exc)
            conditions = [
                st.condition(st.READY, "False", reason, str(exc), observed),
                st.condition(st.DEGRADED, "True", reason, str(exc), observed),
            ]
            write_status(patch, body, Phase.DEGRADED, conditions, base)
            raise kopf.TemporaryError(f"knowledge-base stores: {exc}", delay=30) from exc
        conditions = [
            st.condition(
                st.READY, "True", "IndexReady", f"alias {kb.index_alias} → {provisioned.index}", observed
            ),
            st.condition(st.DEGRADED, "False", "AsExpected", "", observed),
            reindex,
        ]
        extra = {
            **base,
            "index": provisioned.index,
            "documentCount": provisioned.document_count,
            "chunkCount": provisioned.chunk_count,
        }
        write_status(patch, body, Phase.READY, conditions, extra)

    async def count(self, body: kopf.Body, patch: kopf.Patch) -> None:
        """Refresh the counts of a ready knowledge base (its reconcile handles everything else)."""
        if body.get("status", {}).get("phase") != Phase.READY or self.stores is None:
            return
        try:
            kb: KnowledgeBase = parse_body(KnowledgeBase, body)
            measured = await self.stores.measure(kb)
            # A re-index finishes in the API: the drift it applied goes from here.
            reindex = await self._reindex_condition(kb, measured, generation(body.metadata))
        except (ResourceError, ValidationError):
            return
        except StoreError as exc:
            logger.warning("KnowledgeBase %s: counting failed: %s", body.metadata.name, exc)
            return
        patch.status["documentCount"] = measured.document_count
        patch.status["chunkCount"] = measured.chunk_count
        patch.status["index"] = measured.index
        current = body.get("status", {}).get("conditions") or []
        previous = next((c for c in current if c.get("type") == REINDEX_REQUIRED), None)
        if previous is None or (previous.get("status"), previous.get("message")) != (
            reindex.status,
            reindex.message,
        ):
            patch.status["conditions"] = st.merge_conditions(current, [reindex])

    async def delete(self, body: kopf.Body, patch: kopf.Patch) -> None:
        try:
            kb: KnowledgeBase = parse_body(KnowledgeBase, body)
        except (ResourceError, ValidationError):
            return  # never provisioned: nothing outside Kubernetes to remove
        patch.status["phase"] = str(Phase.DELETING)
        if kb.spec.deletion_policy is DeletionPolicy.RETAIN:
            logger.info("KnowledgeBase %s deleted; its index and documents are retained", kb.name)
            return  # nothing to do outside Kubernetes, stores or not
        try:
            await self._stores().remove(kb)
        except StoreError as exc:
            raise kopf.TemporaryError(f"deleting knowledge base {kb.name}: {exc}", delay=30) from exc
