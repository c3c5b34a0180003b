"""A CPU vision engine: what an image shows, as plain text a text-only LLM can use.

Tesseract OCR (the Debian package `tesseract-ocr`, driven through pytesseract) reads the text and
where it sits; Pillow measures the size, orientation, dominant colours and brightness. There is
no neural image understanding here: the description is a list of facts, not an answer.
"""

from __future__ import annotations

import colorsys
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import pytesseract
from PIL import Image, ImageStat, UnidentifiedImageError
from pytesseract import Output

# Tesseract reads small print markedly better at twice the size (10 px text went from wrong
# digits to exact here); images at least this large are read as they are.
UPSCALE_BELOW_PX: Final = 1000
# Words tesseract is less sure of than this (0-100) are mostly noise: specks, textures, edges.
MIN_WORD_CONFIDENCE: Final = 30.0
# A bound on one tesseract run (it is killed after), so a pathological image cannot hold a
# worker for ever; a dense 24-megapixel page of 60 lines took 10 s on 2 cores.
OCR_TIMEOUT_S: Final = 60
# Colour statistics do not need every pixel; a bounded thumbnail keeps them cheap and stable.
_COLOUR_SAMPLE_PX: Final = 512
_TOP_COLOURS: Final = 3
# Upper hue limits (degrees) of the coarse colour names.
_HUES: Final = (
    (15, "red"), (45, "orange"), (70, "yellow"), (160, "green"), (200, "cyan"), (255, "blue"),
    (290, "purple"), (335, "pink"), (360, "red"),
)  # fmt: skip
_WORD_LEVEL: Final = 5  # image_to_data's rows: page 1, block 2, paragraph 3, line 4, word 5

# What the model decodes: the formats browsers show. kubechat sends PNG; others may call Triton.
IMAGE_FORMATS: Final = ("PNG", "JPEG", "WEBP", "GIF")

_MISSING_BINARY: Final = (
    "the tesseract binary is not installed (or not on PATH): install the Debian package "
    "tesseract-ocr (apt-get install tesseract-ocr)"
)


class TesseractUnavailableError(RuntimeError):
    """The tesseract binary, or the trained data of a requested language, is not installed."""


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels of the described image; right and bottom are exclusive."""

    left: int
    top: int
    right: int
    bottom: int


@dataclass(frozen=True)
class OcrWord:
    """One word tesseract read, the block/paragraph/line it belongs to, and its box."""

    text: str
    confidence: float
    block: int
    paragraph: int
    line: int
    box: Box


@dataclass(frozen=True)
class Colour:
    rgb: tuple[int, int, int]
    share: float  # of the image's pixels, 0..1

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.rgb)

    @property
    def name(self) -> str:
        return colour_name(self.rgb)


def check_tesseract(languages: str = "eng") -> str:
    """Return tesseract's version, or raise TesseractUnavailableError naming what to install."""
    try:
        version = str(pytesseract.get_tesseract_version())
        installed = set(pytesseract.get_languages(config=""))
    except pytesseract.TesseractNotFoundError as exc:
        raise TesseractUnavailableError(_MISSING_BINARY) from exc
    missing = [lang for lang in languages.split("+") if lang not in installed]
    if missing:
        packages = " ".join(f"tesseract-ocr-{lang}" for lang in missing)
        raise TesseractUnavailableError(
            f"tesseract has no trained data for {'+'.join(missing)}: install the Debian package(s) {packages}"
        )
    return version


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode the bytes of a PNG, JPEG, WebP or GIF file (the first frame of an animation).

    Raises ValueError for another format, undecodable bytes, or more than `max_pixels` pixels;
    the size is checked from the header, before any pixel is decoded (decompression bombs).
    """
    if not data:
        raise ValueError("image_bytes_input is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"the image is too large: {exc}") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError("image_bytes_input is not a PNG, JPEG, WebP or GIF image") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ValueError(f"the image has {width}x{height} pixels, more than the {max_pixels} allowed")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:  # what Pillow's decoders raise on bad data
        raise ValueError(f"the {image.format} image cannot be decoded: {exc}") from exc
    return image


def describe_image(image: Image.Image, prompt: str, languages: str = "eng") -> str:
    """Describe `image` in plain text: size, orientation, dominant colours, brightness and its text.

    The text is read by Tesseract OCR in `languages` (tesseract codes joined by `+`, e.g.
    `eng+deu`) and rebuilt line by line in reading order, without words tesseract is unsure of;
    the text regions are tesseract's blocks, placed on a 3x3 grid of the image. Every line ends
    with a newline. Deterministic for a given image.

    `prompt` is accepted because the vision contract carries one, but this model does not
    reason: it describes an image the same way whatever the question and leaves the answer to
    the chat model the description is given to.
    """
    del prompt  # see the docstring: the facts do not depend on the question
    flat = flatten(image)
    return "".join(f"{line}\n" for line in describe_facts(flat, ocr_words(flat, languages)))


def describe_facts(image: Image.Image, words: Sequence[OcrWord]) -> list[str]:
    """The description's lines, from an RGB image and the words read from it."""
    width, height = image.size
    colours = ", ".join(f"{c.name} {c.hex} ({round(c.share * 100)}%)" for c in dominant_colours(image))
    lines = [
        f"Image: {width}×{height} pixels, {orientation(width, height)}.",  # noqa: RUF001
        f"Dominant colours: {colours}.",
        f"Brightness: {brightness(image)}.",
    ]
    text = reading_lines(words)
    if not text:
        return [*lines, "No text was found."]
    regions = [region_name(box, width, height) for box in text_blocks(words)]
    return [*lines, f"Text regions: {len(regions)} ({', '.join(regions)}).", "Text (OCR):", *text]


def flatten(image: Image.Image) -> Image.Image:
    """RGB, with any transparency put on white as a viewer shows it (tesseract would see black)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def ocr_words(image: Image.Image, languages: str = "eng") -> list[OcrWord]:
    """The words tesseract reads in `image` with enough confidence, in its reading order.

    Boxes are in `image`'s pixels, also when tesseract read an upscaled copy.
    """
    scale = 2 if max(image.size) < UPSCALE_BELOW_PX else 1
    # Tesseract binarizes a grey image anyway; handing it one is a third faster than RGB.
    grey = image.convert("L")
    seen = grey.resize((grey.width * scale, grey.height * scale), Image.Resampling.LANCZOS)
    try:
        data = pytesseract.image_to_data(seen, lang=languages, output_type=Output.DICT, timeout=OCR_TIMEOUT_S)
    except pytesseract.TesseractNotFoundError as exc:
        raise TesseractUnavailableError(_MISSING_BINARY) from exc
    words = []
    for i, level in enumerate(data["level"]):
        text = str(data["text"][i]).strip()
        confidence = float(data["conf"][i])
        if int(level) != _WORD_LEVEL or not text or confidence < MIN_WORD_CONFIDENCE:
            continue
        left, top = int(data["left"][i]), int(data["top"][i])
        right, bottom = left + int(data["width"][i]), top + int(data["height"][i])
        box = Box(left // scale, top // scale, -(-right // scale), -(-bottom // scale))
        words.append(
            OcrWord(
                text=text,
                confidence=confidence,
                block=int(data["block_num"][i]),
                paragraph=int(data["par_num"][i]),
                line=int(data["line_num"][i]),
                box=box,
            )
        )
    return words


def reading_lines(words: Sequence[OcrWord]) -> list[str]:
    """The words joined into lines, in tesseract's reading order (it emits words in that order)."""
    lines: dict[tuple[int, int, int], list[str]] = {}
    for word in words:
        lines.setdefault((word.block, word.paragraph, word.line), []).append(word.text)
    return [" ".join(line) for line in lines.values()]


def text_blocks(words: Sequence[OcrWord]) -> list[Box]:
    """The bounding box of each tesseract block that kept at least one word, in reading order."""
    blocks: dict[int, Box] = {}
    for word in words:
        known = blocks.get(word.block)
        b = word.box
        blocks[word.block] = (
            b
            if known is None
            else Box(
                min(known.left, b.left),
                min(known.top, b.top),
                max(known.right, b.right),
                max(known.bottom, b.bottom),
            )
        )
    return list(blocks.values())


def region_name(box: Box, width: int, height: int) -> str:
    """Where a box's centre lies on a 3x3 grid of the image: top-left, top-centre, ..., bottom-right."""
    column = min(2, 3 * (box.left + box.right) // (2 * width))
    row = min(2, 3 * (box.top + box.bottom) // (2 * height))
    if (row, column) == (1, 1):
        return "centre"
    return f"{('top', 'middle', 'bottom')[row]}-{('left', 'centre', 'right')[column]}"


def orientation(width: int, height: int) -> str:
    if width == height:
        return "square"
    return "landscape" if width > height else "portrait"


def dominant_colours(image: Image.Image, count: int = _TOP_COLOURS) -> list[Colour]:
    """The `count` most common colours of an RGB image reduced to five colours, with their shares."""
    # Nearest-neighbour sampling, not a smoothing thumbnail: averaging would wash thin dark text
    # strokes into the background and invent colours the image does not have.
    factor = max(1.0, max(image.size) / _COLOUR_SAMPLE_PX)
    size = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
    sample = image.resize(size, Image.Resampling.NEAREST)
    reduced = sample.quantize(colors=5, method=Image.Quantize.MEDIANCUT, kmeans=2)
    palette = reduced.getpalette() or []
    # A palette image's colours are (pixel count, palette index) pairs.
    counts = [(n, int(i)) for n, i in reduced.getcolors() or [] if isinstance(i, int)]
    total = sum(n for n, _ in counts)
    ranked = sorted(counts, key=lambda item: (-item[0], item[1]))[:count]
    return [Colour((palette[3 * i], palette[3 * i + 1], palette[3 * i + 2]), n / total) for n, i in ranked]


def colour_name(rgb: tuple[int, int, int]) -> str:
    """A coarse English name: black, grey, white, or one of eight hues (light/dark when clear)."""
    hue, lightness, saturation = colorsys.rgb_to_hls(*(c / 255 for c in rgb))
    if saturation < 0.2 or lightness < 0.08 or lightness > 0.94:
        if lightness < 0.2:
            return "black"
        return "white" if lightness > 0.85 else "grey"
    degrees = hue * 360
    name = next(n for limit, n in _HUES if degrees < limit)
    if name == "orange" and lightness < 0.35:
        return "brown"
    if lightness < 0.25:
        return f"dark {name}"
    if lightness > 0.8:
        return f"light {name}"
    return name


def brightness(image: Image.Image) -> str:
    """Mean luminance as a percentage and a word: dark, medium or bright."""
    mean = ImageStat.Stat(image.convert("L")).mean[0] / 255
    word = "dark" if mean < 1 / 3 else "bright" if mean > 2 / 3 else "medium"
    return f"{round(mean * 100)}% ({word})"
