"""Ingesting one claimed document: parse → chunk → embed → index, each step persisted.

Parsing runs in a worker thread (an image is first described by a vision model); chunks are
embedded through Triton in batches of the embedder's batch size with two batches in flight, and
written unrefreshed to the generation being filled, then made visible at once. A retry starts
clean (the document's chunks are deleted first), so nothing is indexed twice. Bad documents fail
with a reason; a dependency that is down raises Transient (the queue retries later); a claim
that no longer holds raises Superseded, after removing what a deleted document had written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from tokenizers import Tokenizer

from kubechat.catalog import ModelCatalog
from kubechat.core.errors import KubechatError, ModelUnavailableError
from kubechat.core.resources import MAX_DOCUMENT_BYTES, Capability, KnowledgeBase
from kubechat.core.tracing import tracer
from kubechat.images.vision import TRANSCRIBE_PROMPT, describe_timed, find_vision_model
from kubechat.knowledge import parsing
from kubechat.knowledge.chunking import TextChunk, chunk_sections
from kubechat.knowledge.generations import IndexGenerations
from kubechat.knowledge.inference import KnowledgeInference
from kubechat.knowledge.ingestion import Claim, Superseded, Transient
from kubechat.stores.chunks import ChunkRecord, ChunkStore
from kubechat.stores.documents import DocumentCatalog, DocumentStatus
from kubechat.stores.errors import (
    EmbeddingMismatchError,
    InvalidVectorError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StoreError,
    StoreUnavailableError,
)
from kubechat.stores.objects import ObjectStore

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0  # at most one progress write a second: each may wait for a refresh
IN_FLIGHT = 2  # embedding batches per document, so Triton is never idle during a write


class IngestionPipeline:
    def __init__(
        self,
        models: ModelCatalog,
        documents: DocumentCatalog,
        objects: ObjectStore,
        chunks: ChunkStore,
        inference: KnowledgeInference,
        generations: IndexGenerations,
        *,
        vision_model: str = "",
    ) -> None:
        """`vision_model` describes image documents (empty: the first model with that capability)."""
        self.models = models
        self.documents = documents
        self.objects = objects
        self.chunks = chunks
        self.inference = inference
        self.generations = generations
        self.vision_model = vision_model

    async def ingest(self, kb: KnowledgeBase, claim: Claim) -> None:
        try:
            await self._ingest(kb, claim)
        except Superseded:
            current = await self.documents.find(claim.document.id)
            if current is None or current.status is DocumentStatus.DELETING:
                # A batch may have landed after the delete removed the document's chunks.
                await self.generations.remove_document(kb, claim.document.id)
            raise

    async def _ingest(self, kb: KnowledgeBase, claim: Claim) -> None:
        document = claim.document
        try:
            index = await self.generations.target(kb)
        except EmbeddingMismatchError as exc:
            await claim.fail("embedding_mismatch", f"{exc}")
            return
        except StoreError as exc:  # the operator's index not created yet included
            raise Transient(f"chunk store: {exc}") from exc
        await self.documents.update(document.id, DocumentStatus.PARSING)
        try:
            # Bounded by the largest document any KnowledgeBase accepts: a stray object larger than
            # that (not uploaded through kubechat) is refused before it is read into memory.
            with tracer.start_as_current_span("ingestion.fetch"):
                data = await self.objects.get(document.object_key, max_bytes=MAX_DOCUMENT_BYTES)
        except ObjectNotFoundError:
            await claim.fail("object_missing", f"{document.object_key} is not in the object store")
            return
        except ObjectTooLargeError as exc:
            await claim.fail("document_too_large", str(exc))
            return
        except StoreError as exc:
            raise Transient(f"object store: {exc}") from exc
        try:
            embedder = self.models.get(kb.spec.embedding.model, Capability.EMBEDDINGS)
        except KubechatError as exc:  # the model may be (re)declared meanwhile (cluster mode)
            raise Transient(exc.message) from exc
        if embedder.tokenizer is None:
            raise Transient(f"embedding model {embedder.name} has no tokenizer")
        document_format = parsing.DocumentFormat(document.format)
        try:
            sections = await self._describe(data) if document_format is parsing.DocumentFormat.IMAGE else None
            with tracer.start_as_current_span(
                "ingestion.parse", attributes={"kubechat.format": document.format}
            ):
                pieces = await asyncio.to_thread(
                    parse_and_chunk, data, document_format, embedder.tokenizer, kb, sections
                )
        except parsing.DocumentError as exc:
            await claim.fail(exc.code, str(exc))
            return
        except Transient:
            raise
        except Exception as exc:  # a parser bug must not make the document a poison pill
            logger.exception("parsing %s crashed", document.id)
            await claim.fail("parse_failed", f"the {document.format} parser failed: {exc}")
            return
        pages = max((p.page for p in pieces if p.page is not None), default=None)
        await self.documents.update(
            document.id, DocumentStatus.EMBEDDING, chunks=len(pieces), chunks_indexed=0, pages=pages
        )
        try:
            with tracer.start_as_current_span(
                "ingestion.embed_and_index", attributes={"kubechat.chunks": len(pieces)}
            ):
                await self.chunks.delete_document(index, document.id)  # a retry starts clean
                await self._embed_and_index(
                    kb, claim, index, embedder.name, pieces, batch=embedder.batch_size
                )
        except EmbeddingMismatchError as exc:
            await claim.fail("embedding_mismatch", str(exc))
            return
        except InvalidVectorError as exc:
            # The embedder's vectors do not suit the index's similarity: re-embedding gives the same.
            await claim.fail("invalid_vector", str(exc))
            return
        except (ModelUnavailableError, StoreUnavailableError) as exc:
            raise Transient(str(exc)) from exc
        except StoreError as exc:
            await claim.fail("index_failed", str(exc))
            return
        await claim.fence()
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
            text = await describe_timed(
                self.inference, describer, png, TRANSCRIBE_PROMPT, purpose="ingestion"
            )
        except KubechatError as exc:
            raise Transient(f"describing the image: {exc.message}") from exc
        if not text.strip():
            raise parsing.EmptyDocumentError("the vision model found nothing to say about the image")
        return [parsing.Section(text=text.strip())]

    async def _embed_and_index(
        self,
        kb: KnowledgeBase,
        claim: Claim,
        index: str,
        model: str,
        pieces: Sequence[TextChunk],
        batch: int,
    ) -> None:
        """Embed and write batches with IN_FLIGHT of them at a time."""
        document = claim.document
        in_flight = asyncio.Semaphore(IN_FLIGHT)
        done = 0
        last_progress = time.monotonic()

        async def one(start: int) -> None:
            nonlocal done, last_progress
            async with in_flight:
                part = pieces[start : start + batch]
                vectors = await self.inference.embed(model, [p.text for p in part])
                await claim.fence()
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
                if time.monotonic() - last_progress >= PROGRESS_INTERVAL_S:
                    last_progress = time.monotonic()
                    await self.documents.update(document.id, DocumentStatus.EMBEDDING, chunks_indexed=done)

        try:
            # A TaskGroup, not gather: when one batch fails the others stop writing.
            async with asyncio.TaskGroup() as group:
                for start in range(0, len(pieces), batch):
                    group.create_task(one(start))
        except* (Superseded, EmbeddingMismatchError, ModelUnavailableError, StoreError) as failures:
            raise failures.exceptions[0] from None
        await self.chunks.make_visible(index)


def parse_and_chunk(
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
