"""Knowledge bases and their documents: upload, status, re-index, delete, search."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, Field

from kubechat.api.dependencies import PrincipalDep, Services, ServicesDep
from kubechat.api.errors import error_responses
from kubechat.api.pages import Cursor, ItemPage, Limit
from kubechat.api.routing import ApiRoute
from kubechat.api.uploads import UploadLimits, multipart_body, read_files
from kubechat.core.errors import (
    CorruptImageError,
    DecompressionBombError,
    DocumentNotFoundError,
    DocumentTooLargeError,
    EmptyDocumentError,
    ForbiddenError,
    InvalidRequestError,
    KnowledgeBaseNotFoundError,
    KnowledgeBaseUnavailableError,
    LengthRequiredError,
    ModelUnavailableError,
    StorageUnavailableError,
    UnauthenticatedError,
    UnsupportedDocumentTypeError,
)
from kubechat.core.pagination import page_by_name
from kubechat.core.resources import KnowledgeBase
from kubechat.knowledge.retrieval import Citation
from kubechat.knowledge.uploads import Upload
from kubechat.stores.documents import Document, DocumentStatus

router = APIRouter(prefix="/knowledge-bases", tags=["knowledge bases"], route_class=ApiRoute)

# A knowledge base the principal may not read is not found; one it may read but not change is
# forbidden. `invalid_request` (400) on listings is a cursor that does not parse.
READ = (UnauthenticatedError, KnowledgeBaseNotFoundError, StorageUnavailableError)
WRITE = (*READ, ForbiddenError, KnowledgeBaseUnavailableError)
LISTING = error_responses(UnauthenticatedError, StorageUnavailableError)  # a name cursor always parses
ONE_KNOWLEDGE_BASE = error_responses(*READ)
DOCUMENTS = error_responses(*READ, InvalidRequestError)
ONE_DOCUMENT = error_responses(*READ, DocumentNotFoundError)
CHANGE_DOCUMENT = error_responses(*WRITE, DocumentNotFoundError)
REINDEX = error_responses(*WRITE)
UPLOAD = error_responses(
    *WRITE, InvalidRequestError, LengthRequiredError, DocumentTooLargeError, DecompressionBombError,
    UnsupportedDocumentTypeError, EmptyDocumentError, CorruptImageError,
)  # fmt: skip
SEARCH = error_responses(*READ, KnowledgeBaseUnavailableError, ModelUnavailableError)


class KnowledgeBaseOut(BaseModel):
    name: str
    display_name: str
    description: str
    embedding_model: str
    dimensions: int
    chunk_size: int
    chunk_overlap: int
    max_document_bytes: int
    writable: bool
    ready: bool
    reason: str = ""
    documents: dict[str, int] = Field(description="Documents by ingestion status.")
    chunks: int | None = Field(description="Chunks readers search (null if the store is unreachable).")


class DocumentOut(BaseModel):
    id: str
    knowledge_base: str
    name: str
    format: str
    content_type: str
    size: int
    sha256: str
    uploaded_by: str
    status: DocumentStatus
    chunks: int
    chunks_indexed: int
    pages: int | None
    error_code: str
    error_message: str
    created_at: float
    updated_at: float
    indexed_at: float | None

    @classmethod
    def of(cls, document: Document) -> DocumentOut:
        return cls.model_validate(document, from_attributes=True)


class UploadedDocument(DocumentOut):
    duplicate: bool = Field(description="The knowledge base already held these exact bytes.")


class UploadResponse(BaseModel):
    documents: list[UploadedDocument]


class KnowledgeBasePage(ItemPage[KnowledgeBaseOut]):
    """The knowledge bases the principal may read, by name."""


class DocumentPage(ItemPage[DocumentOut]):
    """A knowledge base's documents, oldest first (by upload time)."""


class ReindexResponse(BaseModel):
    knowledge_base: str
    documents_queued: int


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(default=5, ge=1, le=50)
    document_ids: list[str] | None = Field(default=None, max_length=100)


class SearchResponse(BaseModel):
    sources: list[Citation]


async def _describe(services: Services, kb: KnowledgeBase, principal: str) -> KnowledgeBaseOut:
    knowledge = services.knowledge
    reason = knowledge.unavailable_reason(kb.name)
    return KnowledgeBaseOut(
        name=kb.name, display_name=kb.spec.display_name or kb.name, description=kb.spec.description,
        embedding_model=kb.spec.embedding.model, dimensions=kb.spec.embedding.dimensions,
        chunk_size=kb.spec.chunking.size, chunk_overlap=kb.spec.chunking.overlap,
        max_document_bytes=kb.spec.max_document_bytes, writable=kb.spec.access.can_write(principal),
        ready=reason is None, reason=reason or "",
        documents=await knowledge.documents.status_counts(kb.name), chunks=await knowledge.chunk_count(kb),
    )  # fmt: skip


@router.get("", responses=LISTING)
async def list_knowledge_bases(
    services: ServicesDep, principal: PrincipalDep, limit: Limit = 50, cursor: Cursor = None
) -> KnowledgeBasePage:
    page = page_by_name(services.knowledge.readable(principal), limit, cursor, lambda kb: kb.name)
    return KnowledgeBasePage(
        items=[await _describe(services, kb, principal) for kb in page.items], next_cursor=page.next_cursor
    )


@router.get("/{name}", responses=ONE_KNOWLEDGE_BASE)
async def get_knowledge_base(name: str, services: ServicesDep, principal: PrincipalDep) -> KnowledgeBaseOut:
    return await _describe(services, services.knowledge.get(name, principal), principal)


@router.post(
    "/{name}/documents",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=multipart_body("files", many=True),
    responses=UPLOAD,
)
async def upload_documents(
    name: str, request: Request, services: ServicesDep, principal: PrincipalDep
) -> UploadResponse:
    """Store the files, then queue their ingestion; poll the documents for their status.

    202 once every file is in the object store. The same bytes uploaded again are not stored
    twice: the existing document comes back with `duplicate: true`.
    """
    knowledge = services.knowledge
    kb = knowledge.get(name, principal, write=True)
    limits = UploadLimits(
        "files",
        knowledge.max_files,
        kb.spec.max_document_bytes,
        DocumentTooLargeError,
        f"knowledge base {kb.name}",
    )
    files = await read_files(request, limits)
    outcomes = await knowledge.upload(kb.name, principal, [Upload(f.filename, f.data) for f in files])
    return UploadResponse(
        documents=[
            UploadedDocument(**DocumentOut.of(o.document).model_dump(), duplicate=o.duplicate)
            for o in outcomes
        ]
    )


@router.get("/{name}/documents", responses=DOCUMENTS)
async def list_documents(
    name: str,
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: DocumentStatus | None = None,
) -> DocumentPage:
    kb = services.knowledge.get(name, principal)
    page = await services.knowledge.documents.list_documents(kb.name, limit, cursor, status)
    return DocumentPage.of(page, DocumentOut.of)


@router.get("/{name}/documents/{document_id}", responses=ONE_DOCUMENT)
async def get_document(
    name: str, document_id: str, services: ServicesDep, principal: PrincipalDep
) -> DocumentOut:
    kb = services.knowledge.get(name, principal)
    return DocumentOut.of(await services.knowledge.documents.get(kb.name, document_id))


@router.delete(
    "/{name}/documents/{document_id}", status_code=status.HTTP_204_NO_CONTENT, responses=CHANGE_DOCUMENT
)
async def delete_document(
    name: str, document_id: str, services: ServicesDep, principal: PrincipalDep
) -> Response:
    """Removes the document's chunks from the index, its bytes from the object store, and its row."""
    await services.knowledge.delete_document(name, principal, document_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{name}/documents/{document_id}/reindex", status_code=status.HTTP_202_ACCEPTED, responses=CHANGE_DOCUMENT
)
async def reindex_document(
    name: str, document_id: str, services: ServicesDep, principal: PrincipalDep
) -> DocumentOut:
    return DocumentOut.of(await services.knowledge.reindex_document(name, principal, document_id))


@router.post("/{name}/reindex", status_code=status.HTTP_202_ACCEPTED, responses=REINDEX)
async def reindex_knowledge_base(
    name: str, services: ServicesDep, principal: PrincipalDep
) -> ReindexResponse:
    """Rebuilds every document into a new index generation; readers switch when it is complete."""
    count = await services.knowledge.reindex(name, principal)
    return ReindexResponse(knowledge_base=name, documents_queued=count)


@router.post("/{name}/search", responses=SEARCH)
async def search(
    name: str, body: SearchRequest, services: ServicesDep, principal: PrincipalDep
) -> SearchResponse:
    """Hybrid (kNN + BM25, reciprocal-rank fused) search, returning citable sources."""
    sources = await services.knowledge.search(
        principal, [name], body.query, limit=body.k,
        candidates=max(body.k, services.settings.retrieval_candidates), document_ids=body.document_ids,
    )  # fmt: skip
    return SearchResponse(sources=sources)
