"""Tests of kubechat.images.vision: which model sees an image, and how a text-only model is told."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from kubechat.catalog import DEFAULT_CHAT_TEMPLATE, CatalogEntry, ModelCatalog, WhitespaceCounter
from kubechat.core.errors import DecompressionBombError, ImageTooLargeError, InvalidRequestError
from kubechat.core.resources import parse_chat_model
from kubechat.images.processing import ImageLimits
from kubechat.images.service import ImageRecord
from kubechat.images.vision import (
    Attachment,
    ImageDescription,
    VisionService,
    find_vision_model,
    inline_attachment,
    with_images,
)

LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=4_000_000, max_side=512)


def _entry(name: str, capabilities: list[str]) -> CatalogEntry:
    model = parse_chat_model(
        {
            "apiVersion": "kubechat.io/v1alpha1",
            "kind": "ChatModel",
            "metadata": {"name": name},
            "spec": {"engine": {"backend": "synthetic"}, "capabilities": capabilities},
        }
    )
    return CatalogEntry(model, DEFAULT_CHAT_TEMPLATE, WhitespaceCounter(), {})


def _attachment(image_id: str = "a" * 64, name: str = "invoice.png") -> Attachment:
    record = ImageRecord(
        id=image_id, name=name, width=10, height=10, source_format="png", source_bytes=100, bytes=100,
        created_at=0.0,
    )  # fmt: skip
    return Attachment(record, b"\x89PNG")


def _vision(*entries: CatalogEntry, vision_model: str = "") -> VisionService:
    unused: Any = None  # neither Triton nor the image store is reached by these checks
    return VisionService(ModelCatalog(list(entries)), unused, unused, vision_model)


def _png_data_url(size: tuple[int, int] = (40, 20)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_a_text_only_model_is_told_what_each_image_shows() -> None:
    described = [
        ImageDescription(id="a" * 64, name="invoice.png", description="Text (OCR):\nTotal 42 EUR\n"),
        ImageDescription(id="b" * 64, name="", description="Image: 10x10 pixels, square."),
    ]
    assert with_images("What is the total?", described) == (
        "The user attached images. A vision model described them:\n\n"
        "[Image 1: invoice.png]\nText (OCR):\nTotal 42 EUR\n\n"
        "[Image 2: bbbbbbbbbbbb]\nImage: 10x10 pixels, square.\n\n"
        "What is the total?"
    )


def test_stored_images_without_descriptions_are_named_only() -> None:
    """History: an image a vision model saw itself is named in later turns, not described."""
    stored = [{"id": "a" * 64, "name": "chart.png", "description": ""}]
    assert with_images("and now?", stored) == "The user attached images:\n\n[Image 1: chart.png]\n\nand now?"
    assert with_images("plain", []) == "plain"


def test_the_configured_vision_model_wins_else_the_first_with_the_capability() -> None:
    chat, ocr, other = _entry("chat", ["chat"]), _entry("ocr", ["vision"]), _entry("other", ["vision"])
    catalog = ModelCatalog([chat, ocr, other])
    assert find_vision_model(catalog) is ocr
    assert find_vision_model(catalog, "other") is other
    with pytest.raises(Exception, match="unknown vision model 'chat'"):
        find_vision_model(catalog, "chat")
    with pytest.raises(Exception, match="no model has the vision capability"):
        find_vision_model(ModelCatalog([chat]))


def test_a_text_only_model_gets_a_describer_and_a_vision_model_none() -> None:
    chat, seer, ocr = _entry("chat", ["chat"]), _entry("seer", ["chat", "vision"]), _entry("ocr", ["vision"])
    vision = _vision(chat, seer, ocr)
    assert vision.describer_for(chat, []) is None
    assert vision.describer_for(chat, [_attachment(), _attachment("b" * 64)]) is not None
    assert vision.describer_for(seer, [_attachment()]) is None


def test_a_vision_model_takes_one_image_per_message() -> None:
    seer = _entry("seer", ["chat", "vision"])
    with pytest.raises(InvalidRequestError, match="takes one image per message; 2 were attached"):
        _vision(seer).describer_for(seer, [_attachment(), _attachment("b" * 64)])


def test_images_for_a_text_only_model_without_any_vision_model_are_refused() -> None:
    chat = _entry("chat", ["chat"])
    with pytest.raises(InvalidRequestError, match="text-only and no vision model is available"):
        _vision(chat).describer_for(chat, [_attachment()])


async def test_an_inline_data_url_is_normalized_like_an_upload() -> None:
    attachment = await inline_attachment(_png_data_url((1024, 256)), LIMITS)
    assert (attachment.record.width, attachment.record.height) == (512, 128)
    assert attachment.png.startswith(b"\x89PNG") and attachment.record.id == attachment.record.id.lower()


@pytest.mark.parametrize(
    ("url", "error", "message"),
    [
        ("data:image/png,rawbytes", InvalidRequestError, "must be base64 data: URLs"),
        ("data:image/png;base64,@@@@", InvalidRequestError, "not valid base64"),
        ("data:image/png;base64," + "A" * 2_000_000, ImageTooLargeError, "exceeds 1000000 bytes"),
    ],
)
async def test_bad_inline_images_are_refused(url: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        await inline_attachment(url, LIMITS)


async def test_an_inline_decompression_bomb_is_refused() -> None:
    with pytest.raises(DecompressionBombError):
        await inline_attachment(_png_data_url((3000, 2000)), LIMITS)
