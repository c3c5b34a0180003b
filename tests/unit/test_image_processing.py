"""prepare_image on images generated here: formats, normalization, metadata, and refusals."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image, ImageCms, ImageFile, PngImagePlugin

from kubechat.api.errors import http_status
from kubechat.api.settings import Settings
from kubechat.core.errors import (
    CorruptImageError,
    DecompressionBombError,
    ImageTooLargeError,
    KubechatError,
    UnsupportedImageError,
)
from kubechat.images.processing import DEFAULT_IMAGE_LIMITS, ImageLimits, PreparedImage, prepare_image

LIMITS = ImageLimits(max_bytes=2 * 1024 * 1024, max_pixels=4_000_000, max_side=512, thumbnail_side=64)
MARKER = "kubechat-secret-marker-7c1e"
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def reopen(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def gradient(size: tuple[int, int] = (300, 200)) -> Image.Image:
    """Distinct content everywhere, so that codecs cannot shrink it to nothing."""
    return Image.linear_gradient("L").resize(size).convert("RGB")


def split_left_right(
    size: tuple[int, int], left: tuple[int, int, int], right: tuple[int, int, int]
) -> Image.Image:
    image = Image.new("RGB", size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def close_to(pixel: Any, expected: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_declared_size(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` (8-bit grey) followed by one tiny IDAT:
    a few dozen bytes that would decode to width x height bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + png_chunk(b"IEND", b"")
    )


def assert_no_metadata(prepared: PreparedImage) -> None:
    for data in (prepared.png, prepared.thumbnail):
        image = reopen(data)
        assert not dict(image.getexif()), image.getexif()
        assert "icc_profile" not in image.info and "exif" not in image.info and "xmp" not in image.info
        assert not getattr(image, "text", {}), image.text  # type: ignore[attr-defined]
        assert MARKER.encode() not in data
    png_info = reopen(prepared.png).info
    # What Pillow reports for any PNG it wrote itself, and nothing else.
    assert set(png_info) <= {"dpi"}, png_info


# -- accepted formats -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pillow_format", "source_format", "options"),
    [
        ("PNG", "png", {}),
        ("JPEG", "jpeg", {"quality": 95}),
        ("WEBP", "webp", {"quality": 95}),
        ("GIF", "gif", {}),
    ],
)
def test_accepted_formats_become_png(pillow_format: str, source_format: str, options: dict[str, Any]) -> None:
    data = encode(split_left_right((120, 80), RED, BLUE), pillow_format, **options)

    prepared = prepare_image(data, LIMITS)

    assert prepared.source_format == source_format and prepared.source_bytes == len(data)
    assert (prepared.width, prepared.height) == (120, 80)
    out = reopen(prepared.png)
    assert out.format == "PNG" and out.mode == "RGB" and out.size == (120, 80)
    assert close_to(out.getpixel((10, 40)), RED, 40) and close_to(out.getpixel((110, 40)), BLUE, 40)
    assert reopen(prepared.thumbnail).format == "JPEG"
    assert prepared.sha256 == hashlib.sha256(prepared.png).hexdigest()


def test_animated_gif_keeps_its_first_frame() -> None:
    frames = [Image.new("RGB", (40, 30), colour) for colour in (RED, BLUE, WHITE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3

    out = reopen(prepare_image(data, LIMITS).png)

    assert out.size == (40, 30) and close_to(out.getpixel((20, 15)), RED, 2)


def test_animated_webp_keeps_its_first_frame() -> None:
    frames = [Image.new("RGB", (40, 30), colour) for colour in (BLUE, RED)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)

    out = reopen(prepare_image(data, LIMITS).png)

    assert close_to(out.getpixel((20, 15)), BLUE, 2)


def test_the_same_picture_gives_the_same_id() -> None:
    data = encode(gradient(), "PNG")
    assert prepare_image(data, LIMITS).sha256 == prepare_image(data, LIMITS).sha256
    assert (
        prepare_image(data, LIMITS).sha256
        != prepare_image(encode(gradient((301, 200)), "PNG"), LIMITS).sha256
    )


# -- normalization --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_is_composited_over_white(mode: str) -> None:
    image = Image.new("RGBA", (20, 10), (0, 0, 0, 0))  # transparent left half
    image.paste((255, 0, 0, 255), (10, 0, 20, 10))  # opaque red right half
    if mode == "LA":
        image = image.convert("LA")
    out = reopen(prepare_image(encode(image, "PNG"), LIMITS).png)

    assert out.mode == "RGB"
    assert out.getpixel((2, 5)) == WHITE
    assert out.getpixel((17, 5)) == (RED if mode != "LA" else (76, 76, 76))


def test_palette_transparency_is_composited_over_white() -> None:
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (5, 0, 10, 10))
    out = reopen(prepare_image(encode(image, "GIF", transparency=0), LIMITS).png)
    assert out.getpixel((1, 1)) == WHITE and out.getpixel((8, 8)) == RED


def test_sixteen_bit_grey_keeps_its_levels() -> None:
    image = Image.new("I;16", (8, 8), 0x8000)  # mid grey, not clipped to white
    out = reopen(prepare_image(encode(image, "PNG"), LIMITS).png)
    assert out.getpixel((4, 4)) == (128, 128, 128)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((2000, 1000), (512, 256)), ((300, 1200), (128, 512)), ((1025, 7), (512, 3)), ((512, 512), (512, 512))],
)
def test_large_images_are_downscaled_with_their_aspect(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    prepared = prepare_image(encode(gradient(size), "PNG"), LIMITS)
    assert (prepared.width, prepared.height) == expected == reopen(prepared.png).size


def test_large_jpeg_is_downscaled() -> None:
    # Large enough for the JPEG decoder's reduced-size decoding to be used.
    data = encode(split_left_right((2400, 1600), RED, BLUE), "JPEG", quality=90)
    out = reopen(prepare_image(data, LIMITS).png)
    assert out.size == (512, 341)
    assert close_to(out.getpixel((20, 170)), RED, 30) and close_to(out.getpixel((490, 170)), BLUE, 30)


def test_small_images_are_not_upscaled() -> None:
    prepared = prepare_image(encode(gradient((33, 17)), "PNG"), LIMITS)
    assert (prepared.width, prepared.height) == (33, 17)
    assert reopen(prepared.thumbnail).size == (33, 17)


@pytest.mark.parametrize(("size", "expected"), [((600, 300), (64, 32)), ((100, 400), (16, 64))])
def test_thumbnail_fits_thumbnail_side(size: tuple[int, int], expected: tuple[int, int]) -> None:
    thumbnail = reopen(prepare_image(encode(gradient(size), "PNG"), LIMITS).thumbnail)
    assert thumbnail.format == "JPEG" and thumbnail.mode == "RGB" and thumbnail.size == expected


def test_exif_orientation_is_applied() -> None:
    # Stored landscape, red on the left; Orientation 6 = "rotate 90 degrees clockwise to view".
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(split_left_right((80, 40), RED, BLUE), "JPEG", quality=95, exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == 6

    prepared = prepare_image(data, LIMITS)

    out = reopen(prepared.png)
    assert out.size == (40, 80) and (prepared.width, prepared.height) == (40, 80)
    # Rotated clockwise: the left (red) half is now the top.
    assert close_to(out.getpixel((20, 10)), RED, 30) and close_to(out.getpixel((20, 70)), BLUE, 30)
    assert 0x0112 not in reopen(prepared.png).getexif()
    assert reopen(prepared.thumbnail).size == (32, 64)


def test_jpeg_exif_and_icc_profile_are_stripped() -> None:
    exif = Image.Exif()
    exif[0x010E] = MARKER  # ImageDescription
    exif[0x010F] = "Camera maker"
    exif[0x8825] = {2: (48.0, 51.0, 30.0)}  # GPS latitude
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(gradient(), "JPEG", exif=exif.tobytes(), icc_profile=icc, comment=MARKER.encode())
    source = Image.open(io.BytesIO(data))
    assert source.getexif()[0x010E] == MARKER and source.info["icc_profile"]
    assert MARKER.encode() in data

    assert_no_metadata(prepare_image(data, LIMITS))


def test_png_text_chunks_exif_and_icc_profile_are_stripped() -> None:
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", MARKER)
    text.add_text("Description", MARKER, zip=True)  # zTXt
    text.add_itxt("XML:com.adobe.xmp", f"<x:xmpmeta>{MARKER}</x:xmpmeta>")
    exif = Image.Exif()
    exif[0x010E] = MARKER
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(gradient(), "PNG", pnginfo=text, exif=exif.tobytes(), icc_profile=icc)
    assert MARKER.encode() in data

    assert_no_metadata(prepare_image(data, LIMITS))


def test_gif_and_webp_metadata_are_stripped() -> None:
    gif = encode(gradient().convert("P"), "GIF", comment=MARKER.encode())
    exif = Image.Exif()
    exif[0x010E] = MARKER
    webp = encode(gradient(), "WEBP", exif=exif.tobytes(), xmp=MARKER.encode())
    for data in (gif, webp):
        assert MARKER.encode() in data
        assert_no_metadata(prepare_image(data, LIMITS))


def rgb_profile(red: XYZ, green: XYZ, blue: XYZ) -> bytes:
    """A minimal ICC v2 RGB display profile: these primaries (D50), linear tone curves."""

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(value: XYZ) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(s15(v) for v in value)

    linear = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0100) + b"\0\0"
    description = b"desc\0\0\0\0" + struct.pack(">I", 5) + b"test\0" + b"\0" * 4 + b"\0" * 2 + b"\0" * 67
    tags = [
        (b"desc", description), (b"wtpt", xyz(D50)), (b"rXYZ", xyz(red)), (b"gXYZ", xyz(green)),
        (b"bXYZ", xyz(blue)), (b"rTRC", linear), (b"gTRC", linear), (b"bTRC", linear),
    ]  # fmt: skip
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
        + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + xyz(D50)[8:] + b"\0" * 48
    )  # fmt: skip
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


XYZ = tuple[float, float, float]
D50: XYZ = (0.9642, 1.0, 0.8249)
# sRGB's primaries adapted to D50, as ICC profiles state them.
SRGB_RED: XYZ = (0.4361, 0.2225, 0.0139)
SRGB_GREEN: XYZ = (0.3851, 0.7169, 0.0971)
SRGB_BLUE: XYZ = (0.1431, 0.0606, 0.7141)


def test_embedded_icc_profile_is_converted_to_srgb() -> None:
    """Pixels are what their profile says they are: dropping the profile keeps the colours."""
    swapped = rgb_profile(red=SRGB_BLUE, green=SRGB_GREEN, blue=SRGB_RED)
    data = encode(Image.new("RGB", (10, 10), RED), "PNG", icc_profile=swapped)

    prepared = prepare_image(data, LIMITS)

    # (255, 0, 0) under this profile is the colour sRGB calls blue.
    assert close_to(reopen(prepared.png).getpixel((5, 5)), BLUE, 8)
    assert swapped not in prepared.png


def test_unusable_icc_profile_is_dropped() -> None:
    data = encode(Image.new("RGB", (10, 10), RED), "PNG", icc_profile=b"not a profile" * 20)
    assert reopen(prepare_image(data, LIMITS).png).getpixel((5, 5)) == RED


# -- refusals -------------------------------------------------------------------------------


def refused(data: bytes, limits: ImageLimits = LIMITS) -> KubechatError:
    with pytest.raises(KubechatError) as caught:
        prepare_image(data, limits)
    assert caught.value.message
    return caught.value


def test_too_many_bytes_are_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(gradient(), "PNG")
    monkeypatch.setattr(Image, "open", fail_if_called)

    error = refused(data, ImageLimits(max_bytes=len(data) - 1, max_pixels=10**6, max_side=512))

    assert (
        isinstance(error, ImageTooLargeError)
        and http_status(error) == 413
        and error.code == "image_too_large"
    )
    assert str(len(data) - 1) in error.message


def fail_if_called(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("must not be called")


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (5000, 1000),  # 5 MP: above our limit only
        (10_000, 10_000),  # 100 MP: above Pillow's warning threshold (89 MP) too
        (20_000, 20_000),  # 400 MP: above Pillow's own error threshold (179 MP)
        (0xFFFF_FFF, 0xFFFF_FFF),  # absurd
    ],
)
def test_decompression_bombs_are_refused_without_decoding(
    monkeypatch: pytest.MonkeyPatch, width: int, height: int
) -> None:
    data = png_with_declared_size(width, height)
    assert len(data) < 200
    monkeypatch.setattr(ImageFile.ImageFile, "load", fail_if_called)

    error = refused(data)

    assert isinstance(error, DecompressionBombError)
    assert (http_status(error), error.code) == (413, "decompression_bomb")
    assert str(LIMITS.max_pixels) in error.message


def test_a_real_bomb_png_is_refused() -> None:
    """A genuine 1-colour image: compresses to a few KB, decodes to 36 MB."""
    data = encode(Image.new("L", (6000, 6000)), "PNG")
    assert len(data) < 100_000
    assert isinstance(refused(data), DecompressionBombError)


def test_pillows_global_limit_is_not_relied_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert isinstance(refused(png_with_declared_size(3000, 3000)), DecompressionBombError)


def test_just_within_the_pixel_limit_is_accepted() -> None:
    limits = ImageLimits(max_bytes=LIMITS.max_bytes, max_pixels=200 * 100, max_side=512)
    assert prepare_image(encode(gradient((200, 100)), "PNG"), limits).width == 200
    assert isinstance(refused(encode(gradient((201, 100)), "PNG"), limits), DecompressionBombError)


def cut(fraction: float) -> Callable[[bytes], bytes]:
    return lambda data: data[: int(len(data) * fraction)]


@pytest.mark.parametrize("pillow_format", ["PNG", "JPEG", "WEBP", "GIF"])
@pytest.mark.parametrize("fraction", [0.5, 0.9], ids=["half", "most"])
def test_truncated_images_are_refused(pillow_format: str, fraction: float) -> None:
    data = encode(gradient((400, 300)), pillow_format)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False

    error = refused(cut(fraction)(data))

    assert isinstance(error, CorruptImageError), error
    assert (http_status(error), error.code) == (400, "corrupt_image")


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,  # a PNG signature and nothing sensible
        b"\xff\xd8\xff\xe0" + b"garbage" * 10,  # a JPEG start of image, then garbage
        b"GIF89a\x01",  # a GIF header cut inside the screen descriptor
        b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 8,
    ],
    ids=["png", "jpeg", "gif", "webp"],
)
def test_damaged_headers_are_corrupt_not_unsupported(data: bytes) -> None:
    assert isinstance(refused(data), CorruptImageError)


def test_corrupt_png_pixel_data_is_refused() -> None:
    data = bytearray(encode(gradient(), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 10 : start + 60] = b"\xff" * 50  # inside the zlib stream; the CRC now fails too
    assert isinstance(refused(bytes(data)), CorruptImageError)


def test_empty_file_is_refused() -> None:
    assert isinstance(refused(b""), CorruptImageError)


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n",
        b"just some text, named photo.png",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        encode(gradient(), "BMP"),
        encode(gradient(), "TIFF"),
        encode(gradient(), "ICO"),
        encode(gradient(), "PPM"),
    ],
    ids=["pdf", "text", "svg", "bmp", "tiff", "ico", "ppm"],
)
def test_other_types_are_unsupported(data: bytes) -> None:
    error = refused(data)
    assert isinstance(error, UnsupportedImageError), error
    assert (http_status(error), error.code) == (415, "unsupported_media_type")
    assert "PNG, JPEG, WebP or GIF" in error.message


def test_settings_defaults_are_the_default_limits() -> None:
    assert Settings().image_limits() == DEFAULT_IMAGE_LIMITS
