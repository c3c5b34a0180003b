"""Images in chat: how an attached image reaches the model that answers.

A chat model with the `vision` capability receives the image itself, through the vision
contract (`image_bytes_input` beside `text_input`; see model-repo/README.md), one image per
message. A text-only chat model cannot see; for it a vision model (KUBECHAT_VISION_MODEL, else
the first model with the `vision` capability — the Tesseract describer in the embedded runtime)
describes each image, and the descriptions are put into the user turn. Descriptions are stored
with the user message, so later turns keep what the model was told without describing again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from kubechat.catalog import CatalogEntry, ModelCatalog
from kubechat.core.errors import ImageTooLargeError, InvalidRequestError, ModelNotFoundError
from kubechat.core.metrics import IMAGE_DESCRIPTION_DURATION
from kubechat.core.resources import Capability
from kubechat.core.tracing import tracer
from kubechat.images.processing import ImageLimits, prepare_image
from kubechat.images.service import ImageRecord, ImageService
from kubechat.triton.client import TritonInference

# How OpenAI-style messages name an uploaded image: {"type": "image_url", "image_url": {"url": ...}}.
IMAGE_URL_PREFIX = "kubechat://images/"
# A description longer than this is cut: it must leave the chat model room for the question.
MAX_DESCRIPTION_CHARS = 4000
# What a vision model is asked when it describes an image for knowledge-base ingestion.
TRANSCRIBE_PROMPT = "Describe this image and transcribe all of the text in it."


class ImageDescription(BaseModel):
    """An image attached to a user message, and what a text-only model was told about it."""

    id: str
    name: str
    description: str = Field(
        default="", description="The vision model's description given to a text-only chat model."
    )


@dataclass(frozen=True)
class Attachment:
    """An image of the asking principal, loaded for one message."""

    record: ImageRecord
    png: bytes


class VisionService:
    def __init__(
        self, catalog: ModelCatalog, triton: TritonInference, images: ImageService, vision_model: str = ""
    ) -> None:
        self.catalog = catalog
        self.triton = triton
        self.images = images
        self.vision_model = vision_model

    async def attachments(self, principal: str, image_ids: Sequence[str]) -> list[Attachment]:
        """The principal's images, in the order given (an id named twice counts once).

        Another principal's image is not found, exactly like one that does not exist.
        """
        loaded = []
        for image_id in dict.fromkeys(image_ids):
            record = await self.images.get(principal, image_id)
            loaded.append(Attachment(record, await self.images.content(principal, image_id)))
        return loaded

    def describer_for(self, entry: CatalogEntry, attachments: Sequence[Attachment]) -> CatalogEntry | None:
        """The model that must describe the images for `entry`, or None when `entry` sees them
        itself. Raises before anything is stored when the message cannot be served."""
        if not attachments:
            return None
        if entry.model.has(Capability.VISION):
            if len(attachments) > 1:
                raise InvalidRequestError(
                    f"model {entry.name} takes one image per message; {len(attachments)} were attached"
                )
            return None
        try:
            describer = self.describer()
        except ModelNotFoundError as exc:
            raise InvalidRequestError(
                f"model {entry.name} is text-only and no vision model is available to describe "
                f"images for it ({exc.message})"
            ) from exc
        describer.check_ready()
        return describer

    def describer(self) -> CatalogEntry:
        return find_vision_model(self.catalog, self.vision_model)

    async def describe(
        self, describer: CatalogEntry, attachments: Sequence[Attachment], question: str
    ) -> list[ImageDescription]:
        """Each image described by `describer`, asked the user's question."""
        described = []
        for a in attachments:
            text = await describe_timed(self.triton, describer, a.png, question, purpose="chat")
            if len(text) > MAX_DESCRIPTION_CHARS:
                text = text[:MAX_DESCRIPTION_CHARS] + " [description cut]"
            described.append(ImageDescription(id=a.record.id, name=a.record.name, description=text))
        return described


async def inline_attachment(url: str, limits: ImageLimits) -> Attachment:
    """An image sent inline as a base64 data: URL, checked and normalized like an upload."""
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise InvalidRequestError("inline images must be base64 data: URLs (data:image/png;base64,...)")
    if len(payload) * 3 // 4 > limits.max_bytes:
        raise ImageTooLargeError(f"the inline image exceeds {limits.max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise InvalidRequestError(f"the inline image is not valid base64: {exc}") from None
    image = await asyncio.to_thread(prepare_image, data, limits)
    record = ImageRecord(
        id=image.sha256, name="inline image", width=image.width, height=image.height,
        source_format=image.source_format, source_bytes=image.source_bytes, bytes=len(image.png),
        created_at=time.time(),
    )  # fmt: skip
    return Attachment(record, image.png)


class ImageDescriber(Protocol):
    async def describe_image(self, model: str, image: bytes, prompt: str, max_tokens: int) -> str: ...


async def describe_timed(
    models: ImageDescriber,
    describer: CatalogEntry,
    png: bytes,
    prompt: str,
    *,
    purpose: Literal["chat", "ingestion"],
) -> str:
    """One image described by `describer`, timed (kubechat_image_description_duration_seconds) and
    traced (`vision.describe`)."""
    started, outcome = time.perf_counter(), "error"
    with tracer.start_as_current_span(
        "vision.describe", attributes={"kubechat.model": describer.name, "kubechat.purpose": purpose}
    ):
        try:
            text = await models.describe_image(
                describer.name, png, prompt, describer.model.spec.defaults.max_tokens
            )
            outcome = "ok"
            return text
        finally:
            IMAGE_DESCRIPTION_DURATION.labels(describer.name, purpose, outcome).observe(
                time.perf_counter() - started
            )


def find_vision_model(catalog: ModelCatalog, name: str = "") -> CatalogEntry:
    """The vision model named (KUBECHAT_VISION_MODEL), else the first model that has the
    capability; ModelNotFoundError when there is none."""
    if name:
        return catalog.get(name, Capability.VISION)
    for entry in catalog:
        if entry.model.has(Capability.VISION):
            return entry
    raise ModelNotFoundError("no model has the vision capability")


def image_refs(attachments: Sequence[Attachment]) -> list[dict[str, Any]]:
    """What is stored with the user message before the images are described."""
    return [ImageDescription(id=a.record.id, name=a.record.name).model_dump() for a in attachments]


def with_images(text: str, images: Sequence[Mapping[str, Any]] | Sequence[ImageDescription]) -> str:
    """A user turn with its images' descriptions in front of the text, as a text-only model
    sees it. Images without a description (a vision model saw them) are named only."""
    described = [i if isinstance(i, ImageDescription) else ImageDescription.model_validate(i) for i in images]
    if not described:
        return text
    blocks = []
    for n, image in enumerate(described, 1):
        header = f"[Image {n}: {image.name or image.id[:12]}]"
        blocks.append(f"{header}\n{image.description.strip()}" if image.description else header)
    intro = (
        "The user attached images. A vision model described them:"
        if any(i.description for i in described)
        else "The user attached images:"
    )
    return intro + "\n\n" + "\n\n".join(blocks) + "\n\n" + text
