"""The /images API end to end: the real API process, its embedded object store on disk."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from kubechat.images.service import owner_of
from tests.conftest import BOB_KEY, ApiProcess, auth

pytestmark = pytest.mark.triton

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # the API's default KUBECHAT_MAX_IMAGE_BYTES


def picture(
    colour: tuple[int, int, int], size: tuple[int, int] = (300, 200), image_format: str = "PNG"
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, image_format)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


PHOTO = picture((200, 30, 30), size=(3000, 1500), image_format="JPEG")


@pytest.fixture
async def bob(api: ApiProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, headers=auth(BOB_KEY), timeout=120) as client:
        yield client


def stored_files(api: ApiProcess, principal: str = "alice") -> list[Path]:
    """The principal's image objects in the embedded object store (STATE_DIR/documents)."""
    folder = Path(api.env["KUBECHAT_STATE_DIR"]) / "documents" / "objects" / "images" / owner_of(principal)
    return sorted(p for p in folder.rglob("*") if p.is_file())


async def upload(
    http: httpx.AsyncClient, data: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg"
) -> httpx.Response:
    return await http.post("/images", files={"file": (name, data, content_type)})


async def uploaded(http: httpx.AsyncClient, data: bytes, name: str = "photo.jpg") -> dict[str, Any]:
    response = await upload(http, data, name)
    assert response.status_code == 201, response.text
    return dict(response.json())


def error_of(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def test_upload_then_read(api: ApiProcess, http: httpx.AsyncClient) -> None:
    response = await upload(http, PHOTO, "C:\\Users\\alice\\holiday.jpg")

    assert response.status_code == 201, response.text
    image = response.json()
    assert image["duplicate"] is False
    assert (image["name"], image["width"], image["height"]) == ("holiday.jpg", 2048, 1024)
    assert (image["source_format"], image["source_bytes"]) == ("jpeg", len(PHOTO))
    assert len(image["id"]) == 64
    metadata = (await http.get(f"/images/{image['id']}")).json()
    assert metadata == {k: v for k, v in image.items() if k != "duplicate"}
    assert image["id"] in [i["id"] for i in (await http.get("/images")).json()["items"]]

    content = await http.get(f"/images/{image['id']}/content")
    assert content.status_code == 200 and content.headers["content-type"] == "image/png"
    assert content.headers["x-content-type-options"] == "nosniff"
    assert content.headers["cache-control"].startswith("private, max-age=")
    assert len(content.content) == image["bytes"]
    with Image.open(io.BytesIO(content.content)) as png:
        assert png.format == "PNG" and png.size == (2048, 1024)
    thumbnail = await http.get(f"/images/{image['id']}/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert thumbnail.headers["x-content-type-options"] == "nosniff"
    with Image.open(io.BytesIO(thumbnail.content)) as jpeg:
        assert jpeg.format == "JPEG" and jpeg.size == (256, 128)
    # Acknowledged means on disk: the image, its thumbnail and its record.
    names = {p.name for p in stored_files(api) if p.parent.name == image["id"]}
    assert names == {"image.png", "thumbnail.jpg", "meta.json"}


async def test_same_picture_again_is_a_duplicate(http: httpx.AsyncClient) -> None:
    first = await uploaded(http, picture((1, 2, 3)), "first.png")

    response = await upload(http, picture((1, 2, 3)), "second.png", "image/png")

    assert response.status_code == 201, response.text
    again = response.json()
    assert again["duplicate"] is True and again["id"] == first["id"] and again["name"] == "first.png"
    assert [i["id"] for i in (await http.get("/images")).json()["items"]].count(first["id"]) == 1


async def test_list_is_newest_first(http: httpx.AsyncClient) -> None:
    ids = [(await uploaded(http, picture((n, 100, 100)), f"{n}.png"))["id"] for n in (10, 11, 12)]
    listed = [i["id"] for i in (await http.get("/images")).json()["items"]]
    assert [i for i in listed if i in ids] == ids[::-1]


async def test_another_principal_cannot_reach_an_image(
    api: ApiProcess, http: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    image = await uploaded(http, picture((40, 50, 60)), "alices.png")

    assert image["id"] not in [i["id"] for i in (await bob.get("/images")).json()["items"]]
    for response in (
        await bob.get(f"/images/{image['id']}"),
        await bob.get(f"/images/{image['id']}/content"),
        await bob.get(f"/images/{image['id']}/thumbnail"),
        await bob.delete(f"/images/{image['id']}"),
    ):
        assert response.status_code == 404 and error_of(response) == "image_not_found", response.text
        # Word for word what a missing image answers.
        missing = await bob.get(f"/images/{'0' * 64}")
        assert (
            response.json()["error"]["message"].replace(image["id"], "0" * 64)
            == missing.json()["error"]["message"]
        )
    assert (await http.get(f"/images/{image['id']}/content")).status_code == 200  # still alice's
    assert image["id"] not in {p.parent.name for p in stored_files(api, "bob")}


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n%%EOF\n", 415, "unsupported_media_type"),
        (b"just text named like a picture", 415, "unsupported_media_type"),
        (picture((9, 9, 9), image_format="BMP"), 415, "unsupported_media_type"),
        (picture((9, 9, 9), image_format="TIFF"), 415, "unsupported_media_type"),
        (PHOTO[: len(PHOTO) // 2], 400, "corrupt_image"),
        (picture((9, 9, 9))[:-200], 400, "corrupt_image"),
        (b"", 400, "corrupt_image"),
        (png_declaring(20_000, 20_000), 413, "decompression_bomb"),
        (png_declaring(7000, 7000), 413, "decompression_bomb"),  # 49 MP: only our limit refuses it
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * (MAX_IMAGE_BYTES - 7), 413, "image_too_large"),
    ],
    ids=["pdf", "text", "bmp", "tiff", "truncated-jpeg", "truncated-png", "empty", "bomb", "49MP", "bytes"],
)
async def test_bad_images_are_refused_and_store_nothing(
    api: ApiProcess, http: httpx.AsyncClient, data: bytes, status: int, code: str
) -> None:
    before, files_before = (await http.get("/images")).json()["items"], stored_files(api)

    response = await upload(http, data, "bad.png", "image/png")

    assert response.status_code == status, response.text
    assert error_of(response) == code and response.json()["error"]["message"]
    assert (await http.get("/images")).json()["items"] == before
    assert stored_files(api) == files_before


@pytest.mark.parametrize(
    "files",
    [
        {"image": ("a.png", picture((1, 1, 1)), "image/png")},  # wrong part name
        [
            ("file", ("a.png", picture((1, 1, 1)), "image/png")),
            ("file", ("b.png", picture((2, 2, 2)), "image/png")),
        ],
    ],
    ids=["no-file-part", "two-files"],
)
async def test_one_part_named_file_is_required(http: httpx.AsyncClient, files: Any) -> None:
    response = await http.post("/images", files=files)
    assert response.status_code == 400 and error_of(response) == "invalid_request", response.text


async def test_upload_must_be_multipart(http: httpx.AsyncClient) -> None:
    response = await http.post("/images", content=picture((1, 1, 1)), headers={"content-type": "image/png"})
    assert response.status_code == 400 and error_of(response) == "invalid_request"


async def test_upload_without_a_length_is_refused(http: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"--b\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\nxx\r\n--b--\r\n"

    response = await http.post(
        "/images", content=body(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 411 and error_of(response) == "length_required"


async def test_oversized_body_is_refused_before_it_is_sent(api: ApiProcess) -> None:
    """Only the headers go out: the answer comes without the server waiting for a gigabyte."""
    url = urlsplit(api.url)
    assert url.hostname is not None and url.port is not None
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(
            b"POST /images HTTP/1.1\r\nHost: kubechat\r\n"
            + f"Authorization: {auth()['Authorization']}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000000\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        status_line, _, headers = head.decode().partition("\r\n")
        assert status_line.startswith("HTTP/1.1 413"), head
        length = next(
            int(line.split(":", 1)[1])
            for line in headers.split("\r\n")
            if line.lower().startswith("content-length:")
        )
        body = await asyncio.wait_for(reader.readexactly(length), timeout=30)
        assert b'"image_too_large"' in body and str(MAX_IMAGE_BYTES).encode() in body
    finally:
        writer.close()


async def test_delete(api: ApiProcess, http: httpx.AsyncClient) -> None:
    image = await uploaded(http, picture((70, 80, 90)), "gone.png")

    response = await http.delete(f"/images/{image['id']}")

    assert response.status_code == 204 and response.content == b""
    for path in ("", "/content", "/thumbnail"):
        response = await http.get(f"/images/{image['id']}{path}")
        assert response.status_code == 404 and error_of(response) == "image_not_found"
    assert (await http.delete(f"/images/{image['id']}")).status_code == 404
    assert image["id"] not in [i["id"] for i in (await http.get("/images")).json()["items"]]
    assert image["id"] not in {p.parent.name for p in stored_files(api)}
    # Deleted pictures can be uploaded again.
    again = await uploaded(http, picture((70, 80, 90)), "back.png")
    assert again["id"] == image["id"] and again["duplicate"] is False and again["name"] == "back.png"


@pytest.mark.parametrize("image_id", ["nope", "A" * 64, "0" * 63, "%2e%2e", "0" * 64])
async def test_unknown_or_malformed_ids_are_not_found(http: httpx.AsyncClient, image_id: str) -> None:
    response = await http.get(f"/images/{image_id}")
    assert response.status_code == 404 and error_of(response) == "image_not_found", response.text


async def test_images_need_a_principal(api: ApiProcess) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as anonymous:
        for response in (
            await anonymous.get("/images"),
            await anonymous.post("/images", files={"file": b"x"}),
        ):
            assert response.status_code == 401 and error_of(response) == "unauthenticated"
