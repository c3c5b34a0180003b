"""Domain errors: each has a stable code and no transport in it.

Services raise these; the API maps each class once to an HTTP status and a WebSocket error
event (kubechat.api.errors). The codes are part of the public contract: clients switch on them.
"""

from __future__ import annotations

from typing import ClassVar


class KubechatError(Exception):
    """`param` names the request field the error is about, when there is one (OpenAI's
    `error.param`: clients show it and frameworks switch on it)."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InternalError(KubechatError):
    """Something failed that kubechat did not expect. Clients get this code and a message that
    says nothing of the cause; the cause is logged (see `as_kubechat_error`)."""

    code = "internal_error"


class InvalidRequestError(KubechatError):
    code = "invalid_request"


class UnsupportedParameterError(InvalidRequestError):
    """A request field kubechat knows but does not implement (for this model): refused, never
    silently ignored, so that a client relying on it learns at once."""

    code = "unsupported_parameter"


class UnsupportedValueError(InvalidRequestError):
    """A value of a field kubechat implements only in part (`n` other than 1, `tool_choice`
    "required")."""

    code = "unsupported_value"


class MessageTooLargeError(InvalidRequestError):
    code = "message_too_large"


class UnauthenticatedError(KubechatError):
    code = "unauthenticated"


class ForbiddenError(KubechatError):
    code = "forbidden"


class SessionNotFoundError(KubechatError):
    code = "session_not_found"


class ModelNotFoundError(KubechatError):
    code = "model_not_found"


class BusyError(KubechatError):
    """The session is already streaming an answer."""

    code = "busy"


class ModelUnavailableError(KubechatError):
    """Triton cannot be reached or failed the request."""

    code = "model_unavailable"


class ModelBusyError(ModelUnavailableError):
    """The model's queue is full: it refused the request at once rather than let it wait. The
    client may retry shortly (HTTP 429 with Retry-After)."""

    code = "busy"


class UpstreamAuthError(ModelUnavailableError):
    """A remote (OpenAI-compatible) endpoint refused kubechat's API key (HTTP 401/403): the
    ChatModel's key is missing or wrong, which only its operators can fix."""

    code = "upstream_auth_failed"


class UpstreamModelNotFoundError(ModelUnavailableError):
    """A remote endpoint does not serve the ChatModel's upstream model (HTTP 404)."""

    code = "upstream_model_not_found"


class UpstreamRateLimitedError(ModelUnavailableError):
    """A remote endpoint still answered HTTP 429 after kubechat's retries."""

    code = "upstream_rate_limited"


class UpstreamRejectedError(ModelUnavailableError):
    """A remote endpoint refused the request itself (HTTP 400/422: a prompt over its context, a
    parameter it does not take)."""

    code = "upstream_rejected"


class KnowledgeBaseNotFoundError(KubechatError):
    code = "knowledge_base_not_found"


class DocumentNotFoundError(KubechatError):
    code = "document_not_found"


class KnowledgeBaseUnavailableError(KubechatError):
    """Its index cannot be used, e.g. it was built with another embedding model."""

    code = "knowledge_base_unavailable"


class InvalidVectorError(KubechatError):
    """A vector the knowledge base's similarity cannot use: not unit length under dot_product, zero
    under cosine, NaN or infinite. Elasticsearch refuses these; the embedded store does too."""

    code = "invalid_vector"


class DocumentTooLargeError(KubechatError):
    code = "document_too_large"


class LengthRequiredError(KubechatError):
    """An upload without a Content-Length: its size could only be bounded after reading it."""

    code = "length_required"


class DecompressionBombError(KubechatError):
    code = "decompression_bomb"


class UnsupportedDocumentTypeError(KubechatError):
    code = "unsupported_media_type"


class EmptyDocumentError(KubechatError):
    code = "empty_document"


class StorageUnavailableError(KubechatError):
    """The object store or the chunk store cannot be reached."""

    code = "storage_unavailable"


class UnsupportedImageError(KubechatError):
    """Not one of the accepted image formats (PNG, JPEG, WebP, GIF)."""

    code = "unsupported_media_type"


class ImageTooLargeError(KubechatError):
    """More bytes than KUBECHAT_MAX_IMAGE_BYTES (too many pixels is a DecompressionBombError)."""

    code = "image_too_large"


class CorruptImageError(KubechatError):
    """An accepted format whose bytes cannot be decoded (truncated, damaged)."""

    code = "corrupt_image"


class ImageNotFoundError(KubechatError):
    """No such image, or another principal's: the two are not told apart."""

    code = "image_not_found"


class ToolRoundsExceededError(KubechatError):
    """The model kept calling tools past its ChatModel's spec.tools.maxRounds."""

    code = "tool_rounds_exceeded"


def as_kubechat_error(exc: Exception) -> KubechatError:
    """`exc` itself if it is a domain error, else an InternalError that does not repeat its text
    (an unexpected exception's message may carry internals); the caller logs the original."""
    if isinstance(exc, KubechatError):
        return exc
    return InternalError("an internal error occurred; it has been logged")
