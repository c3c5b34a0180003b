"""Images the tests generate: text drawn large and dark on white, which OCR reads reliably."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont


def text_image(lines: list[str], size: tuple[int, int] = (900, 300), image_format: str = "PNG") -> bytes:
    """`lines` drawn in Pillow's bundled scalable font (no system fonts needed)."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=48)
    for i, line in enumerate(lines):
        draw.text((40, 40 + i * 80), line, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()
