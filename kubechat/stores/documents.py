"""The document catalog: every uploaded document, its ingestion status and progress.

A document row is written only after its bytes are in the object store, and its status moves
queued → parsing → embedding → indexed (or failed with a reason). Rows that are not terminal
when the API starts are ingested again, so an upload acknowledged before a crash is never lost.
A full re-index of a knowledge base is recorded too (the generation being built) and resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from kubechat.core.pagination import Page


class DocumentStatus(StrEnum):
    QUEUED = "queued"
    PARSING = "parsing"
    EMBEDDING = "embedding"
    INDEXED = "indexed"
    FAILED = "failed"
    DELETING = "deleting"  # a tombstone: its chunks and bytes are being removed, nobody may ingest it


PENDING = (DocumentStatus.QUEUED, DocumentStatus.PARSING, DocumentStatus.EMBEDDING)


@dataclass(frozen=True)
class Document:
    id: str
    knowledge_base: str
    name: str
    format: str
    content_type: str
    size: int
    sha256: str
    object_key: str
    uploaded_by: str
    status: DocumentStatus
    created_at: float
    updated_at: float
    chunks: int = 0
    chunks_indexed: int = 0
    pages: int | None = None
    error_code: str = ""
    error_message: str = ""
    indexed_at: float | None = None
    # Which worker (API process) is ingesting it, until when; expired leases are taken over.
    lease_owner: str = ""
    lease_expires: float = 0.0
    # Bumped by every requeue: an ingestion that started under an older epoch must not write.
    epoch: int = 0


class DocumentCatalog(Protocol):
    async def add(self, document: Document) -> tuple[Document, bool]:
        """Insert; if the knowledge base already holds these bytes, return that row and False."""
        ...

    async def get(self, knowledge_base: str, document_id: str) -> Document: ...
    async def find(self, document_id: str) -> Document | None: ...
    async def list_documents(
        self, knowledge_base: str, limit: int, cursor: str | None, status: DocumentStatus | None = None
    ) -> Page[Document]: ...
    async def update(self, document_id: str, status: DocumentStatus, **progress: Any) -> None: ...
    async def requeue(self, knowledge_base: str, document_ids: list[str] | None = None) -> int:
        """Mark documents (all of the knowledge base when None) queued again, in a new epoch;
        returns how many. Documents being deleted are left alone."""
        ...

    async def claim(self, document_id: str, worker: str, lease_s: float) -> Document | None:
        """Take a pending document for ingestion, or extend one's own lease.

        Atomic: of several workers (API replicas) claiming at once, one wins. Returns None when
        the document is not pending or another worker's lease has not expired.
        """
        ...

    async def release(self, document_id: str, worker: str) -> None:
        """Give up one's lease (the document stays as it is, e.g. pending for a retry)."""
        ...

    async def pending(self) -> list[Document]:
        """Pending documents nobody holds a live lease on, oldest first."""
        ...

    async def count_pending(self, knowledge_base: str) -> int: ...
    async def status_counts(self, knowledge_base: str) -> dict[str, int]: ...
    async def delete(self, document_id: str) -> None: ...
    async def set_rebuild(self, knowledge_base: str, index: str | None) -> None:
        """Record (or clear) the generation a full re-index is filling."""
        ...

    async def rebuilds(self) -> dict[str, str]: ...
    async def close(self) -> None: ...


PROGRESS_FIELDS = {"chunks", "chunks_indexed", "pages", "error_code", "error_message", "indexed_at"}
