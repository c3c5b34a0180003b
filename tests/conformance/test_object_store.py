"""One conformance suite for both object stores: files on disk and S3 (moto's S3 server).

Every test taking `object_store` runs against both; `file_store` and `s3_store` tests cover
what only one of them has (crash safety of the files, reaching the S3 endpoint).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import stat
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from pytest_httpserver import HTTPServer

from kubechat.stores.errors import (
    BucketMissingError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StoreError,
    StoreUnavailableError,
)
from kubechat.stores.objects import ObjectInfo, ObjectStat, ObjectStore
from kubechat.stores.objects import s3 as s3_module
from kubechat.stores.objects.files import FileObjectStore
from kubechat.stores.objects.minio_compat import user_metadata
from kubechat.stores.objects.s3 import S3ObjectStore
from tests.conftest import free_port
from tests.s3_server import KeywordOnlyMinio, S3Endpoint, moto_s3_server, unique_bucket_name

PDF = "application/pdf"
T = TypeVar("T")


class InspectableObjectStore(ObjectStore, Protocol):
    async def stat(self, key: str) -> ObjectStat: ...


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    with moto_s3_server() as endpoint:
        yield endpoint


def make_s3_store(endpoint: S3Endpoint, bucket: str) -> S3ObjectStore:
    return S3ObjectStore(
        endpoint.endpoint,
        endpoint.access_key,
        endpoint.secret_key,
        bucket,
        secure=endpoint.secure,
        region=endpoint.region,
        connect_timeout=2.0,
        read_timeout=10.0,
        retries=1,
    )


@pytest.fixture
async def s3_store(s3_endpoint: S3Endpoint) -> AsyncIterator[S3ObjectStore]:
    store = make_s3_store(s3_endpoint, unique_bucket_name())
    await store.ensure_bucket()
    yield store
    await store.close()


@pytest.fixture
async def file_store(tmp_path: Path) -> AsyncIterator[FileObjectStore]:
    store = FileObjectStore(tmp_path / "store")
    yield store
    await store.close()


@pytest.fixture(params=["file", "s3"])
async def object_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[InspectableObjectStore]:
    store: FileObjectStore | S3ObjectStore
    if request.param == "file":
        store = FileObjectStore(tmp_path / "store")
    else:
        # Looked up here so that runs of only the file store never start the S3 server.
        endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
        store = make_s3_store(endpoint, unique_bucket_name())
        await store.ensure_bucket()
    yield store
    await store.close()


def info_of(key: str, data: bytes) -> ObjectInfo:
    return ObjectInfo(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest())


# -- both stores ---------------------------------------------------------------------------


async def test_roundtrip_of_every_byte_value(object_store: InspectableObjectStore) -> None:
    key = "knowledge-bases/default/docs/0001/bytes.bin"
    data = bytes(range(256)) * 3

    info = await object_store.put(key, data, "application/octet-stream", {})

    assert info == info_of(key, data)
    assert await object_store.get(key) == data


@pytest.mark.parametrize("data", [b"", b"x", b"%PDF-1.7\n"], ids=["empty", "one-byte", "tiny"])
async def test_roundtrip_of_small_objects(object_store: InspectableObjectStore, data: bytes) -> None:
    key = "kb/docs/small/file.txt"

    assert await object_store.put(key, data, "text/plain", {}) == info_of(key, data)
    assert await object_store.get(key) == data


# 6 MiB is above S3's 5 MiB part size, so the S3 store uploads it in parts.
@pytest.mark.parametrize("size", [5_000_000, 6 * 1024 * 1024], ids=["5MB", "6MiB-multipart"])
async def test_roundtrip_of_large_objects(object_store: InspectableObjectStore, size: int) -> None:
    key = "kb/docs/large/scan.pdf"
    data = random.Random(size).randbytes(size)

    info = await object_store.put(key, data, PDF, {"name": "scan.pdf"})

    assert info == info_of(key, data)
    assert await object_store.get(key) == data
    assert (await object_store.stat(key)).info == info


async def test_stat_returns_what_put_recorded(object_store: InspectableObjectStore) -> None:
    key = "kb/docs/0002/Résumé 2024.pdf"
    data = b"%PDF-1.7 resume"
    # Non-ASCII, "%", surrounding blanks: all must survive S3's ASCII-only headers.
    metadata = {"name": " Résumé 2024 (final) 100%.pdf ", "uploaded-by": "alice", "document-id": "0002"}

    info = await object_store.put(key, data, PDF, metadata)
    stat_result = await object_store.stat(key)

    assert stat_result == ObjectStat(info=info, content_type=PDF, metadata=metadata)


async def test_empty_content_type_is_octet_stream(object_store: InspectableObjectStore) -> None:
    await object_store.put("kb/a.bin", b"a", "", {})

    assert (await object_store.stat("kb/a.bin")).content_type == "application/octet-stream"


async def test_overwrite_replaces_bytes_and_metadata(object_store: InspectableObjectStore) -> None:
    key = "kb/docs/0003/notes.md"
    await object_store.put(key, b"first version, longer than the second", "text/markdown", {"v": "1"})

    info = await object_store.put(key, b"second", "text/plain", {"rev": "2"})

    assert info == info_of(key, b"second")
    assert await object_store.get(key) == b"second"
    assert await object_store.stat(key) == ObjectStat(
        info=info, content_type="text/plain", metadata={"rev": "2"}
    )
    assert await object_store.list_keys("kb/") == [key]


async def test_exists(object_store: InspectableObjectStore) -> None:
    await object_store.put("kb/docs/0004/a.txt", b"a", "text/plain", {})

    assert await object_store.exists("kb/docs/0004/a.txt")
    assert not await object_store.exists("kb/docs/0004/b.txt")
    assert not await object_store.exists("kb/docs/0004")  # a "directory" is not an object
    assert not await object_store.exists("kb/docs/0004/a.txt/deeper")


async def test_get_and_stat_of_a_missing_key_raise_not_found(object_store: InspectableObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        await object_store.get("kb/docs/none/missing.pdf")
    with pytest.raises(ObjectNotFoundError):
        await object_store.stat("kb/docs/none/missing.pdf")


async def test_delete_then_get_raises_not_found(object_store: InspectableObjectStore) -> None:
    key = "kb/docs/0005/gone.pdf"
    await object_store.put(key, b"bytes", PDF, {"name": "gone.pdf"})

    await object_store.delete(key)

    assert not await object_store.exists(key)
    assert await object_store.list_keys("") == []
    with pytest.raises(ObjectNotFoundError):
        await object_store.get(key)


async def test_delete_of_a_missing_key_is_fine(object_store: InspectableObjectStore) -> None:
    await object_store.delete("kb/docs/never/was.pdf")
    await object_store.put("kb/docs/0006/once.pdf", b"x", PDF, {})
    await object_store.delete("kb/docs/0006/once.pdf")
    await object_store.delete("kb/docs/0006/once.pdf")


async def test_delete_leaves_other_keys(object_store: InspectableObjectStore) -> None:
    await object_store.put("kb/docs/0007/a.pdf", b"a", PDF, {})
    await object_store.put("kb/docs/0007/b.pdf", b"b", PDF, {})

    await object_store.delete("kb/docs/0007/a.pdf")

    assert await object_store.list_keys("kb/") == ["kb/docs/0007/b.pdf"]
    assert await object_store.get("kb/docs/0007/b.pdf") == b"b"


async def test_list_keys_by_prefix(object_store: InspectableObjectStore) -> None:
    keys = [
        "knowledge-bases/a/docs/2/z.pdf",
        "knowledge-bases/a/docs/1/y.pdf",
        "knowledge-bases/a/docs/1/x.pdf",
        "knowledge-bases/ab/docs/1/x.pdf",
        "knowledge-bases/b/docs/1/x.pdf",
        "top-level.txt",
    ]
    for key in keys:
        await object_store.put(key, key.encode(), "text/plain", {})

    assert await object_store.list_keys("knowledge-bases/a/") == [
        "knowledge-bases/a/docs/1/x.pdf",
        "knowledge-bases/a/docs/1/y.pdf",
        "knowledge-bases/a/docs/2/z.pdf",
    ]
    assert await object_store.list_keys("knowledge-bases/a/docs/1/") == [
        "knowledge-bases/a/docs/1/x.pdf",
        "knowledge-bases/a/docs/1/y.pdf",
    ]
    # Prefixes match as strings, as in S3: "a" also matches "ab".
    assert await object_store.list_keys("knowledge-bases/a") == [
        "knowledge-bases/a/docs/1/x.pdf",
        "knowledge-bases/a/docs/1/y.pdf",
        "knowledge-bases/a/docs/2/z.pdf",
        "knowledge-bases/ab/docs/1/x.pdf",
    ]
    assert await object_store.list_keys("knowledge-bases/a/docs/1/x") == ["knowledge-bases/a/docs/1/x.pdf"]
    assert await object_store.list_keys("") == sorted(keys)
    assert await object_store.list_keys("knowledge-bases/c/") == []
    assert await object_store.list_keys("nothing") == []


async def test_unicode_and_spaces_in_file_names(object_store: InspectableObjectStore) -> None:
    names = ["Résumé 2024 (final).pdf", "日本語 の 文書.docx", "a  b+c&d=e#f?.txt", "emoji 📄.md", "%41.txt"]
    for index, name in enumerate(names):
        key = f"kb/docs/{index}/{name}"
        data = name.encode() * 3
        assert await object_store.put(key, data, "application/octet-stream", {"name": name}) == info_of(
            key, data
        )
        assert await object_store.get(key) == data
        assert await object_store.exists(key)
        assert (await object_store.stat(key)).metadata == {"name": name}

    assert await object_store.list_keys("kb/docs/") == sorted(f"kb/docs/{i}/{n}" for i, n in enumerate(names))


async def test_concurrent_puts_of_different_keys_all_land(object_store: InspectableObjectStore) -> None:
    items = {f"kb/docs/{i:03d}/file {i}.txt": os.urandom(1000 + i) for i in range(24)}

    infos = await asyncio.gather(*(object_store.put(k, v, "text/plain", {}) for k, v in items.items()))

    assert infos == [info_of(k, v) for k, v in items.items()]
    assert await object_store.list_keys("kb/docs/") == sorted(items)
    fetched = await asyncio.gather(*(object_store.get(k) for k in items))
    assert fetched == list(items.values())


BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "kb/../../outside",
    "kb/..",
    "..",
    "kb/./a",
    "./a",
    "kb//a",
    "kb/a/",
    "kb\\..\\a",
    "kb/a\x00b",
    "kb/a\nb",
    "kb/" + "x" * 251,
    "kb/" + "é" * 126,  # 252 bytes of UTF-8
    "kb/\udcff",
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_keys_that_could_escape_or_are_not_canonical_are_rejected(
    object_store: InspectableObjectStore, key: str
) -> None:
    with pytest.raises(ValueError):
        await object_store.put(key, b"x", "text/plain", {})
    with pytest.raises(ValueError):
        await object_store.get(key)
    with pytest.raises(ValueError):
        await object_store.exists(key)
    with pytest.raises(ValueError):
        await object_store.delete(key)
    assert await object_store.list_keys("") == []


@pytest.mark.parametrize("prefix", ["/", "/etc", "../", "kb/../", "kb//", "a\\b", "kb\x00"])
async def test_prefixes_that_could_escape_are_rejected(
    object_store: InspectableObjectStore, prefix: str
) -> None:
    with pytest.raises(ValueError):
        await object_store.list_keys(prefix)


@pytest.mark.parametrize(
    ("content_type", "metadata"),
    [
        ("text/plain", {"Name": "upper-case key"}),
        ("text/plain", {"original_name": "underscore"}),
        ("text/plain", {"-leading": "dash"}),
        ("text/plain", {"kubechat-sha256": "reserved"}),
        ("text/plain", {"big": "x" * 2000}),
        ("text/plain", {"big": "é" * 400}),  # 2400 bytes once percent-encoded
        ("text/\nplain", {}),
        ("texte/é", {}),
    ],
)
async def test_invalid_content_type_or_metadata_is_rejected(
    object_store: InspectableObjectStore, content_type: str, metadata: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        await object_store.put("kb/a.txt", b"a", content_type, metadata)
    assert not await object_store.exists("kb/a.txt")


# -- files on disk -------------------------------------------------------------------------


async def test_file_store_keeps_bytes_as_files_and_prunes_empty_directories(
    file_store: FileObjectStore,
) -> None:
    key = "knowledge-bases/default/docs/0001/report.pdf"
    await file_store.put(key, b"%PDF", PDF, {"name": "report.pdf"})

    assert (file_store.root / "objects" / key).read_bytes() == b"%PDF"

    await file_store.delete(key)

    assert list((file_store.root / "objects").iterdir()) == []
    assert list((file_store.root / "meta").iterdir()) == []


async def test_file_store_put_fsyncs_before_and_after_the_rename(
    file_store: FileObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def spy_fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def spy_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)

    await file_store.put("kb/docs/1/a.pdf", b"a", PDF, {})

    # Two files (sidecar, then bytes): each fsynced before its rename, its directory after.
    replaces = [i for i, event in enumerate(events) if event == "replace"]
    assert len(replaces) == 2
    previous = -1
    for index in replaces:
        assert "fsync-file" in events[previous + 1 : index]
        assert events[index + 1] == "fsync-dir"
        previous = index


async def test_file_store_crash_mid_put_leaves_no_object_and_no_temp_file(
    file_store: FileObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)

    with pytest.raises(StoreError):
        await file_store.put("kb/docs/1/a.pdf", b"partial?", PDF, {})

    monkeypatch.undo()
    assert await file_store.list_keys("") == []
    assert not await file_store.exists("kb/docs/1/a.pdf")
    assert list((file_store.root / "staging").iterdir()) == []


async def test_file_store_failed_overwrite_keeps_the_previous_object(
    file_store: FileObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "kb/docs/1/a.pdf"
    first = await file_store.put(key, b"version 1", PDF, {"v": "1"})
    real_replace = os.replace
    calls = 0

    def fail_second_rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        # The sidecar's rename succeeds, the bytes' rename (the commit) fails.
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_second_rename)
    with pytest.raises(StoreError, match="No space left"):
        await file_store.put(key, b"version 2", "text/plain", {"v": "2"})
    monkeypatch.undo()

    assert await file_store.get(key) == b"version 1"
    assert await file_store.list_keys("") == [key]
    assert list((file_store.root / "staging").iterdir()) == []
    # The sidecar now describes bytes that never landed: stat must not pair it with version 1.
    assert await file_store.stat(key) == ObjectStat(info=first, content_type="application/octet-stream")


async def test_file_store_failed_write_removes_its_temp_file(
    file_store: FileObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(StoreError):
        await file_store.put("kb/a.pdf", b"a", PDF, {})
    monkeypatch.undo()

    assert list((file_store.root / "staging").iterdir()) == []
    assert await file_store.list_keys("") == []


async def test_file_store_removes_stale_temp_files_when_opened(tmp_path: Path) -> None:
    FileObjectStore(tmp_path)
    stale = tmp_path / "staging" / "crashed.part"
    fresh = tmp_path / "staging" / "in-progress.part"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    day_ago = time.time() - 86400
    os.utime(stale, (day_ago, day_ago))

    FileObjectStore(tmp_path)

    assert not stale.exists()
    assert fresh.exists()


async def test_file_store_key_under_an_object_is_a_conflict(file_store: FileObjectStore) -> None:
    await file_store.put("kb/a", b"a", "text/plain", {})

    with pytest.raises(StoreError, match="conflicts"):
        await file_store.put("kb/a/b", b"b", "text/plain", {})
    assert await file_store.get("kb/a") == b"a"


# -- S3 ------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_s3_unreachable_endpoint_is_unavailable_quickly() -> None:
    store = S3ObjectStore(
        f"127.0.0.1:{closed_port()}",
        "access",
        "secret",
        "kubechat-test",
        secure=False,
        region="us-east-1",
        connect_timeout=1.0,
        retries=1,
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="cannot reach S3"):
        await store.get("kb/a.pdf")
    with pytest.raises(StoreUnavailableError):
        await store.put("kb/a.pdf", b"a", PDF, {})
    with pytest.raises(StoreUnavailableError):
        await store.list_keys("kb/")
    with pytest.raises(StoreUnavailableError):
        await store.ensure_bucket()
    assert time.monotonic() - started < 10
    await store.close()


async def test_s3_repr_and_errors_do_not_show_credentials(s3_endpoint: S3Endpoint) -> None:
    secret = "very-secret-key-do-not-print"
    store = S3ObjectStore(s3_endpoint.endpoint, "the-access-key", secret, "no-such-bucket-here", secure=False)

    assert secret not in repr(store)
    assert "the-access-key" not in repr(store)
    assert secret not in str(store)
    with pytest.raises(StoreError) as raised:
        await store.get("kb/a.pdf")
    assert secret not in str(raised.value)
    await store.close()


async def test_s3_missing_bucket_is_a_store_error_naming_the_code(s3_endpoint: S3Endpoint) -> None:
    store = make_s3_store(s3_endpoint, unique_bucket_name())

    with pytest.raises(StoreError, match="NoSuchBucket") as raised:
        await store.put("kb/a.pdf", b"a", PDF, {})
    assert not isinstance(raised.value, ObjectNotFoundError | StoreUnavailableError)
    await store.close()


async def test_s3_ensure_bucket_is_idempotent(s3_endpoint: S3Endpoint) -> None:
    store = make_s3_store(s3_endpoint, unique_bucket_name())

    await store.ensure_bucket()
    await store.put("kb/a.pdf", b"a", PDF, {})
    await store.ensure_bucket()

    assert await store.list_keys("") == ["kb/a.pdf"]
    await store.close()


async def test_s3_objects_carry_content_type_and_user_metadata(s3_store: S3ObjectStore) -> None:
    """Other S3 clients (the MinIO console, mc) see the content type and readable metadata."""
    from minio import Minio  # the store's own client is private

    await s3_store.put("kb/r.pdf", b"%PDF", PDF, {"name": "r é.pdf"})
    client = Minio(
        endpoint=s3_store.endpoint, access_key="a", secret_key="s", secure=False, region="us-east-1"
    )
    result = client.stat_object(bucket_name=s3_store.bucket, object_name="kb/r.pdf")

    assert result.content_type == PDF
    metadata = user_metadata(result)
    assert metadata["name"] == "r%20%C3%A9.pdf"
    assert metadata["kubechat-sha256"] == hashlib.sha256(b"%PDF").hexdigest()


def test_s3_endpoint_must_be_host_and_port() -> None:
    for endpoint in ("http://minio:9000", "minio:9000/path"):
        with pytest.raises(ValueError, match="host"):
            S3ObjectStore(endpoint, "a", "s", "bucket")


def s3_error_document(code: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{code} happened</Message>"
        "<Resource>/kubechat-test/kb/a.pdf</Resource><RequestId>1</RequestId></Error>"
    )


# moto cannot be made to answer these; a plain HTTP server answers as S3 and MinIO do.
@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected", "message"),
    [
        (503, s3_error_document("SlowDown"), "application/xml", StoreUnavailableError, "503"),
        (502, "<html>Bad Gateway</html>", "text/html", StoreUnavailableError, "502"),
        (403, s3_error_document("AccessDenied"), "application/xml", StoreError, "AccessDenied"),
        (400, s3_error_document("InvalidArgument"), "application/xml", StoreError, "InvalidArgument"),
    ],
    ids=["slow-down", "proxy-502", "access-denied", "invalid-argument"],
)
async def test_s3_error_answers_map_to_store_errors(
    httpserver: HTTPServer,
    status: int,
    body: str,
    content_type: str,
    expected: type[StoreError],
    message: str,
) -> None:
    httpserver.expect_request("/kubechat-test/kb/a.pdf").respond_with_data(
        body, status=status, content_type=content_type
    )
    store = S3ObjectStore(
        f"{httpserver.host}:{httpserver.port}",
        "access",
        "secret",
        "kubechat-test",
        secure=False,
        region="us-east-1",
        retries=1,
    )

    with pytest.raises(StoreError, match=message) as raised:
        await store.get("kb/a.pdf")

    assert type(raised.value) is expected
    await store.close()


async def test_s3_retries_run_out_is_reported_as_failing_not_unreachable(httpserver: HTTPServer) -> None:
    """urllib3 retries 500/502/503/504 and then gives up with MaxRetryError, as it does for a lost
    connection: the server answered, so the message says what it answered."""
    httpserver.expect_request("/kubechat-test/kb/a.pdf").respond_with_data(
        s3_error_document("SlowDown"), status=503, content_type="application/xml"
    )
    store = S3ObjectStore(
        f"{httpserver.host}:{httpserver.port}", "access", "secret", "kubechat-test",
        secure=False, region="us-east-1", retries=2,
    )  # fmt: skip

    with pytest.raises(StoreUnavailableError) as raised:
        await store.get("kb/a.pdf")

    message = str(raised.value)
    assert "cannot reach" not in message
    assert "kept failing after 2 retries" in message and "503" in message
    assert len(httpserver.log) == 3
    await store.close()


# -- a missing bucket is not a missing object ----------------------------------------------------


async def test_s3_a_missing_bucket_is_not_reported_as_a_missing_object(s3_endpoint: S3Endpoint) -> None:
    """A HEAD answer has no body, so minio calls every 404 of an object NoSuchKey, bucket or not."""
    store = make_s3_store(s3_endpoint, unique_bucket_name())  # never created

    for attempt in (store.exists("kb/a.pdf"), store.stat("kb/a.pdf"), store.get("kb/a.pdf")):
        with pytest.raises(BucketMissingError, match="NoSuchBucket"):
            await attempt
    await store.close()


async def test_s3_a_missing_object_in_an_existing_bucket_is_still_missing(s3_store: S3ObjectStore) -> None:
    assert await s3_store.exists("kb/none.pdf") is False
    with pytest.raises(ObjectNotFoundError):
        await s3_store.stat("kb/none.pdf")


# -- minio-py 8 takes keywords only -----------------------------------------------------------------


async def test_s3_store_calls_minio_with_keywords_only(
    s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "Minio", KeywordOnlyMinio)
    store = make_s3_store(s3_endpoint, unique_bucket_name())
    await store.ensure_bucket()
    await store.put("kb/a.pdf", b"%PDF", PDF, {"name": "a.pdf"})

    assert await store.get("kb/a.pdf") == b"%PDF"
    assert await store.exists("kb/a.pdf") and not await store.exists("kb/b.pdf")
    assert (await store.stat("kb/a.pdf")).metadata == {"name": "a.pdf"}
    assert await store.list_keys("kb/") == ["kb/a.pdf"]
    await store.delete("kb/a.pdf")
    await store.close()


# -- reads hold a bounded buffer, not the object ---------------------------------------------------

BIG = 24 * 1024 * 1024


@pytest.fixture(scope="module")
def big_object() -> bytes:
    return random.Random(7).randbytes(BIG)


@pytest.fixture(scope="module")
def foreign_s3(tmp_path_factory: pytest.TempPathFactory, big_object: bytes) -> Iterator[str]:
    """An object another S3 client wrote (no kubechat-sha256 entry), served by a process of its
    own, so that measuring this process's memory measures the client alone. Python's http.server
    answers HEAD and GET of a path-style key as S3 does for what the store reads (Content-Length,
    Content-Type, Last-Modified); it checks no signature."""
    root = tmp_path_factory.mktemp("s3")
    (root / "kubechat-test" / "kb").mkdir(parents=True)
    (root / "kubechat-test" / "kb" / "big.bin").write_bytes(big_object)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def foreign_store(endpoint: str) -> S3ObjectStore:
    return S3ObjectStore(
        endpoint, "access", "secret", "kubechat-test", secure=False, region="us-east-1", retries=0
    )


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on a loop of its own. Not asyncio.run: on Python 3.11 its exit formats the repr of its
    SIGINT handler, which holds the finished task and so a repr of its (large) result."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def peak_while(call: Callable[[], Any]) -> int:
    """Peak bytes Python allocated while `call` ran (its worker threads included)."""
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_s3_stat_hashes_a_foreign_object_as_it_streams(foreign_s3: str, big_object: bytes) -> None:
    store = foreign_store(foreign_s3)
    found: list[ObjectStat] = []

    peak = peak_while(lambda: found.append(run(store.stat("kb/big.bin"))))

    assert found[0].info == info_of("kb/big.bin", big_object)
    assert peak < BIG // 4, f"stat held {peak} bytes for a {BIG}-byte object"


def test_s3_get_refuses_an_object_over_max_bytes_before_reading_it(
    foreign_s3: str, big_object: bytes
) -> None:
    store = foreign_store(foreign_s3)

    def get() -> None:
        with pytest.raises(ObjectTooLargeError, match=f"{BIG} bytes"):
            run(store.get("kb/big.bin", max_bytes=1024 * 1024))

    assert peak_while(get) < BIG // 4
    got: list[bytes] = []
    # Reading it whole holds it once (the result), not again in transit.
    peak = peak_while(lambda: got.append(run(store.get("kb/big.bin", max_bytes=BIG))))
    assert got == [big_object]
    assert peak < BIG * 1.5, f"get held {peak} bytes for a {BIG}-byte object"


async def test_get_with_max_bytes_refuses_larger_objects(object_store: InspectableObjectStore) -> None:
    await object_store.put("kb/a.bin", b"12345", "application/octet-stream", {})

    assert await object_store.get("kb/a.bin", max_bytes=5) == b"12345"
    with pytest.raises(ObjectTooLargeError):
        await object_store.get("kb/a.bin", max_bytes=4)


def test_file_store_stat_hashes_in_chunks(tmp_path: Path, big_object: bytes) -> None:
    store = FileObjectStore(tmp_path / "store")
    run(store.put("kb/big.bin", big_object, "application/octet-stream", {}))

    peak = peak_while(lambda: run(store.stat("kb/big.bin")))

    assert peak < BIG // 4
