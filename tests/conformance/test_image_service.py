"""ImageService on both object stores: files on disk and S3 (moto's S3 server).

Every test taking `images` runs against both stores; the service must behave the same on each.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from PIL import Image

from kubechat.core.errors import (
    CorruptImageError,
    DecompressionBombError,
    ImageNotFoundError,
    InvalidRequestError,
    StorageUnavailableError,
    UnsupportedImageError,
)
from kubechat.images.processing import ImageLimits
from kubechat.images.service import ImageRecord, ImageService, owner_of, sanitize_name
from kubechat.stores.errors import StoreError
from kubechat.stores.objects import ObjectInfo, ObjectStore
from kubechat.stores.objects.files import FileObjectStore
from kubechat.stores.objects.s3 import S3ObjectStore
from tests.s3_server import S3Endpoint, moto_s3_server, unique_bucket_name

LIMITS = ImageLimits(max_bytes=1024 * 1024, max_pixels=1_000_000, max_side=256, thumbnail_side=32)
ALICE, BOB = "alice", "bob"


def picture(
    colour: tuple[int, int, int], size: tuple[int, int] = (320, 200), image_format: str = "PNG"
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, image_format)
    return buffer.getvalue()


RED = picture((255, 0, 0))
GREEN = picture((0, 255, 0))
BLUE = picture((0, 0, 255))


class RecordingStore:
    """Delegates to a real store, records the keys written, and fails puts when told to."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.puts: list[str] = []
        self.fail_put_of: str | None = None  # a key suffix

    async def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> ObjectInfo:
        if self.fail_put_of is not None and key.endswith(self.fail_put_of):
            raise StoreError(f"injected failure writing {key}")
        self.puts.append(key)
        return await self.inner.put(key, data, content_type, metadata)

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        return await self.inner.get(key, max_bytes=max_bytes)

    async def exists(self, key: str) -> bool:
        return await self.inner.exists(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def list_keys(self, prefix: str) -> list[str]:
        return await self.inner.list_keys(prefix)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture(params=["file", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordingStore]:
    inner: FileObjectStore | S3ObjectStore
    if request.param == "file":
        inner = FileObjectStore(tmp_path / "store")
    else:
        endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
        inner = S3ObjectStore(
            endpoint.endpoint, endpoint.access_key, endpoint.secret_key, unique_bucket_name(),
            secure=endpoint.secure, region=endpoint.region, connect_timeout=2.0, read_timeout=10.0, retries=1,
        )  # fmt: skip
        await inner.ensure_bucket()
    recording = RecordingStore(inner)
    yield recording
    await recording.close()


@pytest.fixture
def images(store: RecordingStore) -> ImageService:
    return ImageService(store, LIMITS)


def keys_of(principal: str, image_id: str) -> list[str]:
    folder = f"images/{owner_of(principal)}/{image_id}"
    return [f"{folder}/image.png", f"{folder}/meta.json", f"{folder}/thumbnail.jpg"]


# -- both stores ----------------------------------------------------------------------------


async def test_upload_round_trip(images: ImageService, store: RecordingStore) -> None:
    record, duplicate = await images.upload(ALICE, "holiday/red.png", RED)

    assert not duplicate
    assert (record.name, record.width, record.height) == ("red.png", 256, 160)
    assert (record.source_format, record.source_bytes) == ("png", len(RED))
    assert await store.list_keys("images/") == keys_of(ALICE, record.id)
    assert await images.get(ALICE, record.id) == record
    png = await images.content(ALICE, record.id)
    assert len(png) == record.bytes
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (256, 160)
    with Image.open(io.BytesIO(await images.thumbnail(ALICE, record.id))) as thumbnail:
        assert thumbnail.format == "JPEG" and thumbnail.size == (32, 20)
    assert (await images.list(ALICE, 10)).items == [record]
    # Written in the order that makes meta.json the commit.
    assert [key.rpartition("/")[2] for key in store.puts] == ["image.png", "thumbnail.jpg", "meta.json"]


async def test_same_picture_again_is_a_duplicate(images: ImageService, store: RecordingStore) -> None:
    first, _ = await images.upload(ALICE, "red.png", RED)
    writes = len(store.puts)

    again, duplicate = await images.upload(ALICE, "copy of red.png", RED)

    assert duplicate and again == first  # the first name and time are kept
    assert len(store.puts) == writes  # nothing rewritten
    assert (await images.list(ALICE, 10)).items == [first]
    # The same pixels in another format are the same image too.
    from_gif, duplicate = await images.upload(ALICE, "red.gif", picture((255, 0, 0), image_format="GIF"))
    assert duplicate and from_gif.id == first.id


async def test_principals_do_not_see_each_others_images(images: ImageService, store: RecordingStore) -> None:
    record, _ = await images.upload(ALICE, "red.png", RED)

    assert (await images.list(BOB, 10)).items == []
    for read in (images.get, images.content, images.thumbnail, images.delete):
        with pytest.raises(ImageNotFoundError) as caught:
            await read(BOB, record.id)
        # Exactly what a missing image answers: no hint that it exists.
        with pytest.raises(ImageNotFoundError) as missing:
            await read(BOB, "0" * 64)
        assert caught.value.message.replace(record.id, "") == missing.value.message.replace("0" * 64, "")
    assert await images.get(ALICE, record.id) == record  # bob's delete did nothing

    # Bob's copy of the same picture is his own.
    bobs, duplicate = await images.upload(BOB, "mine.png", RED)
    assert not duplicate and bobs.id == record.id and bobs.name == "mine.png"
    await images.delete(BOB, bobs.id)
    assert await images.get(ALICE, record.id) == record


@pytest.mark.parametrize("principal", ["../../etc", "a/b\\c", "ünïcode\n\x00", "", "x" * 5000])
async def test_any_principal_gets_a_safe_prefix(
    images: ImageService, store: RecordingStore, principal: str
) -> None:
    record, _ = await images.upload(principal, "red.png", RED)
    assert await store.list_keys("images/") == keys_of(principal, record.id)
    assert (await images.list(principal, 10)).items == [record]
    assert (await images.list(ALICE, 10)).items == []


@pytest.mark.parametrize(
    "image_id",
    ["", "nope", "A" * 64, "0" * 63, "0" * 65, "../" + "0" * 61, "0" * 32 + "/" + "0" * 31, "g" * 64],
)
async def test_malformed_ids_are_not_found(
    images: ImageService, store: RecordingStore, image_id: str
) -> None:
    for read in (images.get, images.content, images.thumbnail, images.delete):
        with pytest.raises(ImageNotFoundError):
            await read(ALICE, image_id)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"%PDF-1.7\n", UnsupportedImageError),
        (RED[: len(RED) // 2], CorruptImageError),
        (picture((1, 2, 3), size=(2000, 1000)), DecompressionBombError),
    ],
    ids=["unsupported", "truncated", "bomb"],
)
async def test_refused_images_store_nothing(
    images: ImageService, store: RecordingStore, data: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await images.upload(ALICE, "bad.png", data)
    assert store.puts == [] and await store.list_keys("images/") == []


@pytest.mark.parametrize("failing", ["image.png", "thumbnail.jpg", "meta.json"])
async def test_a_failed_write_leaves_no_image(
    images: ImageService, store: RecordingStore, failing: str
) -> None:
    store.fail_put_of = failing

    with pytest.raises(StorageUnavailableError):
        await images.upload(ALICE, "red.png", RED)

    assert await store.list_keys("images/") == []
    assert (await images.list(ALICE, 10)).items == []
    store.fail_put_of = None
    record, duplicate = await images.upload(ALICE, "red.png", RED)
    assert not duplicate and await images.get(ALICE, record.id) == record


async def test_bytes_without_a_record_are_not_an_image(images: ImageService, store: RecordingStore) -> None:
    record, _ = await images.upload(ALICE, "red.png", RED)
    meta = keys_of(ALICE, record.id)[1]
    await store.delete(meta)  # as if the upload had stopped before its record

    for read in (images.get, images.content, images.thumbnail, images.delete):
        with pytest.raises(ImageNotFoundError):
            await read(ALICE, record.id)
    assert (await images.list(ALICE, 10)).items == []
    again, duplicate = await images.upload(ALICE, "red.png", RED)
    assert not duplicate and again.id == record.id


async def test_list_is_newest_first(
    images: ImageService, store: RecordingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = itertools.count(1_700_000_000)
    monkeypatch.setattr("kubechat.images.service.time.time", lambda: float(next(clock)))
    uploaded = [
        (await images.upload(ALICE, f"{n}.png", data))[0] for n, data in enumerate((RED, GREEN, BLUE))
    ]
    await images.upload(BOB, "bob.png", GREEN)

    everything = await images.list(ALICE, 10)
    assert everything.items == uploaded[::-1] and everything.next_cursor is None
    # Pages of two: the newest two and a cursor, then the oldest and none.
    first = await images.list(ALICE, 2)
    assert first.items == uploaded[:0:-1] and first.next_cursor
    rest = await images.list(ALICE, 2, first.next_cursor)
    assert rest.items == uploaded[:1] and rest.next_cursor is None
    with pytest.raises(InvalidRequestError):
        await images.list(ALICE, 2, "not-a-cursor")


async def test_delete_removes_everything(images: ImageService, store: RecordingStore) -> None:
    kept, _ = await images.upload(ALICE, "green.png", GREEN)
    record, _ = await images.upload(ALICE, "red.png", RED)

    await images.delete(ALICE, record.id)

    assert await store.list_keys("images/") == keys_of(ALICE, kept.id)
    for read in (images.get, images.content, images.thumbnail, images.delete):
        with pytest.raises(ImageNotFoundError):
            await read(ALICE, record.id)
    assert (await images.list(ALICE, 10)).items == [kept]
    again, duplicate = await images.upload(ALICE, "red.png", RED)
    assert not duplicate and again.id == record.id


async def test_damaged_record_is_a_storage_error(images: ImageService, store: RecordingStore) -> None:
    record, _ = await images.upload(ALICE, "red.png", RED)
    await store.put(keys_of(ALICE, record.id)[1], b"{not json", "application/json", {})
    with pytest.raises(StorageUnavailableError):
        await images.get(ALICE, record.id)


# -- the pure parts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("cat.png", "cat.png"),
        ("C:\\Users\\me\\Pictures\\cat.png", "cat.png"),
        ("../../etc/passwd", "passwd"),
        ("a\x00b\r\nc.png", "abc.png"),
        ("evil\u202egnp.exe", "evilgnp.exe"),  # a right-to-left override disguising the extension
        ("  spaced .png  ", "spaced .png"),
        ("", "image"),
        ("..", "image"),
        ("dir/", "image"),
        ("e\u0301.png", "\u00e9.png"),  # NFC
        ("x" * 300 + ".jpeg", "x" * 250 + ".jpeg"),
        ("y" * 300, "y" * 255),
    ],
)
def test_names_are_sanitized(filename: str, expected: str) -> None:
    assert sanitize_name(filename) == expected


def test_owner_is_a_hash_of_the_principal() -> None:
    assert owner_of("alice") == "2bd806c97f0e00af1a1fc3328fa763a9"
    assert owner_of("alice") != owner_of("bob") and len(owner_of("\n/..")) == 32


def test_record_json_round_trip() -> None:
    record = ImageRecord(
        id="ab" * 32, name="ünïcode \"quoted\".png", width=3, height=4, source_format="webp",
        source_bytes=10, bytes=20, created_at=1_700_000_000.25,
    )  # fmt: skip
    assert ImageRecord.from_json(record.to_json()) == record
    assert ImageRecord.from_json(record.to_json().encode()) == record


@pytest.mark.parametrize(
    "text", ["", "[]", "{}", '{"id": "x"}', ImageRecord("zz" * 32, "n", 1, 1, "png", 1, 1, 0.0).to_json()]
)
def test_record_json_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        ImageRecord.from_json(text)
