"""The chunk store interface: chunks of documents with their vectors, searched two ways.

Embedded: SQLite (FTS5 + vectors); cluster: Elasticsearch, one index per knowledge-base
generation behind an alias. Both pass one conformance suite (tests/conformance/).

Hybrid retrieval asks the chunk store for two ranked lists (kNN and BM25) and fuses them
with reciprocal-rank fusion (kubechat.knowledge.retrieval), so both stores rank alike and
Elasticsearch's basic licence suffices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from kubechat.core.resources import KnowledgeBase

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ChunkRecord:
    """One indexed piece of a document. `chunk_id` is `<document_id>:<ordinal>`."""

    document_id: str
    document_name: str
    ordinal: int
    text: str
    page: int | None = None  # 1-based, for paged formats (PDF)
    section: str = ""  # nearest heading, for structured formats
    vector: Vector | None = field(default=None, compare=False, repr=False)

    @property
    def chunk_id(self) -> str:
        return f"{self.document_id}:{self.ordinal}"


@dataclass(frozen=True)
class RankedChunk:
    """A chunk and its score in one ranked list (similarity for kNN, BM25 for text)."""

    chunk: ChunkRecord
    score: float


class ChunkStore(Protocol):
    """Chunks of every knowledge base. Index names are physical (`<alias>-<generation>`)."""

    async def ensure_index(self, kb: KnowledgeBase, *, create: bool = True) -> str:
        """Return the active index, creating the first generation and the alias if missing.

        With `create=False` a missing index raises IndexMissingError instead (in a cluster the
        operator owns creation). Raises EmbeddingMismatchError when the existing index records
        another embedding model or vector size than `kb.spec.embedding`.
        """
        ...

    async def create_generation(self, kb: KnowledgeBase) -> str:
        """A new, empty, inactive index for a full re-index; `activate` makes it live."""
        ...

    async def activate(self, kb: KnowledgeBase, index: str) -> None:
        """Point the alias at `index` atomically and drop the previous generations."""
        ...

    async def upsert(self, index: str, chunks: Sequence[ChunkRecord], *, visible: bool = True) -> None:
        """Write chunks (with vectors); a chunk_id already present is replaced.

        `visible`: return only once searches see them. Ingestion writes a document's batches
        with False and calls `make_visible` once at the end (a refresh per batch is costly).
        """
        ...

    async def make_visible(self, index: str) -> None:
        """Make every write so far searchable."""
        ...

    async def delete_document(self, index: str, document_id: str) -> None: ...

    async def knn(
        self, kb: KnowledgeBase, vector: Vector, k: int, document_ids: Sequence[str] | None = None
    ) -> list[RankedChunk]: ...

    async def text_search(
        self, kb: KnowledgeBase, query: str, k: int, document_ids: Sequence[str] | None = None
    ) -> list[RankedChunk]: ...

    async def get_chunk(self, kb: KnowledgeBase, chunk_id: str) -> ChunkRecord | None: ...

    async def count(self, kb: KnowledgeBase, document_id: str | None = None) -> int: ...

    async def drop(self, kb: KnowledgeBase) -> None:
        """Remove the alias and every generation (KnowledgeBase deleted with policy Delete)."""
        ...

    async def close(self) -> None: ...
