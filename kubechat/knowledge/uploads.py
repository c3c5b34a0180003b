"""Documents uploaded to a knowledge base: checked, normalized, stored, recorded as `queued`.

Every file is checked (name, size, type, content) before anything is stored, and one bad file
refuses the request. An image is normalized as every image kubechat stores is (see
kubechat.images.processing). Then each file's bytes go to the object store under a
content-addressed key, then a `queued` row to the catalog; only then is the upload
acknowledged. The same bytes uploaded again are the existing document (`duplicate`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kubechat.core.errors import (
    DecompressionBombError,
    DocumentTooLargeError,
    EmptyDocumentError,
    InvalidRequestError,
    KubechatError,
    StorageUnavailableError,
    UnsupportedDocumentTypeError,
)
from kubechat.core.resources import KnowledgeBase
from kubechat.images.processing import ImageLimits, prepare_image
from kubechat.knowledge import parsing
from kubechat.stores.documents import Document, DocumentCatalog, DocumentStatus
from kubechat.stores.errors import StoreError
from kubechat.stores.objects import ObjectStore, check_key

MAX_NAME_BYTES = 255
SNIFF_BYTES = 8192  # what a format is detected from (signatures sit in the first bytes)


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


@dataclass(frozen=True)
class UploadOutcome:
    document: Document
    duplicate: bool


@dataclass(frozen=True)
class CheckedUpload:
    upload: Upload
    format: parsing.DocumentFormat
    sha256: str


def check_upload(kb: KnowledgeBase, upload: Upload) -> CheckedUpload:
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
        document_format = parsing.detect_format(name, upload.data[:SNIFF_BYTES])
        if document_format in parsing.TEXT_FORMATS:
            # The whole file, not its head: a file that stops being UTF-8 after the first bytes
            # is refused now (415), not accepted and failed by ingestion later.
            parsing.check_text(name, upload.data)
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
    return CheckedUpload(upload, document_format, hashlib.sha256(upload.data).hexdigest())


class UploadIntake:
    def __init__(self, objects: ObjectStore, documents: DocumentCatalog, image_limits: ImageLimits) -> None:
        """Image documents are normalized within `image_limits` (bytes: the knowledge base's own
        limit)."""
        self.objects = objects
        self.documents = documents
        self.image_limits = image_limits

    async def accept(
        self, kb: KnowledgeBase, principal: str, uploads: Sequence[Upload], queued: Callable[[str], None]
    ) -> list[UploadOutcome]:
        """Check all, then store each; `queued` gets each new document's id as soon as it is
        recorded (a later file failing to store does not hold back the ones before it)."""
        checked = [check_upload(kb, upload) for upload in uploads]  # all or nothing
        checked = [await self._normalize(kb, item) for item in checked]
        outcomes = []
        for item in checked:
            outcome = await self._store(kb, principal, item)
            if not outcome.duplicate:
                queued(outcome.document.id)
            outcomes.append(outcome)
        return outcomes

    async def _normalize(self, kb: KnowledgeBase, item: CheckedUpload) -> CheckedUpload:
        """An image is stored as kubechat stores every image: checked against decompression
        bombs, oriented, stripped of its metadata (EXIF locations included), as PNG."""
        if item.format is not parsing.DocumentFormat.IMAGE:
            return item
        limits = dataclasses.replace(self.image_limits, max_bytes=kb.spec.max_document_bytes)
        try:
            image = await asyncio.to_thread(prepare_image, item.upload.data, limits)
        except KubechatError as exc:
            raise type(exc)(f"{item.upload.filename}: {exc.message}") from exc
        return CheckedUpload(Upload(item.upload.filename, image.png), item.format, image.sha256)

    async def _store(self, kb: KnowledgeBase, principal: str, item: CheckedUpload) -> UploadOutcome:
        # Content-addressed: the same bytes uploaded under another name are the same object.
        key = f"{kb.object_prefix}{item.sha256}"
        content_type = parsing.CONTENT_TYPES[item.format]
        try:
            await self.objects.put(
                key, item.upload.data, content_type, {"knowledge-base": kb.name, "uploaded-by": principal}
            )
        except StoreError as exc:
            raise StorageUnavailableError(f"the object store refused {item.upload.filename}: {exc}") from exc
        now = time.time()
        document, created = await self.documents.add(
            Document(
                id=uuid.uuid4().hex, knowledge_base=kb.name, name=item.upload.filename,
                format=item.format.value, content_type=content_type, size=len(item.upload.data),
                sha256=item.sha256, object_key=key, uploaded_by=principal,
                status=DocumentStatus.QUEUED, created_at=now, updated_at=now,
            )
        )  # fmt: skip
        return UploadOutcome(document, duplicate=not created)
