"""The object stores of knowledge bases: the original bytes of uploaded documents.

`FileObjectStore` keeps them in a directory (embedded mode), `S3ObjectStore` in a MinIO (or
any S3) bucket (cluster mode). Both implement `kubechat.rag.stores.ObjectStore`, check keys,
content types and metadata by the same rules (what one accepts the other does too), and pass
one conformance suite (tests/conformance/test_object_store.py).

Keys are canonical relative paths (`knowledge-bases/default/docs/<id>/report.pdf`): no
leading `/`, no empty, `.` or `..` segment, no backslash or control character, at most
1024 bytes of UTF-8 and 250 per segment. Metadata keys are lower-case letters, digits and
`-`; values are any text (S3 carries them percent-encoded). Beyond the protocol, both stores
have `stat(key) -> ObjectStat` for the content type and metadata a put recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from kubechat.rag.stores import ObjectInfo, ObjectNotFoundError, StoreError, StoreUnavailableError

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_KEY_BYTES = 1024  # S3's limit
MAX_SEGMENT_BYTES = 250  # a file name (255 bytes on ext4 and XFS) less the sidecar's ".json"
MAX_METADATA_BYTES = 1900  # S3 allows 2 KB of user metadata; the rest is for the sha256 entry
_METADATA_KEY = re.compile(r"[a-z0-9][a-z0-9-]*")
# The store's own metadata entry in S3, so `stat` need not read the object to hash it.
_SHA256_METADATA_KEY = "kubechat-sha256"


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


def _check_content_type(content_type: str) -> str:
    content_type = content_type.strip()  # HTTP would strip it anyway
    if not content_type:
        return DEFAULT_CONTENT_TYPE
    if not (content_type.isascii() and content_type.isprintable()):
        raise ValueError(f"content type {content_type!r} is not printable ASCII")
    return content_type


def _encode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Check user metadata; return it as S3 carries it, values percent-encoded from UTF-8.

    HTTP headers carry only ASCII and lose surrounding blanks, and file names are often
    neither. Keys are restricted because S3 lower-cases them and proxies such as nginx drop
    headers with underscores.
    """
    encoded: dict[str, str] = {}
    for key, value in metadata.items():
        if not _METADATA_KEY.fullmatch(key):
            raise ValueError(f"metadata key {key!r} is not lower-case letters, digits and '-'")
        if key == _SHA256_METADATA_KEY:
            raise ValueError(f"metadata key {key!r} is reserved")
        encoded[key] = quote(value, safe="")
    if sum(len(k) + len(v) for k, v in encoded.items()) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes (values percent-encoded)")
    return encoded


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileObjectStore:
    """Objects as files under `root` (embedded mode).

    `objects/<key>` holds the bytes exactly as uploaded (so they can be looked at on disk),
    `meta/<key>.json` the content type, metadata and sha256, `staging/` the temporary files
    of puts in progress. Each file is written in staging, fsynced, renamed into place and its
    directory fsynced, so a put that returned survives a crash and a crash mid-put leaves no
    partial object. The sidecar is written first and the bytes' rename commits the put; the
    sidecar counts only while its sha256 matches the bytes, so an interrupted overwrite never
    pairs bytes with another version's metadata (`stat` then reports the defaults).

    One process should own a root: a lock orders directory creation and pruning between
    this store's threads only.
    """

    _STALE_STAGING_S = 3600.0

    def __init__(self, root: Path) -> None:
        self._root = root
        self._objects = root / "objects"
        self._meta = root / "meta"
        self._staging = root / "staging"
        # Puts create directories that deletes prune; both happen in worker threads.
        self._tree_lock = threading.Lock()
        for directory in (self._objects, self._meta, self._staging):
            _make_dirs(directory)
        self._remove_stale_staging()

    def __repr__(self) -> str:
        return f"FileObjectStore(root={str(self._root)!r})"

    @property
    def root(self) -> Path:
        return self._root

    async def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> ObjectInfo:
        check_key(key)
        content_type = _check_content_type(content_type)
        _encode_metadata(metadata)
        return await asyncio.to_thread(self._put, key, data, content_type, dict(metadata))

    async def get(self, key: str) -> bytes:
        check_key(key)
        return await asyncio.to_thread(self._read, key)

    async def exists(self, key: str) -> bool:
        check_key(key)
        return await asyncio.to_thread(self._object_path(key).is_file)

    async def stat(self, key: str) -> ObjectStat:
        check_key(key)
        return await asyncio.to_thread(self._stat, key)

    async def delete(self, key: str) -> None:
        check_key(key)
        await asyncio.to_thread(self._delete, key)

    async def list_keys(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        return await asyncio.to_thread(self._list_keys, prefix)

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""

    def _object_path(self, key: str) -> Path:
        return self._objects / key

    def _sidecar_path(self, key: str) -> Path:
        return self._meta / f"{key}.json"

    def _put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> ObjectInfo:
        info = ObjectInfo(key=key, size=len(data), sha256=_sha256_hex(data))
        sidecar = {"content_type": content_type, "metadata": metadata, "sha256": info.sha256}
        try:
            # Bytes last: their rename commits the put, so a put that fails leaves them as they were.
            self._write_durably(self._sidecar_path(key), json.dumps(sidecar, ensure_ascii=False).encode())
            self._write_durably(self._object_path(key), data)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            raise StoreError(f"object key {key!r} conflicts with an existing key ({exc.strerror})") from exc
        except OSError as exc:
            raise StoreError(f"cannot write object {key!r}: {exc}") from exc
        return info

    def _write_durably(self, path: Path, data: bytes) -> None:
        fd, temp_name = tempfile.mkstemp(dir=self._staging, suffix=".part")
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            with self._tree_lock:
                _make_dirs(path.parent)
                os.replace(temp, path)
                _fsync_dir(path.parent)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _read(self, key: str) -> bytes:
        try:
            return self._object_path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFoundError(f"no object {key!r}") from exc
        except OSError as exc:
            raise StoreError(f"cannot read object {key!r}: {exc}") from exc

    def _stat(self, key: str) -> ObjectStat:
        data = self._read(key)
        info = ObjectInfo(key=key, size=len(data), sha256=_sha256_hex(data))
        try:
            sidecar: Any = json.loads(self._sidecar_path(key).read_bytes())
        except (OSError, ValueError):
            sidecar = None
        if not isinstance(sidecar, dict) or sidecar.get("sha256") != info.sha256:
            # Missing, or written by an overwrite that failed before its bytes were renamed.
            return ObjectStat(info=info, content_type=DEFAULT_CONTENT_TYPE)
        metadata = {str(k): str(v) for k, v in dict(sidecar.get("metadata", {})).items()}
        return ObjectStat(info=info, content_type=str(sidecar["content_type"]), metadata=metadata)

    def _delete(self, key: str) -> None:
        # Bytes first: an orphaned sidecar is invisible and harmless, an orphaned object is not.
        for path, base in ((self._object_path(key), self._objects), (self._sidecar_path(key), self._meta)):
            with self._tree_lock:
                try:
                    path.unlink()
                except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    continue
                except OSError as exc:
                    raise StoreError(f"cannot delete object {key!r}: {exc}") from exc
                _fsync_dir(path.parent)
                _prune_empty_dirs(path.parent, base)

    def _list_keys(self, prefix: str) -> list[str]:
        # S3 matches prefixes as strings ("docs/a" matches "docs/ab/x"); walk from the
        # deepest directory the prefix names and filter.
        directory = prefix.rpartition("/")[0]
        keys: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(self._objects / directory):
            relative = Path(dirpath).relative_to(self._objects).as_posix()
            for name in filenames:
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def _remove_stale_staging(self) -> None:
        """Remove temporary files that crashed puts left (old enough not to be in progress)."""
        cutoff = time.time() - self._STALE_STAGING_S
        for temp in self._staging.iterdir():
            try:
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
            except OSError as exc:
                logger.warning("cannot remove stale temporary file %s: %s", temp, exc)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(directory: Path) -> None:
    """`mkdir -p` that fsyncs the parent of each directory it creates, so new entries are durable."""
    missing: list[Path] = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:
            if not new.is_dir():
                raise
        _fsync_dir(new.parent)


def _prune_empty_dirs(directory: Path, base: Path) -> None:
    while directory != base and base in directory.parents:
        try:
            directory.rmdir()
        except OSError:  # not empty
            return
        directory = directory.parent


# S3 error codes that mean "busy or restarting, try again".
_UNAVAILABLE_S3_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "XMinioServerNotInitialized"}
)


class S3ObjectStore:
    """Objects in an S3 bucket (cluster mode: MinIO), through the `minio` client in worker threads.

    `endpoint` is `host` or `host:port`, as the minio client takes it: no scheme and no path;
    `secure` picks https. `region` saves a GetBucketLocation request per bucket when set
    (MinIO's default is us-east-1). Timeouts and retries bound how long an unreachable
    server can hold a request: `connect_timeout` and `read_timeout` are per attempt and per
    socket operation, `retries` counts retries of connection errors and of 500/502/503/504.
    `ca_file` is a PEM bundle for a private CA (default: $SSL_CERT_FILE or certifi's).

    Errors: a missing object raises ObjectNotFoundError; an unreachable or overloaded
    server StoreUnavailableError; any other S3 error StoreError naming the S3 code. Call
    `ensure_bucket()` once at startup. Credentials are kept only inside the minio client.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = True,
        region: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 3,
        ca_file: Path | None = None,
        max_connections: int = 16,
    ) -> None:
        if "://" in endpoint or "/" in endpoint:
            raise ValueError(f"S3 endpoint {endpoint!r} must be host[:port], without scheme or path")
        self._endpoint = endpoint
        self._bucket = bucket
        self._secure = secure
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=max_connections,
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(ca_file) if ca_file else os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=self._http,
        )

    def __repr__(self) -> str:
        return f"S3ObjectStore(endpoint={self._endpoint!r}, bucket={self._bucket!r}, secure={self._secure!r})"

    @property
    def endpoint(self) -> str:
        return self._endpoint

    @property
    def bucket(self) -> str:
        return self._bucket

    async def ensure_bucket(self) -> None:
        """Create the bucket if it is missing; a bucket already there (ours) is fine."""

        def create() -> bool:
            if self._client.bucket_exists(self._bucket):
                return False
            try:
                self._client.make_bucket(self._bucket)
            except S3Error as exc:
                if exc.code == "BucketAlreadyOwnedByYou":  # another replica was faster
                    return False
                raise
            return True

        if await self._run(create, f"create bucket {self._bucket!r}"):
            logger.info("created bucket %s at %s", self._bucket, self._endpoint)

    async def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> ObjectInfo:
        check_key(key)
        content_type = _check_content_type(content_type)
        encoded = _encode_metadata(metadata)

        def upload() -> ObjectInfo:
            info = ObjectInfo(key=key, size=len(data), sha256=_sha256_hex(data))
            # Prefixed here so minio does not take keys like "content-language" for headers.
            headers: dict[str, str | list[str] | tuple[str]] = {
                f"x-amz-meta-{name}": value for name, value in encoded.items()
            }
            headers[f"x-amz-meta-{_SHA256_METADATA_KEY}"] = info.sha256
            self._client.put_object(
                self._bucket, key, io.BytesIO(data), len(data), content_type=content_type, metadata=headers
            )
            return info

        return await self._run(upload, f"put {key!r} into bucket {self._bucket!r}")

    async def get(self, key: str) -> bytes:
        check_key(key)
        return await self._run(lambda: self._download(key), f"get {key!r} from bucket {self._bucket!r}")

    async def exists(self, key: str) -> bool:
        check_key(key)

        def head() -> bool:
            try:
                self._client.stat_object(self._bucket, key)
            except S3Error as exc:
                if exc.code == "NoSuchKey":
                    return False
                raise
            return True

        return await self._run(head, f"look up {key!r} in bucket {self._bucket!r}")

    async def stat(self, key: str) -> ObjectStat:
        check_key(key)

        def head() -> ObjectStat:
            result = self._client.stat_object(self._bucket, key)
            metadata: dict[str, str] = {}
            for name, value in (result.metadata or {}).items():
                name = name.lower()
                if name.startswith("x-amz-meta-"):
                    metadata[name.removeprefix("x-amz-meta-")] = unquote(value)
            sha256 = metadata.pop(_SHA256_METADATA_KEY, None)
            if sha256 is None:  # written by another client: hash the bytes
                sha256 = _sha256_hex(self._download(key))
            return ObjectStat(
                info=ObjectInfo(key=key, size=result.size or 0, sha256=sha256),
                content_type=result.content_type or DEFAULT_CONTENT_TYPE,
                metadata=metadata,
            )

        return await self._run(head, f"stat {key!r} in bucket {self._bucket!r}")

    async def delete(self, key: str) -> None:
        check_key(key)

        def remove() -> None:
            try:
                self._client.remove_object(self._bucket, key)
            except S3Error as exc:  # S3 answers 204 for a missing key; some servers 404
                if exc.code != "NoSuchKey":
                    raise

        await self._run(remove, f"delete {key!r} from bucket {self._bucket!r}")

    async def list_keys(self, prefix: str) -> list[str]:
        check_prefix(prefix)

        def list_all() -> list[str]:
            objects = self._client.list_objects(self._bucket, prefix=prefix or None, recursive=True)
            # Keys ending in "/" are "folder" markers some consoles create, not objects.
            names = (obj.object_name for obj in objects)
            return sorted(name for name in names if name and not name.endswith("/"))

        return await self._run(list_all, f"list {prefix!r} in bucket {self._bucket!r}")

    async def close(self) -> None:
        self._http.clear()

    def _download(self, key: str) -> bytes:
        response = self._client.get_object(self._bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    async def _run(self, call: Callable[[], T], action: str) -> T:
        """Run a blocking minio call in a worker thread and map its errors onto the store's."""
        try:
            return await asyncio.to_thread(call)
        except S3Error as exc:
            message = f"{action}: S3 error {exc.code}: {exc.message}"
            if exc.code == "NoSuchKey":
                raise ObjectNotFoundError(f"{action}: no such object") from exc
            if exc.code in _UNAVAILABLE_S3_CODES:
                raise StoreUnavailableError(message) from exc
            raise StoreError(message) from exc
        except ServerError as exc:  # a 5xx without an S3 error document
            raise StoreUnavailableError(f"{action}: S3 answered HTTP {exc.status_code}") from exc
        except InvalidResponseError as exc:
            # Not S3 speaking (e.g. an ingress's HTML error page); minio keeps the status privately.
            status = getattr(exc, "_code", 0)
            if isinstance(status, int) and status >= 500:
                raise StoreUnavailableError(f"{action}: S3 endpoint answered HTTP {status}") from exc
            raise StoreError(f"{action}: {exc}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailableError(f"{action}: cannot reach S3 at {self._endpoint}: {exc}") from exc
