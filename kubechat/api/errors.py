"""Domain errors, each with a stable code, mapped once to HTTP responses and WS error events."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel


class ErrorBody(BaseModel):
    """The one error shape: HTTP bodies are `{"error": ErrorBody}`, WS events carry it too."""

    code: str
    message: str
    type: str = "invalid_request_error"  # OpenAI clients read error.type


class KubechatError(Exception):
    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> ErrorBody:
        return ErrorBody(code=self.code, message=self.message, type=self.error_type)


class InvalidRequestError(KubechatError):
    code = "invalid_request"
    status = 400
    error_type = "invalid_request_error"


class MessageTooLargeError(InvalidRequestError):
    code = "message_too_large"
    status = 413


class UnauthenticatedError(KubechatError):
    code = "unauthenticated"
    status = 401
    error_type = "authentication_error"


class SessionNotFoundError(KubechatError):
    code = "session_not_found"
    status = 404
    error_type = "invalid_request_error"


class ModelNotFoundError(KubechatError):
    code = "model_not_found"
    status = 404
    error_type = "invalid_request_error"


class BusyError(KubechatError):
    code = "busy"
    status = 409
    error_type = "invalid_request_error"


class ModelUnavailableError(KubechatError):
    """Triton cannot be reached or failed the request."""

    code = "model_unavailable"
    status = 503
    error_type = "server_error"


class ForbiddenError(KubechatError):
    code = "forbidden"
    status = 403
    error_type = "permission_error"


class KnowledgeBaseNotFoundError(KubechatError):
    code = "knowledge_base_not_found"
    status = 404
    error_type = "invalid_request_error"


class DocumentNotFoundError(KubechatError):
    code = "document_not_found"
    status = 404
    error_type = "invalid_request_error"


class KnowledgeBaseUnavailableError(KubechatError):
    """Its index cannot be used, e.g. it was built with another embedding model."""

    code = "knowledge_base_unavailable"
    status = 409
    error_type = "invalid_request_error"


class DocumentTooLargeError(KubechatError):
    code = "document_too_large"
    status = 413
    error_type = "invalid_request_error"


class LengthRequiredError(KubechatError):
    code = "length_required"
    status = 411
    error_type = "invalid_request_error"


class DecompressionBombError(KubechatError):
    code = "decompression_bomb"
    status = 413
    error_type = "invalid_request_error"


class UnsupportedDocumentTypeError(KubechatError):
    code = "unsupported_media_type"
    status = 415
    error_type = "invalid_request_error"


class EmptyDocumentError(KubechatError):
    code = "empty_document"
    status = 400
    error_type = "invalid_request_error"


class StorageUnavailableError(KubechatError):
    """The object store or the chunk store cannot be reached."""

    code = "storage_unavailable"
    status = 503
    error_type = "server_error"


class UnsupportedImageError(KubechatError):
    """Not one of the accepted image formats (PNG, JPEG, WebP, GIF)."""

    code = "unsupported_media_type"
    status = 415
    error_type = "invalid_request_error"


class ImageTooLargeError(KubechatError):
    """More bytes than KUBECHAT_MAX_IMAGE_BYTES (too many pixels is a DecompressionBombError)."""

    code = "image_too_large"
    status = 413
    error_type = "invalid_request_error"


class CorruptImageError(KubechatError):
    """An accepted format whose bytes cannot be decoded (truncated, damaged)."""

    code = "corrupt_image"
    status = 400
    error_type = "invalid_request_error"


class ImageNotFoundError(KubechatError):
    """No such image, or another principal's: the two are not told apart."""

    code = "image_not_found"
    status = 404
    error_type = "invalid_request_error"


class ToolRoundsExceededError(KubechatError):
    """The model kept calling tools past its ChatModel's spec.tools.maxRounds."""

    code = "tool_rounds_exceeded"
    status = 502
    error_type = "server_error"
