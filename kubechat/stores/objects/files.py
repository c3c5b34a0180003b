"""Objects as files in a directory (embedded mode), durable once `put` returns."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TypeVar

from kubechat.stores.errors import ObjectNotFoundError, ObjectTooLargeError, StoreError
from kubechat.stores.objects import (
    DEFAULT_CONTENT_TYPE,
    READ_CHUNK_BYTES,
    ObjectInfo,
    ObjectStat,
    check_content_type,
    check_key,
    check_prefix,
    encode_metadata,
    sha256_hex,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


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
        content_type = check_content_type(content_type)
        encode_metadata(metadata)
        return await asyncio.to_thread(self._put, key, data, content_type, dict(metadata))

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        check_key(key)
        return await asyncio.to_thread(self._read, key, max_bytes)

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
        info = ObjectInfo(key=key, size=len(data), sha256=sha256_hex(data))
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

    def _read(self, key: str, max_bytes: int | None = None) -> bytes:
        try:
            with self._object_path(key).open("rb") as file:
                size = os.fstat(file.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise ObjectTooLargeError(f"{key!r} has {size} bytes, more than the {max_bytes} allowed")
                return file.read()  # one buffer of the file's size
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFoundError(f"no object {key!r}") from exc
        except OSError as exc:
            raise StoreError(f"cannot read object {key!r}: {exc}") from exc

    def _hash(self, key: str) -> tuple[int, str]:
        """Size and sha256 of an object's bytes, read in chunks of READ_CHUNK_BYTES."""
        digest, size = hashlib.sha256(), 0
        try:
            with self._object_path(key).open("rb") as file:
                while chunk := file.read(READ_CHUNK_BYTES):
                    digest.update(chunk)
                    size += len(chunk)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFoundError(f"no object {key!r}") from exc
        except OSError as exc:
            raise StoreError(f"cannot read object {key!r}: {exc}") from exc
        return size, digest.hexdigest()

    def _stat(self, key: str) -> ObjectStat:
        size, sha256 = self._hash(key)
        info = ObjectInfo(key=key, size=size, sha256=sha256)
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
