"""Images a principal attaches to chat questions: upload, list, metadata, content, delete."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from kubechat.api.dependencies import PrincipalDep, ServicesDep
from kubechat.core.errors import ImageTooLargeError, InvalidRequestError, LengthRequiredError
from kubechat.images.service import ImageRecord

router = APIRouter(prefix="/images", tags=["images"])

MULTIPART_OVERHEAD = 64 * 1024  # the part's headers and the boundaries
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


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                }
            }
        }
    },
)
async def upload_image(request: Request, services: ServicesDep, principal: PrincipalDep) -> UploadedImage:
    """Check, normalize (upright, sRGB PNG, no metadata, longer side at most
    KUBECHAT_IMAGE_MAX_SIDE) and store one image: a multipart part named `file`.

    201 once the image is in the object store. The same picture uploaded again comes back
    with `duplicate: true`.
    """
    max_bytes = services.images.limits.max_bytes
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        # Without a length the body could only be bounded after spooling it to disk.
        raise LengthRequiredError("image uploads need a Content-Length header (no chunked transfer encoding)")
    if int(declared) > max_bytes + MULTIPART_OVERHEAD:
        raise ImageTooLargeError(
            f"request body of {declared} bytes exceeds {max_bytes + MULTIPART_OVERHEAD} "
            f"(an image of at most {max_bytes} bytes)"
        )
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequestError("upload the image as multipart/form-data, in a part named `file`")
    try:
        form = await request.form(max_files=2, max_fields=10)
    except HTTPException as exc:  # Starlette's multipart limits and parse errors
        raise InvalidRequestError(f"malformed upload: {exc.detail}") from exc
    try:
        parts = form.getlist("file")
        if len(parts) != 1 or not isinstance(parts[0], UploadFile):
            raise InvalidRequestError(f"send one file, in a part named `file` ({len(parts)} were sent)")
        data = await parts[0].read(max_bytes + 1)
        filename = parts[0].filename or ""
    finally:
        await form.close()  # the spooled temporary files
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"the image exceeds {max_bytes} bytes, the limit")
    record, duplicate = await services.images.upload(principal, filename, data)
    return UploadedImage(**ImageOut.of(record).model_dump(), duplicate=duplicate)


@router.get("")
async def list_images(services: ServicesDep, principal: PrincipalDep) -> list[ImageOut]:
    """The principal's images, newest first."""
    return [ImageOut.of(record) for record in await services.images.list(principal)]


@router.get("/{image_id}")
async def get_image(image_id: str, services: ServicesDep, principal: PrincipalDep) -> ImageOut:
    return ImageOut.of(await services.images.get(principal, image_id))


@router.get(
    "/{image_id}/content",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The normalized PNG."}},
)
async def get_image_content(image_id: str, services: ServicesDep, principal: PrincipalDep) -> Response:
    data = await services.images.content(principal, image_id)
    return Response(data, media_type="image/png", headers=IMMUTABLE_HEADERS)


@router.get(
    "/{image_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "The JPEG thumbnail."}},
)
async def get_image_thumbnail(image_id: str, services: ServicesDep, principal: PrincipalDep) -> Response:
    data = await services.images.thumbnail(principal, image_id)
    return Response(data, media_type="image/jpeg", headers=IMMUTABLE_HEADERS)


@router.delete("/{image_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_image(image_id: str, services: ServicesDep, principal: PrincipalDep) -> Response:
    """Removes the image, its thumbnail and its record."""
    await services.images.delete(principal, image_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
