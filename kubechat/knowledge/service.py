"""Knowledge bases as the API serves them: the one entry point of the routers, the chat
service, the MCP server and cluster discovery.

Each concern has its own module; this façade wires them and runs their life cycle:

- `registry`: the knowledge bases, who may read or change each, whether it is usable and why not;
- `uploads`: checks, image normalization, storing the bytes and the `queued` row;
- `ingestion`: the leased queue shared by replicas (claim, lease renewal, fencing, retry timers);
- `pipeline`: parse → chunk → embed → index of one document;
- `generations`: the live index (and who creates it), full re-index generations;
- `retrieval`: hybrid search and fusion.

Nothing acknowledged is lost: an upload is stored before it is acknowledged, every ingestion
step is persisted, and rows left unfinished by a crash or a shutdown are picked up again at the
next start (or by another replica's scan). The set of knowledge bases is fixed in files mode; in
cluster mode discovery adds, updates and removes them while the service runs (`put`,
`remove`), and documents of a knowledge base this replica does not know (yet, or any more)
wait for it instead of failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from kubechat.catalog import ModelCatalog
from kubechat.core.errors import InvalidRequestError, StorageUnavailableError
from kubechat.core.resources import KnowledgeBase
from kubechat.images.processing import DEFAULT_IMAGE_LIMITS, ImageLimits
from kubechat.knowledge.attribution import SentenceSources, attribute
from kubechat.knowledge.generations import IndexGenerations
from kubechat.knowledge.inference import KnowledgeInference
from kubechat.knowledge.ingestion import Claim, IngestionQueue
from kubechat.knowledge.pipeline import IngestionPipeline
from kubechat.knowledge.registry import KnowledgeBaseRegistry
from kubechat.knowledge.retrieval import Citation, HybridSearch
from kubechat.knowledge.uploads import Upload, UploadIntake, UploadOutcome
from kubechat.stores.chunks import ChunkStore
from kubechat.stores.documents import Document, DocumentCatalog, DocumentStatus
from kubechat.stores.errors import StoreError
from kubechat.stores.objects import ObjectStore

logger = logging.getLogger(__name__)

SCAN_INTERVAL_S = 15.0  # how often pending documents without a live lease are looked for


class KnowledgeService:
    def __init__(
        self,
        knowledge_bases: Sequence[KnowledgeBase],
        models: ModelCatalog,
        documents: DocumentCatalog,
        objects: ObjectStore,
        chunks: ChunkStore,
        triton: KnowledgeInference,
        *,
        workers: int = 2,
        max_files: int = 20,
        dynamic: bool = False,
        creates_indices: bool = True,
        image_limits: ImageLimits = DEFAULT_IMAGE_LIMITS,
        vision_model: str = "",
        min_score: float = 0.0,
    ) -> None:
        """`dynamic`: knowledge bases come and go at run time (cluster discovery), so a document
        of an unknown one is left pending for when it is declared again rather than failed.
        `creates_indices`: False where the operator creates the knowledge bases' indices (a
        cluster with Elasticsearch); this service then only looks them up. Image documents are
        normalized within `image_limits` (bytes: the knowledge base's own limit) and described
        by `vision_model` (empty: the first model with that capability). `min_score` is the
        relevance floor of knowledge bases that set none (HybridSearch)."""
        self.documents = documents
        self.objects = objects
        self.chunks = chunks
        self.max_files = max_files
        self.generations = IndexGenerations(chunks, documents, creates_indices=creates_indices)
        self.registry = KnowledgeBaseRegistry(knowledge_bases, models, self.generations, dynamic=dynamic)
        self.intake = UploadIntake(objects, documents, image_limits)
        self.pipeline = IngestionPipeline(
            models, documents, objects, chunks, triton, self.generations, vision_model=vision_model
        )
        self.ingestion = IngestionQueue(documents, self._ingest, workers=workers)
        self.retrieval = HybridSearch(chunks, triton, min_score=min_score, reranker=triton)
        self.embedder = triton
        self._started = False
        self._scanning: asyncio.Task[None] | None = None

    @property
    def worker_id(self) -> str:
        return self.ingestion.worker_id

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._started = True
        for kb in self.registry.all():
            await self.registry.check(kb)
        await self._scan()
        for kb in self.registry.all():
            await self._finish_rebuild(kb)  # the last document may have finished just before a crash
        if self.ingestion.queued:
            logger.info("resuming ingestion of %d documents", self.ingestion.queued)
        self.ingestion.start()
        self._scanning = asyncio.create_task(self._scan_forever(), name="ingest-scan")

    async def stop(self) -> None:
        """Stop working; unfinished documents stay pending and resume at the next start."""
        self._started = False
        if self._scanning is not None:
            self._scanning.cancel()
            await asyncio.gather(self._scanning, return_exceptions=True)
        await self.ingestion.stop()

    async def _scan(self) -> None:
        """Queue pending documents nobody is working on: left by a crash, or by another replica."""
        registry = self.registry
        # In cluster mode a document of an unknown knowledge base waits for it to be declared.
        await self.ingestion.scan(
            lambda d: not registry.dynamic or registry.find(d.knowledge_base) is not None
        )

    async def _scan_forever(self) -> None:
        while True:
            await asyncio.sleep(SCAN_INTERVAL_S)
            try:
                await self._scan()
                for kb in self.registry.all():
                    await self._finish_rebuild(kb)
                for kb in self.registry.unavailable():
                    await self.registry.check(kb)  # the cause may be gone (the operator's index made)
            except StoreError as exc:
                logger.warning("could not look for pending documents: %s", exc)

    async def _ingest(self, claim: Claim) -> None:
        kb = self.registry.find(claim.document.knowledge_base)
        if kb is None:
            if not self.registry.dynamic:
                await claim.fail("knowledge_base_not_found", "its knowledge base is not defined")
            return  # cluster mode: released, picked up again if the knowledge base comes back
        await self.pipeline.ingest(kb, claim)
        await self._finish_rebuild(kb)

    async def _finish_rebuild(self, kb: KnowledgeBase) -> None:
        if await self.generations.finish(kb):
            self.registry.mark_available(kb.name)

    # -- run-time changes (cluster discovery) ---------------------------------------------

    async def put(self, kb: KnowledgeBase) -> None:
        """Add a knowledge base, or replace one of the same name with its newer version.

        spec.embedding is immutable (the CRD refuses changes): a version that changes it is
        refused here too, since the index pins its vectors. Other spec changes apply to what is
        ingested from now on; a re-index applies them to every document. A status update of an
        unavailable knowledge base checks it again: the operator reports so when it has created
        the index.
        """
        previous = self.registry.find(kb.name)
        if previous is not None and previous.spec.embedding != kb.spec.embedding:
            logger.error(
                "knowledge base %s: spec.embedding cannot change (%s -> %s); keeping the previous version",
                kb.name, previous.spec.embedding.model, kb.spec.embedding.model,
            )  # fmt: skip
            return
        self.registry.add(kb)
        if not self._started:
            return  # start() checks every knowledge base
        if previous is not None and previous.spec == kb.spec:
            if self.registry.unavailable_reason(kb.name) is not None:
                await self.registry.check(kb)
            return
        await self.registry.check(kb)
        if previous is None:
            await self._scan()  # its documents left pending by a crash or while it was gone
            await self._finish_rebuild(kb)

    async def remove(self, name: str) -> None:
        """Forget a knowledge base: its ingestions stop (their documents stay pending, not
        failed, with nothing written past the stop) and it is no longer listed or searched.
        Its index, documents and catalog rows are the operator's (deletionPolicy)."""
        if not self.registry.remove(name):
            return
        stopped = await self.ingestion.cancel_knowledge_base(name)
        if stopped:
            logger.info("knowledge base %s removed: stopped ingesting %d documents", name, stopped)

    async def reopen_embedder_users(self, model: str) -> None:
        """Re-check the knowledge bases embedding with `model` after it was added, changed or
        removed: whether they are usable depends on it."""
        if not self._started:
            return
        for kb in [kb for kb in self.registry.all() if kb.spec.embedding.model == model]:
            await self.registry.check(kb)

    # -- access ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        return self.registry.names()

    def names_readable(self, principal: str) -> list[str]:
        return [kb.name for kb in self.readable(principal)]

    def readable(self, principal: str) -> list[KnowledgeBase]:
        return self.registry.readable(principal)

    def get(self, name: str, principal: str, *, write: bool = False) -> KnowledgeBase:
        return self.registry.get(name, principal, write=write)

    def unavailable_reason(self, name: str) -> str | None:
        return self.registry.unavailable_reason(name)

    async def chunk_count(self, kb: KnowledgeBase) -> int | None:
        try:
            return await self.chunks.count(kb)
        except StoreError:
            return None

    # -- documents ------------------------------------------------------------------------

    async def upload(self, kb_name: str, principal: str, uploads: Sequence[Upload]) -> list[UploadOutcome]:
        kb = self.registry.get(kb_name, principal, write=True)
        if not uploads:
            raise InvalidRequestError("no files: send one or more multipart parts named `files`")
        if len(uploads) > self.max_files:
            raise InvalidRequestError(f"{len(uploads)} files in one request; the limit is {self.max_files}")
        await self.registry.require_usable(kb)
        return await self.intake.accept(kb, principal, uploads, self.ingestion.enqueue)

    async def delete_document(self, kb_name: str, principal: str, document_id: str) -> None:
        """Tombstone first (no worker anywhere may claim or keep ingesting it), then remove its
        chunks and bytes, then the row: a failure part-way leaves a row to delete again."""
        kb = self.registry.get(kb_name, principal, write=True)
        document = await self.documents.get(kb.name, document_id)
        await self.documents.update(document.id, DocumentStatus.DELETING)
        await self.ingestion.cancel(document.id)
        await self.generations.remove_document(kb, document.id)
        try:
            await self.objects.delete(document.object_key)
        except StoreError as exc:
            raise StorageUnavailableError(f"could not delete document {document.id}: {exc}") from exc
        await self.documents.delete(document.id)
        await self._finish_rebuild(kb)  # it may have been the last one the rebuild waited for

    async def reindex_document(self, kb_name: str, principal: str, document_id: str) -> Document:
        kb = self.registry.get(kb_name, principal, write=True)
        document = await self.documents.get(kb.name, document_id)
        await self.registry.require_usable(kb)
        await self.ingestion.cancel(document.id)
        await self.documents.requeue(kb.name, [document.id])
        self.ingestion.enqueue(document.id)
        return await self.documents.get(kb.name, document.id)

    async def reindex(self, kb_name: str, principal: str) -> int:
        """Rebuild the whole knowledge base into a new index generation, then switch to it.

        Readers keep the current generation until every document is in the new one; this is
        also how a knowledge base moves to another embedding model or chunking.
        """
        kb = self.registry.get(kb_name, principal, write=True)
        # Recorded before requeueing: from here on every ingestion (on any replica) writes to
        # the new generation, and the new epoch stops those that started before.
        await self.generations.start_rebuild(kb)
        self.registry.mark_available(kb.name)
        count = await self.documents.requeue(kb.name)
        for document in await self.documents.pending():
            if document.knowledge_base == kb.name:
                self.ingestion.enqueue(document.id)
        await self._finish_rebuild(kb)
        return count

    # -- retrieval ------------------------------------------------------------------------

    async def attribute(
        self, principal: str, answer: str, sources: Sequence[Citation]
    ) -> list[SentenceSources]:
        """Each sentence of `answer` with the `sources` that support it, compared with the embedder
        of the sources' knowledge bases (the first one's, when they were embedded by several)."""
        if not sources:
            return []
        models = [
            self.registry.get(name, principal).spec.embedding.model
            for name in {s.knowledge_base for s in sources}
        ]
        model = models[0]
        same = [
            s for s in sources if self.registry.get(s.knowledge_base, principal).spec.embedding.model == model
        ]
        return await attribute(self.embedder, model, answer, same)

    async def search(
        self,
        principal: str,
        kb_names: Sequence[str],
        query: str,
        *,
        limit: int,
        candidates: int,
        document_ids: Sequence[str] | None = None,
    ) -> list[Citation]:
        """Hybrid search over the named knowledge bases (all must be readable and usable); [] when
        none holds anything above its relevance floor."""
        kbs = [self.registry.get(name, principal) for name in dict.fromkeys(kb_names)]
        for kb in kbs:
            await self.registry.require_usable(kb)
        return await self.retrieval.search(
            kbs, query, limit=limit, candidates=candidates, document_ids=document_ids
        )
