"""Objects in an S3 bucket (cluster mode: MinIO), through the `minio` client.

Every call into minio names its arguments: minio-py 8 makes them keyword-only (upstream commit
"Refactor for v8.0.0", minio/minio.py), and the names kubechat uses are the same in 7.2. Two
things differ between the majors and are bridged in `minio_compat`: put_object's metadata
argument (7: `metadata`; 8: `headers` / `user_metadata`) and stat_object's answer (7: `Object`
with every header in `metadata`; 8: `HeadObjectResponse` with `user_metadata`).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from kubechat.stores.errors import (
    BucketMissingError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StoreError,
    StoreUnavailableError,
)
from kubechat.stores.objects import (
    DEFAULT_CONTENT_TYPE,
    READ_CHUNK_BYTES,
    SHA256_METADATA_KEY,
    ObjectInfo,
    ObjectStat,
    check_content_type,
    check_key,
    check_prefix,
    encode_metadata,
)
from kubechat.stores.objects.minio_compat import put_metadata_argument, user_metadata

logger = logging.getLogger(__name__)
T = TypeVar("T")


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

    Errors: a missing object raises ObjectNotFoundError, a missing bucket BucketMissingError;
    an unreachable server StoreUnavailableError ("cannot reach"), and so is one that keeps
    answering 5xx until the retries run out (saying so); any other S3 error StoreError naming
    the S3 code. Call `ensure_bucket()` once at startup. Credentials are kept only inside the
    minio client.

    Reads stream through a buffer of READ_CHUNK_BYTES: `get` fills one buffer of the object's
    size (and refuses one over `max_bytes` before reading it), and `stat` hashes an object
    written without the store's sha256 entry chunk by chunk, never holding it whole.
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
        self._retries = retries
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=max_connections,
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(ca_file) if ca_file else os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self._client = Minio(
            endpoint=endpoint,
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
            if self._client.bucket_exists(bucket_name=self._bucket):
                return False
            try:
                self._client.make_bucket(bucket_name=self._bucket)
            except S3Error as exc:
                if exc.code == "BucketAlreadyOwnedByYou":  # another replica was faster
                    return False
                raise
            return True

        if await self._run(create, f"create bucket {self._bucket!r}"):
            logger.info("created bucket %s at %s", self._bucket, self._endpoint)

    async def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> ObjectInfo:
        check_key(key)
        content_type = check_content_type(content_type)
        encoded = encode_metadata(metadata)

        def upload() -> ObjectInfo:
            info = ObjectInfo(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest())
            # Prefixed here so minio does not take keys like "content-language" for headers.
            headers = urllib3.HTTPHeaderDict({f"x-amz-meta-{name}": value for name, value in encoded.items()})
            headers[f"x-amz-meta-{SHA256_METADATA_KEY}"] = info.sha256
            metadata: dict[str, Any] = {put_metadata_argument(): headers}
            self._client.put_object(
                bucket_name=self._bucket, object_name=key, data=io.BytesIO(data), length=len(data),
                content_type=content_type, **metadata,
            )  # fmt: skip
            return info

        return await self._run(upload, f"put {key!r} into bucket {self._bucket!r}")

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        check_key(key)
        return await self._run(
            lambda: self._download(key, max_bytes), f"get {key!r} from bucket {self._bucket!r}"
        )

    async def exists(self, key: str) -> bool:
        check_key(key)

        def head() -> bool:
            try:
                self._head(key)
            except ObjectNotFoundError:
                return False
            return True

        return await self._run(head, f"look up {key!r} in bucket {self._bucket!r}")

    async def stat(self, key: str) -> ObjectStat:
        check_key(key)

        def head() -> ObjectStat:
            result = self._head(key)
            metadata = {name: unquote(value) for name, value in user_metadata(result).items()}
            sha256 = metadata.pop(SHA256_METADATA_KEY, None)
            if sha256 is None:  # written by another client: hash the bytes as they stream by
                digest = hashlib.sha256()
                for chunk in self._stream(key):
                    digest.update(chunk)
                sha256 = digest.hexdigest()
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
                self._client.remove_object(bucket_name=self._bucket, object_name=key)
            except S3Error as exc:  # S3 answers 204 for a missing key; some servers 404
                if exc.code != "NoSuchKey":
                    raise

        await self._run(remove, f"delete {key!r} from bucket {self._bucket!r}")

    async def list_keys(self, prefix: str) -> list[str]:
        check_prefix(prefix)

        def list_all() -> list[str]:
            objects = self._client.list_objects(
                bucket_name=self._bucket, prefix=prefix or None, recursive=True
            )
            # Keys ending in "/" are "folder" markers some consoles create, not objects.
            names = (obj.object_name for obj in objects)
            return sorted(name for name in names if name and not name.endswith("/"))

        return await self._run(list_all, f"list {prefix!r} in bucket {self._bucket!r}")

    async def close(self) -> None:
        self._http.clear()

    def _head(self, key: str):  # type: ignore[no-untyped-def]  # minio 7's Object, 8's HeadObjectResponse
        """stat_object, telling a missing bucket from a missing object.

        A HEAD answer has no body, so minio names every 404 of an object NoSuchKey
        (minio/api.py, `_url_open`'s error_map); S3 answers NoSuchBucket only where there is a
        body. One more request, on the 404 path only, says which it was.
        """
        try:
            return self._client.stat_object(bucket_name=self._bucket, object_name=key)
        except S3Error as exc:
            if exc.code != "NoSuchKey":
                raise
            if not self._client.bucket_exists(bucket_name=self._bucket):
                raise BucketMissingError(
                    f"S3 error NoSuchBucket: bucket {self._bucket!r} does not exist at {self._endpoint}"
                ) from exc
            raise ObjectNotFoundError(f"no object {key!r} in bucket {self._bucket!r}") from exc

    def _stream(self, key: str, size_limit: int | None = None) -> Iterator[bytes]:
        """The object's bytes in chunks of at most READ_CHUNK_BYTES; ObjectTooLargeError, before
        reading the body, when it declares more than `size_limit` bytes."""
        response = self._client.get_object(bucket_name=self._bucket, object_name=key)
        try:
            declared = response.headers.get("content-length")
            if size_limit is not None and declared is not None and int(declared) > size_limit:
                raise ObjectTooLargeError(f"{key!r} has {declared} bytes, more than the {size_limit} allowed")
            yield from response.stream(READ_CHUNK_BYTES)
        finally:
            response.close()
            if hasattr(response, "release_conn"):  # minio 7 hands out urllib3's response itself
                response.release_conn()

    def _download(self, key: str, max_bytes: int | None) -> bytes:
        buffer = io.BytesIO()  # getvalue() hands over its buffer without a copy
        for chunk in self._stream(key, max_bytes):
            buffer.write(chunk)
            if max_bytes is not None and buffer.tell() > max_bytes:  # a body longer than declared
                raise ObjectTooLargeError(f"{key!r} has more than the {max_bytes} bytes allowed")
        return buffer.getvalue()

    async def _run(self, call: Callable[[], T], action: str) -> T:
        """Run a blocking minio call in a worker thread and map its errors onto the store's."""
        try:
            return await asyncio.to_thread(call)
        except StoreError:
            raise
        except S3Error as exc:
            message = f"{action}: S3 error {exc.code}: {exc.message}"
            if exc.code == "NoSuchKey":
                raise ObjectNotFoundError(f"{action}: no such object") from exc
            if exc.code == "NoSuchBucket":
                raise BucketMissingError(
                    f"{message} (no bucket {self._bucket!r} at {self._endpoint})"
                ) from exc
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
        except urllib3.exceptions.MaxRetryError as exc:
            if isinstance(exc.reason, urllib3.exceptions.ResponseError):
                # The server answered, every time, with a status the pool retries (500/502/503/504).
                raise StoreUnavailableError(
                    f"{action}: S3 at {self._endpoint} kept failing after {self._retries} retries "
                    f"({exc.reason})"
                ) from exc
            raise StoreUnavailableError(
                f"{action}: cannot reach S3 at {self._endpoint}: {exc.reason or exc}"
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailableError(f"{action}: cannot reach S3 at {self._endpoint}: {exc}") from exc
