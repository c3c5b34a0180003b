"""Untrusted image bytes in, a normalized PNG and a JPEG thumbnail out (pure, synchronous).

Checks come before work: the byte count before anything is parsed, the pixel count from
the header before any pixel is decoded, so neither a huge upload nor a decompression bomb
costs memory. Only PNG, JPEG, WebP and GIF are parsed (Pillow is told so; its other
decoders never see the bytes), and a truncated file is an error, never half an image.

The output keeps pixels only: EXIF orientation is applied first, an embedded ICC profile is
converted to sRGB, alpha is composited over white, then the image is rebuilt from its pixel
values, so no EXIF (GPS position, camera serial), XMP, ICC profile, PNG text chunk or GIF
comment survives. Images are downscaled (never upscaled) to `max_side`.

This is CPU work that holds no lock while decoding: call it in a worker thread.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from kubechat.core.errors import (
    CorruptImageError,
    DecompressionBombError,
    ImageTooLargeError,
    UnsupportedImageError,
)

logger = logging.getLogger(__name__)

# Pillow format names → ours. MPO is the JPEG of cameras that store a second (depth or
# stereo) picture after the first; Pillow's JPEG opener returns it for such files.
SOURCE_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp", "GIF": "gif"}
_PILLOW_FORMATS = ["PNG", "JPEG", "WEBP", "GIF"]
# Signatures of the accepted formats: bytes that start like one but that Pillow cannot open
# are a damaged image of that format, not an unsupported one.
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
}
PNG_COMPRESS_LEVEL = 1
THUMBNAIL_QUALITY = 85
WHITE = (255, 255, 255, 255)
# What a decoder may raise on damaged input (Pillow reports truncation as OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")  # in Pillow's decompression bomb messages

# warnings.catch_warnings swaps the process-wide filter list and is not thread-safe: two
# threads inside it at once can leave a filter installed for good. Only header parsing runs
# under it, so holding the lock costs little.
_WARNINGS_LOCK = threading.Lock()
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int  # width x height as declared in the header
    max_side: int  # the stored image's longer side, after downscaling
    thumbnail_side: int = 256


# The API's defaults (KUBECHAT_MAX_IMAGE_BYTES, _MAX_IMAGE_PIXELS, _IMAGE_MAX_SIDE, _IMAGE_THUMBNAIL_SIDE).
DEFAULT_IMAGE_LIMITS = ImageLimits(
    max_bytes=20 * 1024 * 1024, max_pixels=40_000_000, max_side=2048, thumbnail_side=256
)


@dataclass(frozen=True)
class PreparedImage:
    png: bytes
    thumbnail: bytes  # JPEG
    width: int  # of `png`
    height: int
    source_format: str  # "png" | "jpeg" | "webp" | "gif"
    source_bytes: int
    sha256: str  # hex digest of `png`: the image's identity


def prepare_image(data: bytes, limits: ImageLimits) -> PreparedImage:
    """Check and normalize one uploaded image.

    Raises ImageTooLargeError (more than `max_bytes`), DecompressionBombError (more than
    `max_pixels`), UnsupportedImageError (not PNG, JPEG, WebP or GIF) or CorruptImageError
    (an accepted format that does not decode completely).
    """
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"the image has {len(data)} bytes; the limit is {limits.max_bytes}")
    if not data:
        raise CorruptImageError("the image is empty (0 bytes)")
    image = _open(data, limits)
    source_format = SOURCE_FORMATS[str(image.format)]
    try:
        with image:
            if source_format == "jpeg":
                # Decode at 1/2, 1/4 or 1/8 scale when that still covers the target size: a
                # phone photo decodes several times faster and in a fraction of the memory.
                image.draft(None, _target_size(image.size, limits.max_side))
            image.load()
            pixels = _pixels_only(image, limits.max_side)
    except Image.DecompressionBombError as exc:  # a GIF frame larger than its screen said
        raise DecompressionBombError(
            f"the image decodes to more pixels than it declared; the limit is {limits.max_pixels} pixels"
        ) from exc
    except _DECODE_ERRORS as exc:
        raise CorruptImageError(f"the {source_format.upper()} image cannot be decoded: {exc}") from exc

    png = io.BytesIO()
    # Encoding dominates the cost: zlib level 1 takes half the time of the default 6 for
    # about 10% more bytes on photos; `optimize` would be slower still.
    pixels.save(png, "PNG", optimize=False, compress_level=PNG_COMPRESS_LEVEL)
    thumbnail = pixels.copy()
    thumbnail.thumbnail((limits.thumbnail_side, limits.thumbnail_side), Image.Resampling.LANCZOS)
    jpeg = io.BytesIO()
    thumbnail.save(jpeg, "JPEG", quality=THUMBNAIL_QUALITY)
    png_bytes = png.getvalue()
    return PreparedImage(
        png=png_bytes,
        thumbnail=jpeg.getvalue(),
        width=pixels.width,
        height=pixels.height,
        source_format=source_format,
        source_bytes=len(data),
        sha256=hashlib.sha256(png_bytes).hexdigest(),
    )


def _open(data: bytes, limits: ImageLimits) -> ImageFile.ImageFile:
    """Parse the header only, refusing anything but the four formats and too many pixels."""
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            # Pillow warns above its own global limit: that is a refusal here too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refused first (above its own limit); say it in our terms.
        declared = _PILLOW_PIXELS.search(str(exc))
        what = f"{declared[1]} pixels" if declared else "more pixels than Pillow accepts"
        raise DecompressionBombError(
            f"the image declares {what}; the limit is {limits.max_pixels} pixels"
        ) from exc
    except UnidentifiedImageError as exc:
        claimed = _claimed_format(data)
        if claimed is None:
            raise UnsupportedImageError(
                f"the file is not a PNG, JPEG, WebP or GIF image (it begins {data[:8]!r})"
            ) from exc
        raise CorruptImageError(f"the file starts like a {claimed} image but its header is damaged") from exc
    except _DECODE_ERRORS as exc:
        claimed = _claimed_format(data) or "image"
        raise CorruptImageError(f"the {claimed} image cannot be read: {exc}") from exc
    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise CorruptImageError(f"the image declares a size of {width}x{height} pixels")
    if width * height > limits.max_pixels:
        image.close()
        raise DecompressionBombError(
            f"the image declares {width}x{height} = {width * height} pixels; the limit is "
            f"{limits.max_pixels} pixels"
        )
    return image


def _claimed_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, name in _SIGNATURES.items():
        if data.startswith(signature):
            return name
    return None


def _target_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` scaled so its longer side is at most `max_side`, aspect ratio kept; never larger."""
    width, height = size
    longer = max(width, height)
    if longer <= max_side:
        return size
    scale = max_side / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def _pixels_only(image: Image.Image, max_side: int) -> Image.Image:
    """The decoded image upright, in sRGB, flattened, downscaled, and without any metadata."""
    try:
        upright = ImageOps.exif_transpose(image)
    except (*_DECODE_ERRORS, KeyError, TypeError) as exc:
        # Damaged EXIF is dropped like any other; the pixels are still good.
        logger.debug("ignoring unreadable EXIF orientation: %s", exc)
        upright = image
    rgb = _flatten(_to_srgb(upright))
    size = _target_size(rgb.size, max_side)
    if size != rgb.size:
        # reducing_gap: box-reduce by an integer factor first, then LANCZOS the rest (much
        # faster for large reductions, indistinguishable in quality).
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    # A new image from the pixel values alone: nothing of `info` (EXIF, XMP, ICC, text
    # chunks, comments) can reach an encoder.
    return Image.frombytes("RGB", rgb.size, rgb.tobytes())


def _to_srgb(image: Image.Image) -> Image.Image:
    """Convert through an embedded ICC profile (wide-gamut phone photos, CMYK scans) to sRGB,
    so dropping the profile does not change the colours. An unusable profile is ignored."""
    profile = image.info.get("icc_profile")
    if not profile or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        output_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode=output_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        logger.debug("ignoring unusable ICC profile: %s", exc)
        return image
    assert converted is not None  # None only with inPlace=True
    return converted


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited over white (what a viewer shows on a page)."""
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: keep the high byte (a plain conversion clips everything above 255 to white).
        image = image.point(lambda value: value / 256).convert("L")
    return image.convert("RGB")
