"""Store errors: what every store raises, whichever service backs it."""

from __future__ import annotations


class StoreError(Exception):
    """A store failed in a way a retry will not fix."""


class StoreUnavailableError(StoreError):
    """The backing service cannot be reached or is overloaded (retry later)."""


class UnsupportedServerError(StoreError):
    """The backing service answers, but is a version (or product) kubechat cannot talk to."""


class EmbeddingMismatchError(StoreError):
    """An index was built with another embedding model or vector size than the KnowledgeBase names."""


class InvalidVectorError(StoreError):
    """A vector its index's similarity refuses (see kubechat.stores.chunks.vector_problem)."""


class InvalidIndexSpecError(StoreError):
    """The server refused to create an index from the KnowledgeBase's spec (its reason is the message):
    a spec problem, which retrying does not fix."""


class IndexMissingError(StoreError):
    """A knowledge base's index does not exist (yet): in a cluster the operator creates it."""


class ObjectNotFoundError(StoreError):
    pass


class BucketMissingError(StoreError):
    """The object store's bucket does not exist: no object can be found or written."""


class ObjectTooLargeError(StoreError):
    """An object is larger than the caller will read into memory."""
