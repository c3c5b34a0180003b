"""Each principal's uploaded images, in the object store (files embedded, MinIO in a cluster).

Layout, per image (`<owner>` = the first 32 hex digits of sha256(principal), so principals
holding any characters make valid keys; `<id>` = sha256 of the normalized PNG):

    images/<owner>/<id>/image.png       the normalized image
    images/<owner>/<id>/thumbnail.jpg   its thumbnail
    images/<owner>/<id>/meta.json       the ImageRecord

meta.json is written last and removed first: an image exists exactly while it is there, so
an upload is acknowledged only once all three objects are durable, and a failure part-way
leaves nothing visible. The same picture uploaded again by the same principal is the same
image (content-addressed); images are never shared between principals, and another
principal's image answers exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import logging
import re
import time
import unicodedata
from dataclasses import asdict, dataclass

from kubechat.core.errors import ImageNotFoundError, StorageUnavailableError
from kubechat.core.pagination import Page, page_newest_first
from kubechat.images.processing import ImageLimits, PreparedImage, prepare_image
from kubechat.stores.errors import ObjectNotFoundError, StoreError
from kubechat.stores.objects import ObjectStore

logger = logging.getLogger(__name__)

PREFIX = "images"
IMAGE_OBJECT = "image.png"
THUMBNAIL_OBJECT = "thumbnail.jpg"
META_OBJECT = "meta.json"
MAX_NAME_CHARS = 255
DEFAULT_NAME = "image"
_IMAGE_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ImageRecord:
    """What is known of a stored image; `id` is the sha256 of its PNG."""

    id: str
    name: str  # the uploaded file's name, sanitized; not unique
    width: int
    height: int
    source_format: str  # "png" | "jpeg" | "webp" | "gif"
    source_bytes: int  # size of the upload
    bytes: int  # size of the stored PNG
    created_at: float  # Unix time

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | builtins.bytes) -> ImageRecord:
        """Raises ValueError unless `text` is a record that `to_json` wrote."""
        try:
            raw = json.loads(text)
            record = cls(
                id=str(raw["id"]), name=str(raw["name"]), width=int(raw["width"]),
                height=int(raw["height"]), source_format=str(raw["source_format"]),
                source_bytes=int(raw["source_bytes"]), bytes=int(raw["bytes"]),
                created_at=float(raw["created_at"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an image record: {exc}") from exc
        if not _IMAGE_ID.fullmatch(record.id):
            raise ValueError(f"not an image record: id {record.id!r}")
        return record


def sanitize_name(filename: str) -> str:
    """The base name of an uploaded file, without control or invisible formatting characters
    (e.g. right-to-left overrides that disguise an extension), at most 255 characters."""
    base = unicodedata.normalize("NFC", filename.replace("\\", "/").rpartition("/")[2])
    name = "".join(c for c in base if c.isprintable()).strip()
    if name in ("", ".", ".."):
        return DEFAULT_NAME
    if len(name) > MAX_NAME_CHARS:
        stem, dot, suffix = name.rpartition(".")
        if dot and stem and len(suffix) <= 16:  # keep a plausible extension
            name = f"{stem[: MAX_NAME_CHARS - len(suffix) - 1]}.{suffix}"
        else:
            name = name[:MAX_NAME_CHARS]
    return name


def owner_of(principal: str) -> str:
    """The key segment of a principal: a hash, so any characters (`/`, `..`, control) are safe."""
    return hashlib.sha256(principal.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class ImageService:
    """Upload, read, list and delete a principal's images.

    `concurrency` bounds the images normalized at once in this process: each may take a few
    hundred MB while decoding (max_pixels x 4 bytes, twice), and all of a core.
    """

    def __init__(self, objects: ObjectStore, limits: ImageLimits, *, concurrency: int = 2) -> None:
        self.objects = objects
        self.limits = limits
        self._processing = asyncio.Semaphore(concurrency)

    async def upload(self, principal: str, filename: str, data: bytes) -> tuple[ImageRecord, bool]:
        """Check, normalize and store an image; `(record, duplicate)`.

        `duplicate`: this principal already has the same picture, whose record (with its
        first name) comes back; nothing is written. A refused image stores nothing.
        """
        name = sanitize_name(filename)
        async with self._processing:
            prepared = await asyncio.to_thread(prepare_image, data, self.limits)
        existing = await self._find(principal, prepared.sha256)
        if existing is not None:
            return existing, True
        record = ImageRecord(
            id=prepared.sha256, name=name, width=prepared.width, height=prepared.height,
            source_format=prepared.source_format, source_bytes=prepared.source_bytes,
            bytes=len(prepared.png), created_at=time.time(),
        )  # fmt: skip
        await self._store(principal, record, prepared)
        logger.info(
            "stored image %s (%dx%d, from %s of %d bytes)",
            record.id, record.width, record.height, record.source_format, record.source_bytes,
        )  # fmt: skip
        return record, False

    async def get(self, principal: str, image_id: str) -> ImageRecord:
        record = await self._find(principal, self._checked_id(image_id))
        if record is None:
            raise _not_found(image_id)
        return record

    async def content(self, principal: str, image_id: str) -> bytes:
        """The normalized PNG."""
        return await self._read(principal, image_id, IMAGE_OBJECT)

    async def thumbnail(self, principal: str, image_id: str) -> bytes:
        """The JPEG thumbnail."""
        return await self._read(principal, image_id, THUMBNAIL_OBJECT)

    async def list(self, principal: str, limit: int, cursor: str | None = None) -> Page[ImageRecord]:
        """A page of the principal's images, newest first. The records live beside the images in
        the object store, with no index to order them by, so every record is read and sorted and
        the page is cut from that (a principal holds a few hundred images, not millions)."""
        prefix = f"{PREFIX}/{owner_of(principal)}/"
        try:
            keys = await self.objects.list_keys(prefix)
        except StoreError as exc:
            raise StorageUnavailableError(f"cannot list images: {exc}") from exc
        ids = [
            parts[0]
            for parts in (key.removeprefix(prefix).split("/") for key in keys)
            if len(parts) == 2 and parts[1] == META_OBJECT and _IMAGE_ID.fullmatch(parts[0])
        ]
        found = await asyncio.gather(*(self._find(principal, image_id) for image_id in ids))
        # Deleted between listing and reading: gone.
        records = [record for record in found if record is not None]
        return page_newest_first(records, limit, cursor, lambda r: (r.created_at, r.id))

    async def delete(self, principal: str, image_id: str) -> None:
        """Remove the image: its record first (it no longer exists), then its bytes."""
        keys = self._keys(principal, self._checked_id(image_id))
        try:
            if not await self.objects.exists(keys[META_OBJECT]):
                raise _not_found(image_id)
            for name in (META_OBJECT, IMAGE_OBJECT, THUMBNAIL_OBJECT):
                await self.objects.delete(keys[name])
        except StoreError as exc:
            raise StorageUnavailableError(f"could not delete image {image_id}: {exc}") from exc

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _checked_id(image_id: str) -> str:
        if not _IMAGE_ID.fullmatch(image_id):
            raise _not_found(image_id)
        return image_id

    @staticmethod
    def _keys(principal: str, image_id: str) -> dict[str, str]:
        folder = f"{PREFIX}/{owner_of(principal)}/{image_id}"
        return {name: f"{folder}/{name}" for name in (IMAGE_OBJECT, THUMBNAIL_OBJECT, META_OBJECT)}

    async def _find(self, principal: str, image_id: str) -> ImageRecord | None:
        key = self._keys(principal, image_id)[META_OBJECT]
        try:
            text = await self.objects.get(key)
        except ObjectNotFoundError:
            return None
        except StoreError as exc:
            raise StorageUnavailableError(f"cannot read image {image_id}: {exc}") from exc
        try:
            record = ImageRecord.from_json(text)
        except ValueError as exc:
            raise StorageUnavailableError(f"the record of image {image_id} is damaged: {exc}") from exc
        if record.id != image_id:
            raise StorageUnavailableError(f"the record of image {image_id} names image {record.id}")
        return record

    async def _read(self, principal: str, image_id: str, name: str) -> bytes:
        keys = self._keys(principal, self._checked_id(image_id))
        try:
            # The record decides whether the image exists: bytes of an upload that failed
            # before its record was written are not an image.
            if not await self.objects.exists(keys[META_OBJECT]):
                raise _not_found(image_id)
            return await self.objects.get(keys[name])
        except ObjectNotFoundError as exc:  # deleted meanwhile
            raise _not_found(image_id) from exc
        except StoreError as exc:
            raise StorageUnavailableError(f"cannot read image {image_id}: {exc}") from exc

    async def _store(self, principal: str, record: ImageRecord, prepared: PreparedImage) -> None:
        keys = self._keys(principal, record.id)
        written: list[str] = []
        try:
            for key, data, content_type in (
                (keys[IMAGE_OBJECT], prepared.png, "image/png"),
                (keys[THUMBNAIL_OBJECT], prepared.thumbnail, "image/jpeg"),
                (keys[META_OBJECT], record.to_json().encode(), "application/json"),
            ):
                await self.objects.put(key, data, content_type, {})
                written.append(key)
        except StoreError as exc:
            # Invisible without meta.json, but not left behind if the store lets us remove it.
            for key in written:
                try:
                    await self.objects.delete(key)
                except StoreError as cleanup:
                    logger.warning("could not remove %s of a failed image upload: %s", key, cleanup)
            raise StorageUnavailableError(f"the object store refused the image: {exc}") from exc


def _not_found(image_id: str) -> ImageNotFoundError:
    shown = image_id if len(image_id) <= 80 else f"{image_id[:80]}…"
    return ImageNotFoundError(f"no image {shown!r}")
