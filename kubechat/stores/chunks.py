"""The chunk store interface: chunks of documents with their vectors, searched two ways.

Embedded: SQLite (chunks, vectors) with tantivy for BM25; cluster: Elasticsearch, one index
per knowledge-base generation behind an alias. Both pass one conformance suite (tests/conformance/).

Hybrid retrieval asks the chunk store for two ranked lists (kNN and BM25) and fuses them
by their normalised scores (kubechat.knowledge.retrieval), so both stores rank alike and
Elasticsearch's basic licence suffices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from kubechat.core.resources import KnowledgeBase, Similarity
from kubechat.stores.errors import InvalidVectorError

Vector = npt.NDArray[np.float32]

# How far from 1 a squared magnitude may be for dot_product: Elasticsearch 9's own test,
# DenseVectorFieldMapper.Element.isUnitVector (|‖v‖² - 1| < 1e-3 for float vectors), which it
# applies to every indexed document and every query vector (checkVectorMagnitude).
UNIT_TOLERANCE: Final = 1e-3


def vector_problem(vector: Vector, similarity: Similarity) -> str | None:
    """Why Elasticsearch would refuse `vector` under `similarity` (None: it would not).

    The rules of Elasticsearch 9's DenseVectorFieldMapper.FloatElement (checkVectorBounds,
    checkVectorMagnitude), for documents and queries alike: no NaN or infinite value and a finite
    magnitude; dot_product needs unit length; cosine refuses a zero vector. Both chunk stores
    apply them at write and at query time, so the embedded store refuses what a cluster would.
    """
    if not np.isfinite(vector).all():
        return "has NaN or infinite values"
    with np.errstate(over="ignore"):
        squared = float(np.dot(vector, vector))  # float32, as Elasticsearch sums it
    if not np.isfinite(squared):
        return "has a magnitude too large for float32"
    if similarity is Similarity.DOT_PRODUCT and abs(squared - 1.0) >= UNIT_TOLERANCE:
        return (
            f"is not unit length (|v| = {squared**0.5:.6g}), which dot_product needs: "
            "normalize the embeddings, or use cosine"
        )
    if similarity is Similarity.COSINE and squared == 0.0:
        return "has zero magnitude, which cosine cannot compare"
    return None


def check_vector(vector: Vector, similarity: Similarity, what: str) -> None:
    """Raise InvalidVectorError naming `what` (a chunk, the query) when `vector_problem` finds one."""
    problem = vector_problem(vector, similarity)
    if problem is not None:
        raise InvalidVectorError(f"{what} {problem} (similarity {similarity.value})")


@dataclass(frozen=True)
class SpecDrift:
    """A setting of spec.index that differs from how the live index was built: it applies only to
    the next full re-index. `field` is the spec's path (e.g. `index.similarity`)."""

    field: str
    index: str  # as the live index has it
    spec: str  # as the spec asks

    def __str__(self) -> str:
        return f"{self.field}: {self.index} -> {self.spec}"


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

        Raises InvalidVectorError, before writing anything, when a vector breaks a rule of the
        index's similarity (`vector_problem`); `knn` does the same for the query vector.

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

    async def index_drift(self, kb: KnowledgeBase) -> list[SpecDrift]:
        """The settings of spec.index the live index was built with otherwise, and that this store
        honours ([] when there is no live index). Index settings never change in place: a store
        keeps searching with the index's own until a re-index builds one from the spec."""
        ...

    async def close(self) -> None: ...
