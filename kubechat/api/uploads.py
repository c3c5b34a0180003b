"""The one guard of every multipart upload route (images, knowledge-base documents).

A body is bounded before, while and after it is read: it must declare its length (411
`length_required`: a chunked body could only be bounded after spooling it to disk), no larger
than its files could be (413 before a byte is read), as multipart/form-data within Starlette's
part limits (400 `invalid_request`); each file is read up to its limit plus one byte (413 past
it), and the form's spooled temporary files are closed whatever happens. What the files contain
is the service's to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from kubechat.core.errors import InvalidRequestError, KubechatError, LengthRequiredError

MULTIPART_OVERHEAD = 64 * 1024  # part headers and boundaries, per file
MAX_FIELDS = 10  # form fields that are not files: none is read, a few are tolerated


@dataclass(frozen=True)
class UploadLimits:
    field: str  # the name of the multipart parts that carry the files
    max_files: int
    max_file_bytes: int
    too_large: type[KubechatError]  # the 413 of this kind of file
    limit_of: str  # whose limit max_file_bytes is, for messages: "knowledge base docs"


@dataclass(frozen=True)
class ReceivedFile:
    filename: str
    data: bytes


async def read_files(request: Request, limits: UploadLimits) -> list[ReceivedFile]:
    """The files of a multipart request, from 1 to `limits.max_files` of them."""
    _check_declared_body(request, limits)
    try:
        # One file more than allowed reaches the count check below and its clearer message.
        form = await request.form(max_files=limits.max_files + 1, max_fields=MAX_FIELDS)
    except HTTPException as exc:  # Starlette's multipart limits and parse errors
        raise InvalidRequestError(f"malformed upload: {exc.detail}") from exc
    try:
        parts = form.getlist(limits.field)
        if not 1 <= len(parts) <= limits.max_files:
            raise InvalidRequestError(f"send {_parts(limits)} ({len(parts)} were sent)")
        files = []
        for part in parts:
            if not isinstance(part, UploadFile):
                # A part without `filename=` is a plain field, and `filename*=` (RFC 5987) is
                # not read: RFC 7578 forbids it in forms, so clients send UTF-8 in `filename=`.
                raise InvalidRequestError(
                    f"every `{limits.field}` part must be a file: a part whose Content-Disposition has "
                    'a filename="..." parameter (filename*= is not accepted; send the UTF-8 name in '
                    "filename=)"
                )
            data = await part.read(limits.max_file_bytes + 1)
            if len(data) > limits.max_file_bytes:
                raise limits.too_large(
                    f"{part.filename or 'the file'} exceeds {limits.max_file_bytes} bytes, the limit of "
                    f"{limits.limit_of}"
                )
            files.append(ReceivedFile(part.filename or "", data))
        return files
    finally:
        await form.close()  # the spooled temporary files


def _check_declared_body(request: Request, limits: UploadLimits) -> None:
    """Refuse a body before reading it (the per-file bound while reading is exact)."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        raise LengthRequiredError("uploads need a Content-Length header (no chunked transfer encoding)")
    limit = limits.max_files * (limits.max_file_bytes + MULTIPART_OVERHEAD)
    if int(declared) > limit:
        files = "one file" if limits.max_files == 1 else f"{limits.max_files} files"
        raise limits.too_large(
            f"request body of {declared} bytes exceeds {limit} ({files} of at most {limits.max_file_bytes} "
            f"bytes, the limit of {limits.limit_of})"
        )
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequestError(f"upload as multipart/form-data: {_parts(limits)}")


def _parts(limits: UploadLimits) -> str:
    if limits.max_files == 1:
        return f"one file, in a part named `{limits.field}`"
    return f"1 to {limits.max_files} files, in parts named `{limits.field}`"


def multipart_body(field: str, *, many: bool) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its files with `read_files` (FastAPI
    cannot infer it from a route that takes the Request)."""
    file: dict[str, Any] = {"type": "string", "format": "binary"}
    return {
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            field: {"type": "array", "items": file, "minItems": 1} if many else file
                        },
                        "required": [field],
                    }
                }
            }
        }
    }
