"""Images a principal attaches to chat questions: upload, list, metadata, content, delete."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, Field

from kubechat.api.dependencies import PrincipalDep, ServicesDep
from kubechat.api.errors import error_responses
from kubechat.api.pages import Cursor, ItemPage, Limit
from kubechat.api.routing import ApiRoute
from kubechat.api.uploads import UploadLimits, multipart_body, read_files
from kubechat.core.errors import (
    CorruptImageError,
    DecompressionBombError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidRequestError,
    LengthRequiredError,
    StorageUnavailableError,
    UnauthenticatedError,
    UnsupportedImageError,
)
from kubechat.images.service import ImageRecord

router = APIRouter(prefix="/images", tags=["images"], route_class=ApiRoute)

UPLOAD = error_responses(
    UnauthenticatedError, InvalidRequestError, LengthRequiredError, ImageTooLargeError,
    DecompressionBombError, UnsupportedImageError, CorruptImageError, StorageUnavailableError,
)  # fmt: skip
# `invalid_request` (400) on the listing is a cursor that does not parse.
LISTING = error_responses(UnauthenticatedError, StorageUnavailableError, InvalidRequestError)
ONE_IMAGE = error_responses(UnauthenticatedError, ImageNotFoundError, StorageUnavailableError)

# An image's bytes never change under its id (the hash of its content): caches may keep them.
IMMUTABLE_HEADERS = {
    "Cache-Control": "private, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}


class ImageOut(BaseModel):
    id: str = Field(description="sha256 of the stored PNG; name it in chat messages' `image_ids`.")
    name: str = Field(description="The uploaded file's name, sanitized.")
    width: int
    height: int
    source_format: str = Field(description="What was uploaded: png, jpeg, webp or gif.")
    source_bytes: int
    bytes: int = Field(description="Size of the stored, normalized PNG.")
    created_at: float

    @classmethod
    def of(cls, record: ImageRecord) -> ImageOut:
        return cls.model_validate(record, from_attributes=True)


class UploadedImage(ImageOut):
    duplicate: bool = Field(description="This principal had already uploaded the same picture.")


class ImagePage(ItemPage[ImageOut]):
    """The principal's images, newest first."""


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=multipart_body("file", many=False),
    responses=UPLOAD,
)
async def upload_image(request: Request, services: ServicesDep, principal: PrincipalDep) -> UploadedImage:
    """Check, normalize (upright, sRGB PNG, no metadata, longer side at most
    KUBECHAT_IMAGE_MAX_SIDE) and store one image: a multipart part named `file`.

    201 once the image is in the object store. The same picture uploaded again comes back
    with `duplicate: true`.
    """
    limits = UploadLimits("file", 1, services.images.limits.max_bytes, ImageTooLargeError, "image uploads")
    (file,) = await read_files(request, limits)
    record, duplicate = await services.images.upload(principal, file.filename, file.data)
    return UploadedImage(**ImageOut.of(record).model_dump(), duplicate=duplicate)


@router.get("", responses=LISTING)
async def list_images(
    services: ServicesDep, principal: PrincipalDep, limit: Limit = 50, cursor: Cursor = None
) -> ImagePage:
    """The principal's images, newest first."""
    return ImagePage.of(await services.images.list(principal, limit, cursor), ImageOut.of)


@router.get("/{image_id}", responses=ONE_IMAGE)
async def get_image(image_id: str, services: ServicesDep, principal: PrincipalDep) -> ImageOut:
    return ImageOut.of(await services.images.get(principal, image_id))


@router.get(
    "/{image_id}/content",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The normalized PNG."}, **ONE_IMAGE},
)
async def get_image_content(image_id: str, services: ServicesDep, principal: PrincipalDep) -> Response:
    data = await services.images.content(principal, image_id)
    return Response(data, media_type="image/png", headers=IMMUTABLE_HEADERS)


@router.get(
    "/{image_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "The JPEG thumbnail."}, **ONE_IMAGE},
)
async def get_image_thumbnail(image_id: str, services: ServicesDep, principal: PrincipalDep) -> Response:
    data = await services.images.thumbnail(principal, image_id)
    return Response(data, media_type="image/jpeg", headers=IMMUTABLE_HEADERS)


@router.delete("/{image_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ONE_IMAGE)
async def delete_image(image_id: str, services: ServicesDep, principal: PrincipalDep) -> Response:
    """Removes the image, its thumbnail and its record."""
    await services.images.delete(principal, image_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
