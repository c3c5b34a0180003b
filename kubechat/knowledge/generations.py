"""A knowledge base's index generations: the live one readers search, and the one a full
re-index fills until it replaces the live one.

Who creates the live index is decided here, once (`creates_indices`): the operator, when it
manages the stores (a cluster with Elasticsearch), and this process otherwise (files mode, or a
cluster whose API pods keep their own embedded stores, which only they can reach). Where the
operator creates it, a missing index is `IndexMissingError` until it has. Re-index generations
are always created here: the operator does not do generations.

The generation being built is recorded in the document catalog, so every replica writes into it
and a restart continues it; it replaces the live one once no document of the knowledge base is
pending.
"""

from __future__ import annotations

import contextlib
import logging

from kubechat.core.errors import KnowledgeBaseUnavailableError, StorageUnavailableError
from kubechat.core.resources import KnowledgeBase
from kubechat.stores.chunks import ChunkStore
from kubechat.stores.documents import DocumentCatalog
from kubechat.stores.errors import EmbeddingMismatchError, IndexMissingError, StoreError

logger = logging.getLogger(__name__)


class IndexGenerations:
    def __init__(self, chunks: ChunkStore, documents: DocumentCatalog, *, creates_indices: bool) -> None:
        self.chunks = chunks
        self.documents = documents
        self.creates_indices = creates_indices

    async def live(self, kb: KnowledgeBase) -> str:
        """The index readers search; created if missing where this process owns creation.

        Raises IndexMissingError (the operator has not created it yet), EmbeddingMismatchError
        (it holds another model's vectors) or another StoreError."""
        return await self.chunks.ensure_index(kb, create=self.creates_indices)

    async def target(self, kb: KnowledgeBase) -> str:
        """Where a document is indexed now: the generation being rebuilt if any, else the live
        one (looked up for every document: another replica may have switched generations)."""
        rebuild = (await self.documents.rebuilds()).get(kb.name)
        return rebuild or await self.live(kb)

    async def start_rebuild(self, kb: KnowledgeBase) -> str:
        """Create a new, empty generation and record it as the one every ingestion now fills."""
        if not self.creates_indices:
            try:
                await self.live(kb)
            except EmbeddingMismatchError:
                pass  # a re-index is how a knowledge base moves to another embedding
            except IndexMissingError as exc:
                # The operator's first index and ours would both be generation 1.
                raise KnowledgeBaseUnavailableError(
                    f"knowledge base {kb.name} cannot be re-indexed before the operator has created "
                    f"its index ({exc})"
                ) from exc
            except StoreError as exc:
                raise StorageUnavailableError(f"could not look up the index of {kb.name}: {exc}") from exc
        try:
            index = await self.chunks.create_generation(kb)
        except StoreError as exc:
            raise StorageUnavailableError(f"could not create a new index for {kb.name}: {exc}") from exc
        await self.documents.set_rebuild(kb.name, index)
        return index

    async def finish(self, kb: KnowledgeBase) -> bool:
        """Make the rebuilt generation live once no document waits for it; True if it did."""
        index = (await self.documents.rebuilds()).get(kb.name)
        if index is None or await self.documents.count_pending(kb.name):
            return False
        await self.chunks.activate(kb, index)
        await self.documents.set_rebuild(kb.name, None)
        logger.info("knowledge base %s now serves index %s", kb.name, index)
        return True

    async def remove_document(self, kb: KnowledgeBase, document_id: str) -> None:
        """Delete a document's chunks from the live generation and the one being rebuilt."""
        try:
            rebuild = (await self.documents.rebuilds()).get(kb.name)
            indices = {rebuild} if rebuild else set()
            with contextlib.suppress(IndexMissingError):  # then nothing was ever indexed there
                indices.add(await self.live(kb))
            for index in indices:
                await self.chunks.delete_document(index, document_id)
        except StoreError as exc:
            raise StorageUnavailableError(f"could not delete document {document_id}: {exc}") from exc
