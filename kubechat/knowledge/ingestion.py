"""The ingestion queue: which documents this process ingests, under a lease, and when a
document that met a transient failure is tried again.

Replicas share the document catalog. A worker claims a pending document with a lease
(LEASE_S), renews it while ingesting and releases it at the end; a replica that dies loses its
leases when they expire, and the scan of any replica picks those documents up. Every requeue
bumps a document's epoch, and a `Claim` checks before each write (fencing) that the document is
still pending, in the epoch claimed, under this worker's lease: a delete or re-index served by
another replica stops the run within a batch.

A transient failure (Triton or a store unreachable) leaves the document `queued` with the reason
and releases it; a timer here enqueues it again after the document's next back-off delay
(RETRY_DELAYS_S, the last one repeating), for as long as it
takes (an acknowledged upload is never dropped), and another replica's scan may take it sooner.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from opentelemetry import trace

from kubechat.core import metrics
from kubechat.core.backoff import Backoff
from kubechat.core.tracing import tracer
from kubechat.stores.documents import PENDING, Document, DocumentCatalog, DocumentStatus
from kubechat.stores.errors import StoreError

logger = logging.getLogger(__name__)

LEASE_S = 60.0  # a worker that stops renewing (crashed replica) loses its documents after this
# Seconds before a document that met a transient failure is queued again, by attempt; then
# the last one for ever. Not a retry library's loop (tenacity, stamina): those hold the caller,
# here a worker slot and the document's lease, for the whole wait, so one document waiting for
# Triton would keep the others and every other replica from it. The wait here is a timer in a
# shared queue, with the lease released; what is left to compute is this five-entry table.
RETRY_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class Transient(Exception):
    """A dependency is down; the document stays pending and is retried."""


class Superseded(Exception):
    """The document was deleted or queued again while this ingestion ran: it must not write."""


@dataclass
class Claim:
    """A document this worker holds the lease on, as it was when claimed."""

    document: Document
    worker_id: str
    documents: DocumentCatalog
    failed: bool = field(default=False, init=False)  # ended `failed` by this run

    async def still_ours(self) -> bool:
        """Fencing: the row is still pending, in the epoch we claimed, under our lease."""
        current = await self.documents.find(self.document.id)
        return (
            current is not None
            and current.status in PENDING
            and current.epoch == self.document.epoch
            and current.lease_owner == self.worker_id
        )

    async def fence(self) -> None:
        """Raise Superseded unless the document is still ours to write."""
        if not await self.still_ours():
            raise Superseded

    async def fail(self, code: str, message: str) -> None:
        """End the document `failed` with the reason (a bad document: no retry)."""
        await self.fence()
        logger.info("document %s (%s) failed: %s", self.document.id, self.document.name, message)
        await self.documents.update(
            self.document.id, DocumentStatus.FAILED, error_code=code, error_message=message
        )
        self.failed = True


# Ingests one claimed document: returns when it is done (indexed, failed or given up), raises
# Transient for a retry later, Superseded when the claim no longer holds.
Ingest = Callable[[Claim], Awaitable[None]]


# Every queue of the process, for kubechat_ingestion_queue_depth (tests run several at once).
_QUEUES: weakref.WeakSet[IngestionQueue] = weakref.WeakSet()


def _depth(state: str) -> float:
    queues = list(_QUEUES)
    if state == "queued":
        return float(sum(len(q._queued) for q in queues))
    if state == "running":
        return float(sum(len(q._running) for q in queues))
    return float(sum(len(q._waiting) for q in queues))


for _state in ("queued", "running", "retrying"):
    metrics.INGESTION_QUEUE_DEPTH.labels(_state).set_function(functools.partial(_depth, _state))


class IngestionQueue:
    def __init__(self, documents: DocumentCatalog, ingest: Ingest, *, workers: int) -> None:
        self.documents = documents
        self._ingest = ingest
        # Replicas share the catalog; each ingests the documents it holds a lease on.
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._worker_count = workers
        self._workers: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._ingesting: dict[str, str] = {}  # document id → its knowledge base, while claimed
        self._rerun: set[str] = set()
        self._backoffs: dict[str, Backoff] = {}  # documents that met a transient failure
        self._retries: set[asyncio.TimerHandle] = set()
        self._waiting: set[str] = set()  # in back-off here: the scan leaves them to their timer
        _QUEUES.add(self)

    @property
    def running(self) -> frozenset[str]:
        """The documents whose ingestion runs in this process now."""
        return frozenset(self._running)

    @property
    def queued(self) -> int:
        return len(self._queued)

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"ingest-{i}") for i in range(self._worker_count)
        ]

    async def stop(self) -> None:
        """Stop working; unfinished documents stay pending and resume at the next start."""
        for handle in self._retries:
            handle.cancel()
        tasks = [*self._workers, *self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def enqueue(self, document_id: str) -> None:
        if document_id in self._running:
            self._rerun.add(document_id)  # queued again once the run in progress ends
        elif document_id not in self._queued:
            self._queued.add(document_id)
            self._queue.put_nowait(document_id)

    async def scan(self, wanted: Callable[[Document], bool]) -> None:
        """Queue the pending documents nobody is working on (left by a crash, or by another
        replica) that are `wanted` here."""
        for document in await self.documents.pending():
            if wanted(document) and document.id not in self._waiting:
                self.enqueue(document.id)

    async def cancel(self, document_id: str) -> None:
        """Stop the document's ingestion here, if it runs; it writes nothing more."""
        task = self._running.pop(document_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def cancel_knowledge_base(self, name: str) -> int:
        """Stop every ingestion of the knowledge base's documents here; how many there were."""
        stopping = [document for document, kb_name in self._ingesting.items() if kb_name == name]
        for document_id in stopping:
            await self.cancel(document_id)
        return len(stopping)

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
                    self.enqueue(document_id)

    async def _ingest_by_id(self, document_id: str) -> None:
        document = await self.documents.claim(document_id, self.worker_id, LEASE_S)
        if document is None:
            return  # deleted, finished, or another replica holds it
        claim = Claim(document, self.worker_id, self.documents)
        ingesting = asyncio.current_task()
        assert ingesting is not None
        renewing = asyncio.create_task(self._renew_lease(document_id, ingesting))
        self._ingesting[document_id] = document.knowledge_base
        started, outcome = time.perf_counter(), "indexed"
        # A trace of its own per document: ingestion is background work, no request's child.
        span = tracer.start_span(
            "ingestion.document",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            attributes={
                "kubechat.document_id": document_id,
                "kubechat.knowledge_base": document.knowledge_base,
            },
        )
        try:
            with trace.use_span(span, end_on_exit=False):
                await self._ingest(claim)
            self._backoffs.pop(document_id, None)
            outcome = "failed" if claim.failed else "indexed"
        except Transient as exc:
            outcome = "retrying"
            if await claim.still_ours():
                await self._retry_later(document, str(exc))
        except Superseded:
            outcome = "superseded"
            logger.info("document %s changed while being ingested; this run stops", document_id)
        except asyncio.CancelledError:
            outcome = "cancelled"  # the service stopped, or a delete or re-index took the document
            raise
        except Exception:
            outcome = "error"  # a crash, logged by the worker; the document is scanned again later
            raise
        finally:
            metrics.INGESTION_DOCUMENT_DURATION.labels(outcome).observe(time.perf_counter() - started)
            span.set_attribute("kubechat.outcome", outcome)
            if outcome in ("failed", "error"):
                span.set_status(trace.StatusCode.ERROR, outcome)
            span.end()
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
        delay = self._backoffs.setdefault(document.id, Backoff(RETRY_DELAYS_S)).next_delay()
        logger.warning("ingestion of %s waits %.0f s: %s", document.id, delay, reason)
        # Still pending (it will be retried), with the reason visible to whoever polls it.
        await self.documents.update(
            document.id, DocumentStatus.QUEUED, error_code="retrying", error_message=reason
        )

        def again() -> None:
            self._retries.discard(handle)
            self._waiting.discard(document.id)
            self.enqueue(document.id)

        self._waiting.add(document.id)
        handle = asyncio.get_running_loop().call_later(delay, again)
        self._retries.add(handle)
