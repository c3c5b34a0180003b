"""Store errors: what every store raises, whichever service backs it."""

from __future__ import annotations


class StoreError(Exception):
    """A store failed in a way a retry will not fix."""


class StoreUnavailableError(StoreError):
    """The backing service cannot be reached or is overloaded (retry later)."""


class EmbeddingMismatchError(StoreError):
    """An index was built with another embedding model or vector size than the KnowledgeBase names."""


class IndexMissingError(StoreError):
    """A knowledge base's index does not exist (yet): in a cluster the operator creates it."""


class ObjectNotFoundError(StoreError):
    pass
