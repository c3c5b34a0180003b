"""Knowledge bases as the API serves them: access checks, uploads, ingestion jobs, retrieval.

Upload: every file is checked (size, type, content) before anything is stored; then its bytes
go to the object store, then a `queued` row to the catalog, and only then is the request
acknowledged. Ingestion workers (asyncio tasks of this process) parse, chunk, embed in batches
through the Triton embedder and index; each step is persisted, and rows left unfinished by a
crash or a shutdown are picked up again at the next start. Transient failures (Triton or a
store unreachable) are retried with capped back-off; bad documents fail with a reason.

The set of knowledge bases is fixed in files mode; in cluster mode discovery adds, updates and
removes them while the service runs (`put`, `remove`), and documents of a knowledge base this
replica does not know (yet, or any more) wait for it instead of failing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from kubechat.catalog import ModelCatalog
from kubechat.core.errors import (
    DecompressionBombError,
    DocumentTooLargeError,
    EmptyDocumentError,
    ForbiddenError,
    InvalidRequestError,
    KnowledgeBaseNotFoundError,
    KnowledgeBaseUnavailableError,
    KubechatError,
    ModelUnavailableError,
    StorageUnavailableError,
    UnsupportedDocumentTypeError,
)
from kubechat.core.resources import Capability, KnowledgeBase
from kubechat.images.processing import DEFAULT_IMAGE_LIMITS, ImageLimits, prepare_image
from kubechat.images.vision import TRANSCRIBE_PROMPT, find_vision_model
from kubechat.knowledge import parsing
from kubechat.knowledge.chunking import TextChunk, chunk_sections
from kubechat.knowledge.retrieval import Citation, citations, reciprocal_rank_fusion
from kubechat.stores.chunks import ChunkRecord, ChunkStore, RankedChunk, Vector
from kubechat.stores.documents import PENDING, Document, DocumentCatalog, DocumentStatus
from kubechat.stores.errors import (
    EmbeddingMismatchError,
    ObjectNotFoundError,
    StoreError,
    StoreUnavailableError,
)
from kubechat.stores.objects import ObjectStore, check_key
from kubechat.triton.client import TritonInference

logger = logging.getLogger(__name__)

MAX_NAME_BYTES = 255
RETRY_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # then every 30 s: an acknowledged upload is never dropped
LEASE_S = 60.0  # a worker that stops renewing (crashed replica) loses its documents after this
SCAN_INTERVAL_S = 15.0
PROGRESS_INTERVAL_S = 1.0  # how often pending documents without a live lease are looked for


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


@dataclass(frozen=True)
class UploadOutcome:
    document: Document
    duplicate: bool


@dataclass(frozen=True)
class _Checked:
    upload: Upload
    format: parsing.DocumentFormat
    sha256: str


class _Transient(Exception):
    """A dependency is down; the document stays pending and is retried."""


class _Superseded(Exception):
    """The document was deleted or queued again while this ingestion ran: it must not write."""


class KnowledgeService:
    def __init__(
        self,
        knowledge_bases: Sequence[KnowledgeBase],
        models: ModelCatalog,
        documents: DocumentCatalog,
        objects: ObjectStore,
        chunks: ChunkStore,
        triton: TritonInference,
        *,
        workers: int = 2,
        max_files: int = 20,
        dynamic: bool = False,
        image_limits: ImageLimits = DEFAULT_IMAGE_LIMITS,
        vision_model: str = "",
    ) -> None:
        """`dynamic`: knowledge bases come and go at run time (cluster discovery), so a document
        of an unknown one is left pending for when it is declared again rather than failed.
        Image documents are normalized within `image_limits` (bytes: the knowledge base's own
        limit) and described by `vision_model` (empty: the first model with that capability)."""
        self.image_limits = image_limits
        self.vision_model = vision_model
        self.documents = documents
        self.objects = objects
        self.chunks = chunks
        self.triton = triton
        self.models = models
        self.max_files = max_files
        self._kbs = {kb.name: kb for kb in knowledge_bases}
        self._unavailable: dict[str, str] = {}
        self.dynamic = dynamic
        self._started = False
        # Replicas share the catalog; each ingests the documents it holds a lease on.
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._ingesting: dict[str, str] = {}  # document id → its knowledge base, while ingested
        self._attempts: dict[str, int] = {}
        self._worker_count = workers
        self._workers: list[asyncio.Task[None]] = []
        self._retries: set[asyncio.TimerHandle] = set()
        self._waiting: set[str] = set()  # in back-off here: the scan leaves them to their timer
        self._rerun: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._started = True
        for kb in list(self._kbs.values()):
            await self._open_index(kb)
        await self._scan()
        for kb in list(self._kbs.values()):
            await self._finish_rebuild(kb)  # the last document may have finished just before a crash
        if self._queued:
            logger.info("resuming ingestion of %d documents", len(self._queued))
        self._workers = [
            asyncio.create_task(self._work(), name=f"ingest-{i}") for i in range(self._worker_count)
        ]
        self._workers.append(asyncio.create_task(self._scan_forever(), name="ingest-scan"))

    async def _scan(self) -> None:
        """Queue pending documents nobody is working on: left by a crash, or by another replica."""
        for document in await self.documents.pending():
            if self.dynamic and document.knowledge_base not in self._kbs:
                continue  # waits for its knowledge base to be declared (again)
            if document.id not in self._waiting:
                self._enqueue(document.id)

    async def _scan_forever(self) -> None:
        while True:
            await asyncio.sleep(SCAN_INTERVAL_S)
            try:
                await self._scan()
                for kb in list(self._kbs.values()):
                    await self._finish_rebuild(kb)
            except StoreError as exc:
                logger.warning("could not look for pending documents: %s", exc)

    async def stop(self) -> None:
        """Stop working; unfinished documents stay pending and resume at the next start."""
        self._started = False
        for handle in self._retries:
            handle.cancel()
        for task in [*self._workers, *self._running.values()]:
            task.cancel()
        await asyncio.gather(*self._workers, *self._running.values(), return_exceptions=True)

    async def _open_index(self, kb: KnowledgeBase) -> None:
        try:
            embedder = self.models.get(kb.spec.embedding.model, Capability.EMBEDDINGS)
            if embedder.tokenizer is None:
                raise KnowledgeBaseUnavailableError(f"embedding model {embedder.name} has no tokenizer")
            await self.chunks.ensure_index(kb)
            self._unavailable.pop(kb.name, None)
        except (KubechatError, StoreError) as exc:
            reason = exc.message if isinstance(exc, KubechatError) else str(exc)
            self._unavailable[kb.name] = reason
            logger.warning("knowledge base %s unavailable: %s", kb.name, reason)

    # -- run-time changes (cluster discovery) ---------------------------------------------

    async def put(self, kb: KnowledgeBase) -> None:
        """Add a knowledge base, or replace one of the same name with its newer version.

        spec.embedding is immutable (the CRD refuses changes): a version that changes it is
        refused here too, since the index pins its vectors. Other spec changes apply to what is
        ingested from now on; a re-index applies them to every document.
        """
        previous = self._kbs.get(kb.name)
        if previous is not None and previous.spec.embedding != kb.spec.embedding:
            logger.error(
                "knowledge base %s: spec.embedding cannot change (%s -> %s); keeping the previous version",
                kb.name, previous.spec.embedding.model, kb.spec.embedding.model,
            )  # fmt: skip
            return
        self._kbs[kb.name] = kb
        if not self._started or (previous is not None and previous.spec == kb.spec):
            return  # start() opens every index; a status update changes nothing here
        await self._open_index(kb)
        if previous is None:
            await self._scan()  # its documents left pending by a crash or while it was gone
            await self._finish_rebuild(kb)

    async def remove(self, name: str) -> None:
        """Forget a knowledge base: its ingestions stop (their documents stay pending, not
        failed, with nothing written past the stop) and it is no longer listed or searched.
        Its index, documents and catalog rows are the operator's (deletionPolicy)."""
        if self._kbs.pop(name, None) is None:
            return
        self._unavailable.pop(name, None)
        stopping = [doc for doc, kb_name in self._ingesting.items() if kb_name == name]
        for document_id in stopping:
            await self._cancel(document_id)
        if stopping:
            logger.info("knowledge base %s removed: stopped ingesting %d documents", name, len(stopping))

    async def reopen_embedder_users(self, model: str) -> None:
        """Re-check the knowledge bases embedding with `model` after it was added, changed or
        removed: whether they are usable depends on it."""
        if not self._started:
            return
        for kb in [kb for kb in self._kbs.values() if kb.spec.embedding.model == model]:
            await self._open_index(kb)

    # -- access ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self._kbs)

    def readable(self, principal: str) -> list[KnowledgeBase]:
        return [kb for kb in self._kbs.values() if kb.spec.access.can_read(principal)]

    def get(self, name: str, principal: str, *, write: bool = False) -> KnowledgeBase:
        kb = self._kbs.get(name)
        # A knowledge base one may not read is indistinguishable from a missing one.
        if kb is None or not kb.spec.access.can_read(principal):
            raise KnowledgeBaseNotFoundError(f"unknown knowledge base {name!r}")
        if write and not kb.spec.access.can_write(principal):
            raise ForbiddenError(f"{principal!r} may read but not change knowledge base {name!r}")
        return kb

    def unavailable_reason(self, name: str) -> str | None:
        return self._unavailable.get(name)

    async def chunk_count(self, kb: KnowledgeBase) -> int | None:
        try:
            return await self.chunks.count(kb)
        except StoreError:
            return None

    async def _usable(self, kb: KnowledgeBase) -> None:
        if kb.name in self._unavailable:
            await self._open_index(kb)  # the dependency may be back
        reason = self._unavailable.get(kb.name)
        if reason is not None:
            raise KnowledgeBaseUnavailableError(f"knowledge base {kb.name} is unavailable: {reason}")

    # -- uploads --------------------------------------------------------------------------

    def check_upload(self, kb: KnowledgeBase, upload: Upload) -> _Checked:
        """Everything that can be known about a file without parsing it; raises before storing."""
        name = upload.filename
        if not name or "/" in name or "\\" in name or len(name.encode()) > MAX_NAME_BYTES:
            raise InvalidRequestError(
                f"invalid file name {name!r}: a name without path separators, at most {MAX_NAME_BYTES} bytes"
            )
        try:
            check_key(f"{kb.object_prefix}{name}")  # the object store's rules (control characters, …)
        except ValueError as exc:
            raise InvalidRequestError(f"invalid file name {name!r}: {exc}") from exc
        if len(upload.data) > kb.spec.max_document_bytes:
            raise DocumentTooLargeError(
                f"{name} has {len(upload.data)} bytes; knowledge base {kb.name} accepts at most "
                f"{kb.spec.max_document_bytes}"
            )
        try:
            document_format = parsing.detect_format(name, upload.data[:8192])
        except parsing.EmptyDocumentError as exc:
            raise EmptyDocumentError(f"{name}: {exc}") from exc
        except parsing.DocumentError as exc:
            raise UnsupportedDocumentTypeError(f"{name}: {exc}") from exc
        if document_format is parsing.DocumentFormat.DOCX:
            try:
                parsing.check_archive(upload.data)
            except parsing.DecompressionBombError as exc:
                raise DecompressionBombError(f"{name}: {exc}") from exc
            except parsing.DocumentError as exc:
                raise UnsupportedDocumentTypeError(f"{name}: {exc}") from exc
        return _Checked(upload, document_format, hashlib.sha256(upload.data).hexdigest())

    async def upload(self, kb_name: str, principal: str, uploads: Sequence[Upload]) -> list[UploadOutcome]:
        kb = self.get(kb_name, principal, write=True)
        if not uploads:
            raise InvalidRequestError("no files: send one or more multipart parts named `files`")
        if len(uploads) > self.max_files:
            raise InvalidRequestError(f"{len(uploads)} files in one request; the limit is {self.max_files}")
        await self._usable(kb)
        checked = [self.check_upload(kb, upload) for upload in uploads]  # all or nothing
        checked = [await self._normalize(kb, item) for item in checked]
        outcomes = []
        for item in checked:
            # Content-addressed: the same bytes uploaded under another name are the same object.
            key = f"{kb.object_prefix}{item.sha256}"
            content_type = parsing.CONTENT_TYPES[item.format]
            try:
                await self.objects.put(
                    key, item.upload.data, content_type, {"knowledge-base": kb.name, "uploaded-by": principal}
                )
            except StoreError as exc:
                raise StorageUnavailableError(
                    f"the object store refused {item.upload.filename}: {exc}"
                ) from exc
            now = time.time()
            document, created = await self.documents.add(
                Document(
                    id=uuid.uuid4().hex, knowledge_base=kb.name, name=item.upload.filename,
                    format=item.format.value, content_type=content_type, size=len(item.upload.data),
                    sha256=item.sha256, object_key=key, uploaded_by=principal,
                    status=DocumentStatus.QUEUED, created_at=now, updated_at=now,
                )
            )  # fmt: skip
            if created:
                self._enqueue(document.id)
            outcomes.append(UploadOutcome(document, duplicate=not created))
        return outcomes

    async def _normalize(self, kb: KnowledgeBase, item: _Checked) -> _Checked:
        """An image is stored as kubechat stores every image: checked against decompression
        bombs, oriented, stripped of its metadata (EXIF locations included), as PNG."""
        if item.format is not parsing.DocumentFormat.IMAGE:
            return item
        limits = dataclasses.replace(self.image_limits, max_bytes=kb.spec.max_document_bytes)
        try:
            image = await asyncio.to_thread(prepare_image, item.upload.data, limits)
        except KubechatError as exc:
            raise type(exc)(f"{item.upload.filename}: {exc.message}") from exc
        return _Checked(Upload(item.upload.filename, image.png), item.format, image.sha256)

    # -- document operations --------------------------------------------------------------

    async def delete_document(self, kb_name: str, principal: str, document_id: str) -> None:
        """Tombstone first (no worker anywhere may claim or keep ingesting it), then remove its
        chunks and bytes, then the row: a failure part-way leaves a row to delete again."""
        kb = self.get(kb_name, principal, write=True)
        document = await self.documents.get(kb.name, document_id)
        await self.documents.update(document.id, DocumentStatus.DELETING)
        await self._cancel(document.id)
        await self._remove_chunks(kb, document.id)
        try:
            await self.objects.delete(document.object_key)
        except StoreError as exc:
            raise StorageUnavailableError(f"could not delete document {document.id}: {exc}") from exc
        await self.documents.delete(document.id)
        await self._finish_rebuild(kb)  # it may have been the last one the rebuild waited for

    async def _remove_chunks(self, kb: KnowledgeBase, document_id: str) -> None:
        try:
            rebuild = (await self.documents.rebuilds()).get(kb.name)
            for index in {await self.chunks.ensure_index(kb), rebuild} - {None}:
                assert index is not None
                await self.chunks.delete_document(index, document_id)
        except StoreError as exc:
            raise StorageUnavailableError(f"could not delete document {document_id}: {exc}") from exc

    async def reindex_document(self, kb_name: str, principal: str, document_id: str) -> Document:
        kb = self.get(kb_name, principal, write=True)
        document = await self.documents.get(kb.name, document_id)
        await self._usable(kb)
        await self._cancel(document.id)
        await self.documents.requeue(kb.name, [document.id])
        self._enqueue(document.id)
        return await self.documents.get(kb.name, document.id)

    async def reindex(self, kb_name: str, principal: str) -> int:
        """Rebuild the whole knowledge base into a new index generation, then switch to it.

        Readers keep the current generation until every document is in the new one; this is
        also how a knowledge base moves to another embedding model or chunking.
        """
        kb = self.get(kb_name, principal, write=True)
        try:
            index = await self.chunks.create_generation(kb)
        except StoreError as exc:
            raise StorageUnavailableError(f"could not create a new index for {kb.name}: {exc}") from exc
        # Record the target before requeueing: from here on every ingestion (on any replica)
        # writes to the new generation, and the new epoch stops those that started before.
        await self.documents.set_rebuild(kb.name, index)
        self._unavailable.pop(kb.name, None)
        count = await self.documents.requeue(kb.name)
        for document in await self.documents.pending():
            if document.knowledge_base == kb.name:
                self._enqueue(document.id)
        await self._finish_rebuild(kb)
        return count

    async def _finish_rebuild(self, kb: KnowledgeBase) -> None:
        index = (await self.documents.rebuilds()).get(kb.name)
        if index is None or await self.documents.count_pending(kb.name):
            return
        await self.chunks.activate(kb, index)
        await self.documents.set_rebuild(kb.name, None)
        self._unavailable.pop(kb.name, None)
        logger.info("knowledge base %s now serves index %s", kb.name, index)

    async def _cancel(self, document_id: str) -> None:
        task = self._running.pop(document_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- ingestion ------------------------------------------------------------------------

    def _enqueue(self, document_id: str) -> None:
        if document_id in self._running:
            self._rerun.add(document_id)  # queued again once the run in progress ends
        elif document_id not in self._queued:
            self._queued.add(document_id)
            self._queue.put_nowait(document_id)

    async def _work(self) -> None:
        while True:
            document_id = await self._queue.get()
            self._queued.discard(document_id)
            task = asyncio.create_task(self._ingest_by_id(document_id))
            self._running[document_id] = task
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled() and not task.done():
                    raise  # the worker itself is being stopped
            except Exception:
                logger.exception("ingestion of %s crashed", document_id)
            finally:
                if self._running.get(document_id) is task:
                    del self._running[document_id]
                if document_id in self._rerun:
                    self._rerun.discard(document_id)
                    self._enqueue(document_id)

    async def _ingest_by_id(self, document_id: str) -> None:
        document = await self.documents.claim(document_id, self.worker_id, LEASE_S)
        if document is None:
            return  # deleted, finished, or another replica holds it
        ingesting = asyncio.current_task()
        assert ingesting is not None
        renewing = asyncio.create_task(self._renew_lease(document_id, ingesting))
        self._ingesting[document_id] = document.knowledge_base
        try:
            kb = self._kbs.get(document.knowledge_base)
            if kb is None:
                if self.dynamic:
                    return  # released below; picked up again if the knowledge base comes back
                await self._fail(document, "knowledge_base_not_found", "its knowledge base is not defined")
                return
            try:
                await self._ingest(kb, document)
                self._attempts.pop(document.id, None)
                await self._finish_rebuild(kb)
            except _Transient as exc:
                if await self._still_ours(document):
                    await self._retry_later(document, str(exc))
            except _Superseded:
                logger.info("document %s changed while being ingested; this run stops", document.id)
                current = await self.documents.find(document.id)
                if current is None or current.status is DocumentStatus.DELETING:
                    await self._remove_chunks(kb, document.id)  # a batch may have landed after the delete
        finally:
            self._ingesting.pop(document_id, None)
            renewing.cancel()
            await asyncio.shield(self.documents.release(document_id, self.worker_id))

    async def _renew_lease(self, document_id: str, ingesting: asyncio.Task[None]) -> None:
        while True:
            await asyncio.sleep(LEASE_S / 3)
            try:
                renewed = await self.documents.claim(document_id, self.worker_id, LEASE_S)
            except StoreError as exc:
                logger.warning("could not renew the lease on %s: %s", document_id, exc)
                continue  # the lease may still hold; the next renewal tries again
            if renewed is None:
                current = await self.documents.find(document_id)
                if current is not None and current.status in PENDING:
                    # Another worker has it now (we stalled past the lease): two must not write.
                    logger.warning("lost the lease on %s; stopping its ingestion here", document_id)
                    ingesting.cancel()
                return  # otherwise it just finished, or was deleted

    async def _retry_later(self, document: Document, reason: str) -> None:
        attempt = self._attempts.get(document.id, 0)
        self._attempts[document.id] = attempt + 1
        delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
        logger.warning("ingestion of %s waits %.0f s: %s", document.id, delay, reason)
        # Still pending (it will be retried), with the reason visible to whoever polls it.
        await self.documents.update(
            document.id, DocumentStatus.QUEUED, error_code="retrying", error_message=reason
        )

        def again() -> None:
            self._retries.discard(handle)
            self._waiting.discard(document.id)
            self._enqueue(document.id)

        self._waiting.add(document.id)
        handle = asyncio.get_running_loop().call_later(delay, again)
        self._retries.add(handle)

    async def _still_ours(self, document: Document) -> bool:
        """Fencing: the row is still pending, in the epoch we claimed, under our lease."""
        current = await self.documents.find(document.id)
        return (
            current is not None
            and current.status in PENDING
            and current.epoch == document.epoch
            and current.lease_owner == self.worker_id
        )

    async def _fail(self, document: Document, code: str, message: str) -> None:
        if not await self._still_ours(document):
            raise _Superseded
        logger.info("document %s (%s) failed: %s", document.id, document.name, message)
        await self.documents.update(
            document.id, DocumentStatus.FAILED, error_code=code, error_message=message
        )

    async def _target_index(self, kb: KnowledgeBase) -> str:
        """The generation being rebuilt if any, else the live one (looked up for every document:
        another replica may have switched generations)."""
        try:
            rebuild = (await self.documents.rebuilds()).get(kb.name)
            return rebuild or await self.chunks.ensure_index(kb)
        except EmbeddingMismatchError:
            raise
        except StoreError as exc:
            raise _Transient(f"chunk store: {exc}") from exc

    async def _ingest(self, kb: KnowledgeBase, document: Document) -> None:
        try:
            index = await self._target_index(kb)
        except EmbeddingMismatchError as exc:
            await self._fail(document, "embedding_mismatch", f"{exc}")
            return
        await self.documents.update(document.id, DocumentStatus.PARSING)
        try:
            data = await self.objects.get(document.object_key)
        except ObjectNotFoundError:
            await self._fail(document, "object_missing", f"{document.object_key} is not in the object store")
            return
        except StoreError as exc:
            raise _Transient(f"object store: {exc}") from exc
        try:
            embedder = self.models.get(kb.spec.embedding.model, Capability.EMBEDDINGS)
        except KubechatError as exc:  # the model may be (re)declared meanwhile (cluster mode)
            raise _Transient(exc.message) from exc
        if embedder.tokenizer is None:
            raise _Transient(f"embedding model {embedder.name} has no tokenizer")
        document_format = parsing.DocumentFormat(document.format)
        try:
            sections = await self._describe(data) if document_format is parsing.DocumentFormat.IMAGE else None
            pieces = await asyncio.to_thread(
                _parse_and_chunk, data, document_format, embedder.tokenizer, kb, sections
            )
        except parsing.DocumentError as exc:
            await self._fail(document, exc.code, str(exc))
            return
        except _Transient:
            raise
        except Exception as exc:  # a parser bug must not make the document a poison pill
            logger.exception("parsing %s crashed", document.id)
            await self._fail(document, "parse_failed", f"the {document.format} parser failed: {exc}")
            return
        pages = max((p.page for p in pieces if p.page is not None), default=None)
        await self.documents.update(
            document.id, DocumentStatus.EMBEDDING, chunks=len(pieces), chunks_indexed=0, pages=pages
        )
        try:
            await self.chunks.delete_document(index, document.id)  # a retry starts clean
            await self._embed_and_index(kb, document, index, embedder.name, pieces, batch=embedder.batch_size)
        except EmbeddingMismatchError as exc:
            await self._fail(document, "embedding_mismatch", str(exc))
            return
        except (ModelUnavailableError, StoreUnavailableError) as exc:
            raise _Transient(str(exc)) from exc
        except StoreError as exc:
            await self._fail(document, "index_failed", str(exc))
            return
        if not await self._still_ours(document):
            raise _Superseded
        await self.documents.update(
            document.id, DocumentStatus.INDEXED, chunks_indexed=len(pieces), indexed_at=time.time(),
            error_code="", error_message="",
        )  # fmt: skip
        logger.info("indexed %s (%s): %d chunks", document.id, document.name, len(pieces))

    async def _describe(self, png: bytes) -> list[parsing.Section]:
        """An image's text, as a vision model describes and transcribes it. No vision model, or
        one that is down, is transient: the document waits for one."""
        try:
            describer = find_vision_model(self.models, self.vision_model)
            text = await self.triton.describe_image(
                describer.name, png, TRANSCRIBE_PROMPT, describer.model.spec.defaults.max_tokens
            )
        except KubechatError as exc:
            raise _Transient(f"describing the image: {exc.message}") from exc
        if not text.strip():
            raise parsing.EmptyDocumentError("the vision model found nothing to say about the image")
        return [parsing.Section(text=text.strip())]

    async def _embed_and_index(
        self,
        kb: KnowledgeBase,
        document: Document,
        index: str,
        model: str,
        pieces: Sequence[TextChunk],
        batch: int,
    ) -> None:
        """Embed and write batches with two in flight, so Triton is never idle during a write."""
        in_flight = asyncio.Semaphore(2)
        done = 0
        last_progress = time.monotonic()

        async def one(start: int) -> None:
            nonlocal done, last_progress
            async with in_flight:
                part = pieces[start : start + batch]
                vectors = await self.triton.embed(model, [p.text for p in part])
                if not await self._still_ours(document):
                    raise _Superseded
                if vectors.shape != (len(part), kb.spec.embedding.dimensions):
                    raise EmbeddingMismatchError(
                        f"embedder {model} returned vectors of shape {vectors.shape[1:]}; knowledge base "
                        f"{kb.name} pins {kb.spec.embedding.dimensions} dimensions"
                    )
                records = [
                    ChunkRecord(
                        document_id=document.id, document_name=document.name, ordinal=start + i,
                        text=p.text, page=p.page, section=p.section, vector=vectors[i],
                    )
                    for i, p in enumerate(part)
                ]  # fmt: skip
                await self.chunks.upsert(index, records, visible=False)
                done += len(part)
                # Progress at most once a second: each catalog write may wait for a refresh.
                if time.monotonic() - last_progress >= PROGRESS_INTERVAL_S:
                    last_progress = time.monotonic()
                    await self.documents.update(document.id, DocumentStatus.EMBEDDING, chunks_indexed=done)

        try:
            # A TaskGroup, not gather: when one batch fails the others stop writing.
            async with asyncio.TaskGroup() as group:
                for start in range(0, len(pieces), batch):
                    group.create_task(one(start))
        except* (_Superseded, EmbeddingMismatchError, ModelUnavailableError, StoreError) as failures:
            raise failures.exceptions[0] from None
        await self.chunks.make_visible(index)

    # -- retrieval ------------------------------------------------------------------------

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
        """Hybrid search over the named knowledge bases (all must be readable)."""
        kbs = [self.get(name, principal) for name in dict.fromkeys(kb_names)]
        for kb in kbs:
            await self._usable(kb)
        vectors: dict[str, Vector] = {}
        for model in {kb.spec.embedding.model for kb in kbs}:
            vectors[model] = (await self.triton.embed(model, [query]))[0]
        try:
            lists = await asyncio.gather(
                *(
                    search
                    for kb in kbs
                    for search in (
                        self.chunks.knn(kb, vectors[kb.spec.embedding.model], candidates, document_ids),
                        self.chunks.text_search(kb, query, candidates, document_ids),
                    )
                )
            )
        except EmbeddingMismatchError as exc:
            raise KnowledgeBaseUnavailableError(str(exc)) from exc
        except StoreError as exc:
            raise StorageUnavailableError(f"search failed: {exc}") from exc
        tagged: list[tuple[str, Sequence[RankedChunk]]] = [
            (kb.name, ranked) for kb, ranked in zip([kb for kb in kbs for _ in (0, 1)], lists, strict=True)
        ]
        return citations(reciprocal_rank_fusion(tagged), limit)


def _parse_and_chunk(
    data: bytes,
    document_format: parsing.DocumentFormat,
    tokenizer: Tokenizer,
    kb: KnowledgeBase,
    sections: list[parsing.Section] | None = None,
) -> list[TextChunk]:
    """Chunks of the document; `sections` when its text was already extracted (images)."""
    if sections is None:
        sections = parsing.parse_document(data, document_format)
    return chunk_sections(sections, tokenizer, kb.spec.chunking.size, kb.spec.chunking.overlap)
