"""The object stores of knowledge bases: the original bytes of uploaded documents.

`FileObjectStore` keeps them in a directory (embedded mode), `S3ObjectStore` in a MinIO (or
any S3) bucket (cluster mode). Both implement `ObjectStore` (below), check keys,
content types and metadata by the same rules (what one accepts the other does too), and pass
one conformance suite (tests/conformance/test_object_store.py).

Keys are canonical relative paths (`knowledge-bases/default/docs/<id>/report.pdf`): no
leading `/`, no empty, `.` or `..` segment, no backslash or control character, at most
1024 bytes of UTF-8 and 250 per segment. Metadata keys are lower-case letters, digits and
`-`; values are any text (S3 carries them percent-encoded). Beyond the protocol, both stores
have `stat(key) -> ObjectStat` for the content type and metadata a put recorded.

Objects can be up to a KnowledgeBase's maxDocumentBytes (1 GiB at most): reads go through a
buffer of READ_CHUNK_BYTES, hashing never holds an object whole, and `get` takes a `max_bytes`
it refuses larger objects by (ObjectTooLargeError) before reading them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_KEY_BYTES = 1024  # S3's limit
MAX_SEGMENT_BYTES = 250  # a file name (255 bytes on ext4 and XFS) less the sidecar's ".json"
MAX_METADATA_BYTES = 1900  # S3 allows 2 KB of user metadata; the rest is for the sha256 entry
READ_CHUNK_BYTES = 1 << 20  # what a read holds at a time besides its result
_METADATA_KEY = re.compile(r"[a-z0-9][a-z0-9-]*")
# The store's own metadata entry in S3, so `stat` need not read the object to hash it.
SHA256_METADATA_KEY = "kubechat-sha256"


@dataclass(frozen=True)
class ObjectStat:
    """An object's description: what `put` returned and the content type and metadata it was given."""

    info: ObjectInfo
    content_type: str
    metadata: Mapping[str, str] = field(default_factory=dict)


def check_key(key: str) -> None:
    """Raise ValueError unless `key` is a canonical relative path that cannot leave the store."""
    if not key:
        raise ValueError("object key is empty")
    _check_path_text(key, "object key")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"object key is longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        _check_segment(segment, key)


def check_prefix(prefix: str) -> None:
    """Raise ValueError unless `prefix` is the beginning of some valid key (or empty)."""
    if not prefix:
        return
    _check_path_text(prefix, "key prefix")
    directory = prefix.rpartition("/")[0]
    if directory:
        for segment in directory.split("/"):
            _check_segment(segment, prefix)


def _check_path_text(text: str, what: str) -> None:
    if text.startswith("/"):
        raise ValueError(f"{what} {text!r} is absolute")
    if "\\" in text:
        raise ValueError(f"{what} {text!r} contains a backslash")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"{what} {text!r} contains a control character")
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} {text!r} is not valid Unicode") from exc


def _check_segment(segment: str, key: str) -> None:
    if segment in ("", ".", ".."):
        raise ValueError(f"object key {key!r} has an empty, '.' or '..' segment")
    if len(segment.encode()) > MAX_SEGMENT_BYTES:
        raise ValueError(f"object key {key!r} has a segment longer than {MAX_SEGMENT_BYTES} bytes")


def check_content_type(content_type: str) -> str:
    content_type = content_type.strip()  # HTTP would strip it anyway
    if not content_type:
        return DEFAULT_CONTENT_TYPE
    if not (content_type.isascii() and content_type.isprintable()):
        raise ValueError(f"content type {content_type!r} is not printable ASCII")
    return content_type


def encode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Check user metadata; return it as S3 carries it, values percent-encoded from UTF-8.

    HTTP headers carry only ASCII and lose surrounding blanks, and file names are often
    neither. Keys are restricted because S3 lower-cases them and proxies such as nginx drop
    headers with underscores.
    """
    encoded: dict[str, str] = {}
    for key, value in metadata.items():
        if not _METADATA_KEY.fullmatch(key):
            raise ValueError(f"metadata key {key!r} is not lower-case letters, digits and '-'")
        if key == SHA256_METADATA_KEY:
            raise ValueError(f"metadata key {key!r} is reserved")
        encoded[key] = quote(value, safe="")
    if sum(len(k) + len(v) for k, v in encoded.items()) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes (values percent-encoded)")
    return encoded


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str


class ObjectStore(Protocol):
    """Blobs by key. `put` returns only once the bytes are durable (fsync / S3 200)."""

    async def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> ObjectInfo: ...

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes; ObjectNotFoundError if there is none, ObjectTooLargeError (without
        reading it) if it has more than `max_bytes`."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Idempotent: deleting a missing key is not an error."""
        ...

    async def list_keys(self, prefix: str) -> list[str]: ...

    async def close(self) -> None: ...
