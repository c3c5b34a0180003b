"""Tests of kubechat.engines.vision: real Tesseract OCR on images drawn with Pillow."""

from __future__ import annotations

import io
from pathlib import Path

import pytesseract
import pytest
from PIL import Image, ImageDraw, ImageFont

from kubechat.engines.vision import (
    Box,
    TesseractUnavailableError,
    check_tesseract,
    colour_name,
    decode_image,
    describe_image,
    region_name,
)

FONT_FILE = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans where installed (Debian's fonts-dejavu-core), else Pillow's own scalable font."""
    if FONT_FILE.exists():
        return ImageFont.truetype(str(FONT_FILE), size)
    return ImageFont.load_default(size=size)


def drawn(
    size: tuple[int, int], lines: list[tuple[tuple[int, int], str, int]], **kwargs: object
) -> Image.Image:
    """An image of `size` with each (position, text, font size) drawn in black on white."""
    image = Image.new("RGB", size, str(kwargs.get("background", "white")))
    draw = ImageDraw.Draw(image)
    for position, text, font_size in lines:
        draw.text(position, text, fill=str(kwargs.get("ink", "black")), font=font(font_size))
    return image


def png(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def invoice() -> str:
    image = drawn((800, 600), [((40, 40), "INVOICE 2024-117", 40), ((40, 300), "Total due 42.50 EUR", 40)])
    return describe_image(image, "What is the total?")


def test_the_text_is_read_line_by_line_in_reading_order(invoice: str) -> None:
    """Both lines come back whole, in the order they are printed, under the OCR heading."""
    text = invoice.split("Text (OCR):\n", 1)[1]
    assert text.splitlines() == ["INVOICE 2024-117", "Total due 42.50 EUR"]


def test_the_facts_pillow_measures(invoice: str) -> None:
    """Size and orientation, dominant colours with shares, brightness, then where the text is."""
    lines = invoice.splitlines()
    assert lines[0] == "Image: 800×600 pixels, landscape."  # noqa: RUF001
    assert lines[1].startswith("Dominant colours: white #ffffff (")
    assert "black #" in lines[1]
    assert lines[2].endswith("(bright).")
    assert lines[3] == "Text regions: 2 (top-left, middle-left)."
    assert invoice.endswith("\n")


def test_the_prompt_does_not_change_the_description() -> None:
    """The model does not reason about the question: one image, one description."""
    image = drawn((400, 200), [((20, 80), "Hello there", 32)])
    assert describe_image(image, "What does it say?") == describe_image(image, "")


def test_an_image_without_text() -> None:
    """A plain picture gets its facts and says so, with no text heading."""
    image = Image.new("RGB", (300, 400), (200, 30, 30))
    ImageDraw.Draw(image).ellipse((100, 150, 200, 250), fill=(240, 240, 240))
    description = describe_image(image, "")
    lines = description.splitlines()
    assert lines[0] == "Image: 300×400 pixels, portrait."  # noqa: RUF001
    assert lines[1].startswith("Dominant colours: red #c81e1e (9")  # the disc takes about 7%
    assert lines[-1] == "No text was found."
    assert "Text (OCR)" not in description


def test_square_dark_image() -> None:
    description = describe_image(Image.new("RGB", (64, 64), (10, 10, 40)), "")
    assert description.splitlines()[:3] == [
        "Image: 64×64 pixels, square.",  # noqa: RUF001
        "Dominant colours: dark blue #0a0a28 (100%).",
        "Brightness: 5% (dark).",
    ]


def test_small_print_is_read_after_upscaling() -> None:
    """10 px text on a small image: tesseract misreads digits at this size unless upscaled 2x."""
    image = drawn((260, 60), [((5, 20), "Order 5531 shipped", 10)])
    assert "Order 5531 shipped" in describe_image(image, "").splitlines()


def test_slightly_rotated_text_is_read() -> None:
    """A scan a few degrees off still reads."""
    image = drawn((700, 300), [((40, 120), "ROTATED LABEL 31", 36)]).rotate(8, expand=True, fillcolor="white")
    assert "ROTATED LABEL 31" in describe_image(image, "").splitlines()


def test_transparent_png_text_is_read_on_white() -> None:
    """Black text on a transparent background: flattened on white, as a viewer shows it."""
    image = Image.new("RGBA", (500, 120), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((20, 40), "Clear glass", fill=(0, 0, 0, 255), font=font(36))
    description = describe_image(decode_image(png(image), 10**6), "")
    assert "Clear glass" in description.splitlines()
    assert description.splitlines()[1].startswith("Dominant colours: white #ffffff")


def test_low_confidence_noise_is_dropped() -> None:
    """Random specks produce no words (or only confident ones); the drawn text survives."""
    image = drawn((600, 300), [((40, 40), "Meeting at 10:30", 36)])
    draw = ImageDraw.Draw(image)
    for i in range(0, 600, 7):
        draw.point((i, 250 + (i * 13) % 40), fill="black")
    text = describe_image(image, "").split("Text (OCR):\n", 1)[1].splitlines()
    assert text[0] == "Meeting at 10:30"


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((255, 255, 255), "white"),
        ((16, 16, 16), "black"),
        ((128, 128, 128), "grey"),
        ((200, 30, 30), "red"),
        ((32, 64, 192), "blue"),
        ((20, 160, 40), "green"),
        ((250, 220, 20), "yellow"),
        ((240, 140, 20), "orange"),
        ((110, 60, 20), "brown"),
        ((130, 40, 180), "purple"),
        ((200, 230, 250), "light blue"),
    ],
)
def test_colour_names(rgb: tuple[int, int, int], name: str) -> None:
    assert colour_name(rgb) == name


@pytest.mark.parametrize(
    ("box", "name"),
    [
        (Box(0, 0, 10, 10), "top-left"),
        (Box(45, 0, 55, 10), "top-centre"),
        (Box(90, 0, 100, 10), "top-right"),
        (Box(0, 45, 10, 55), "middle-left"),
        (Box(40, 40, 60, 60), "centre"),
        (Box(0, 90, 100, 100), "bottom-centre"),
        (Box(95, 95, 100, 100), "bottom-right"),
    ],
)
def test_region_names(box: Box, name: str) -> None:
    assert region_name(box, 100, 100) == name


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP", "GIF"])
def test_decode_accepts_browser_formats(image_format: str) -> None:
    image = decode_image(png(Image.new("RGB", (30, 20), "blue"), image_format), 10**6)
    assert image.size == (30, 20)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (png(Image.new("RGB", (30, 20)), "BMP"), "not a PNG, JPEG, WebP or GIF"),
        (png(Image.new("RGB", (30, 20)), "TIFF"), "not a PNG, JPEG, WebP or GIF"),
        (b"definitely not an image", "not a PNG, JPEG, WebP or GIF"),
        (b"", "empty"),
        (png(Image.new("RGB", (300, 200)))[:80], "cannot be decoded"),
        (png(Image.new("RGB", (1001, 1000))), "1001x1000 pixels, more than the 1000000 allowed"),
    ],
    ids=["bmp", "tiff", "garbage", "empty", "truncated", "too-many-pixels"],
)
def test_decode_refuses(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_image(data, 10**6)


def test_a_missing_tesseract_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the binary, both the start-up check and OCR say which package to install."""
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    with pytest.raises(TesseractUnavailableError, match="Debian package tesseract-ocr"):
        check_tesseract()
    with pytest.raises(TesseractUnavailableError, match="Debian package tesseract-ocr"):
        describe_image(Image.new("RGB", (50, 50)), "")


def test_a_missing_language_names_its_package() -> None:
    with pytest.raises(TesseractUnavailableError, match="tesseract-ocr-xyz"):
        check_tesseract("eng+xyz")
    assert check_tesseract("eng")
