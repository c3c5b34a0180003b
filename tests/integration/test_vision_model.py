"""The OCR vision model (examples/models/ocr.yaml) through the session's real tritonserver.

The vision contract end to end: TritonGateway sends `image_bytes_input` with the chat inputs,
the python-backend model decodes the image, runs Tesseract and streams the description.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from kubechat.core.errors import ModelUnavailableError
from kubechat.embedded.tritonserver import TritonServer
from kubechat.triton.client import SamplingParams, TritonGateway

pytestmark = pytest.mark.triton

MODEL = "ocr"
FONT_FILE = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def encoded(lines: list[str], image_format: str = "PNG", size: tuple[int, int] = (800, 400)) -> bytes:
    """An image file with `lines` printed in black on white, one every 80 pixels."""
    font = ImageFont.truetype(str(FONT_FILE), 40) if FONT_FILE.exists() else ImageFont.load_default(size=40)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((40, 40 + 80 * i), line, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


INVOICE = encoded(["INVOICE 2024-117", "Total due 42.50 EUR"])


@pytest.fixture
async def gateway(triton: TritonServer) -> AsyncIterator[TritonGateway]:
    client = TritonGateway(triton.grpc_url, timeout_s=60)
    yield client
    await client.close()


async def test_describe_image_reads_the_text(gateway: TritonGateway) -> None:
    """The description carries the measured facts and the printed text, line for line."""
    description = await gateway.describe_image(MODEL, INVOICE, "What is the total?", max_tokens=256)
    lines = description.splitlines()
    assert lines[0] == "Image: 800×400 pixels, landscape."  # noqa: RUF001
    assert lines[-3:] == ["Text (OCR):", "INVOICE 2024-117", "Total due 42.50 EUR"]


async def test_stream_text_with_an_image_streams_line_by_line(gateway: TritonGateway) -> None:
    """One delta per line; the stream ends on Triton's final flag (stream_text raises otherwise)."""
    params = SamplingParams(max_tokens=256)
    deltas = [d async for d in gateway.stream_text(MODEL, "Describe it.", params, image=INVOICE)]
    assert len(deltas) >= 6
    assert all(d.endswith("\n") and d.count("\n") == 1 for d in deltas)
    assert "".join(deltas) == await gateway.describe_image(MODEL, INVOICE, "Describe it.", max_tokens=256)


async def test_an_image_without_text(gateway: TritonGateway) -> None:
    blank = io.BytesIO()
    Image.new("RGB", (320, 240), (20, 160, 40)).save(blank, "PNG")
    description = await gateway.describe_image(MODEL, blank.getvalue(), "", max_tokens=16)
    assert description.splitlines()[1] == "Dominant colours: green #14a028 (100%)."
    assert description.endswith("No text was found.\n")


def _bilevel_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (width, height), 1).save(buffer, "PNG")  # 30 MP in a few kilobytes
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (None, "image_bytes_input"),
        (b"\x89PNG but not really an image", "not a PNG, JPEG, WebP or GIF image"),
        (encoded(["BITMAP"], "BMP"), "not a PNG, JPEG, WebP or GIF image"),
        (INVOICE[: len(INVOICE) // 2], "cannot be decoded"),
        (_bilevel_png(6000, 5000), "6000x5000 pixels, more than the 25000000 allowed"),
    ],
    ids=["no-image", "garbage", "bmp", "truncated", "too-many-pixels"],
)
async def test_bad_requests_get_a_model_error_and_the_model_keeps_serving(
    gateway: TritonGateway, image: bytes | None, message: str
) -> None:
    """A refused request is an error response (ModelUnavailableError naming why), not a hang or crash."""
    with pytest.raises(ModelUnavailableError, match=message):
        async for _ in gateway.stream_text(MODEL, "Describe it.", SamplingParams(max_tokens=64), image=image):
            pass
    assert "INVOICE 2024-117" in await gateway.describe_image(MODEL, INVOICE, "", max_tokens=64)


async def test_concurrent_requests_are_each_answered_with_their_own_image(gateway: TritonGateway) -> None:
    images = [encoded([f"TICKET {n}"]) for n in (4401, 5502, 6603)]
    answers = await asyncio.gather(
        *(gateway.describe_image(MODEL, image, "", max_tokens=64) for image in images)
    )
    for n, answer in zip((4401, 5502, 6603), answers, strict=True):
        assert answer.splitlines()[-1] == f"TICKET {n}"


async def test_leaving_a_stream_early_leaves_the_model_serving(gateway: TritonGateway) -> None:
    """The client cancels after the first line; the next request is answered whole."""
    async with aclosing(
        gateway.stream_text(MODEL, "", SamplingParams(max_tokens=64), image=INVOICE)
    ) as deltas:
        async for _ in deltas:
            break
    description = await gateway.describe_image(MODEL, INVOICE, "", max_tokens=64)
    assert description.splitlines()[-1] == "Total due 42.50 EUR"
