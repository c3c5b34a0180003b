"""The knowledge bases this process serves: who may read or change each, and whether it is usable.

The set is fixed in files mode; in cluster mode discovery adds, replaces and removes knowledge
bases at run time (`dynamic`). A knowledge base is usable when its embedding model is declared
with a tokenizer (chunking needs it) and its live index can be opened (kubechat.knowledge.
generations decides who creates it). An unusable one is listed with the reason and refused by
uploads and searches; it is checked again whenever it is used, when its embedder or its resource
changes, and at every scan, so it becomes usable as soon as the cause is gone (an embedder
declared, a store back, the operator's index created).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kubechat.catalog import ModelCatalog
from kubechat.core.errors import (
    ForbiddenError,
    KnowledgeBaseNotFoundError,
    KnowledgeBaseUnavailableError,
    KubechatError,
)
from kubechat.core.resources import Capability, KnowledgeBase
from kubechat.knowledge.generations import IndexGenerations
from kubechat.stores.errors import IndexMissingError, StoreError

logger = logging.getLogger(__name__)


class KnowledgeBaseRegistry:
    def __init__(
        self,
        knowledge_bases: Sequence[KnowledgeBase],
        models: ModelCatalog,
        generations: IndexGenerations,
        *,
        dynamic: bool,
    ) -> None:
        """`dynamic`: knowledge bases come and go at run time (cluster discovery), so a document
        of an unknown one waits for it to be declared (again) rather than failing."""
        self.models = models
        self.generations = generations
        self.dynamic = dynamic
        self._kbs = {kb.name: kb for kb in knowledge_bases}
        self._unavailable: dict[str, str] = {}
        self._drift: dict[str, str] = {}  # what was last logged, to log a change once

    # -- the set --------------------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self._kbs)

    def all(self) -> list[KnowledgeBase]:
        return list(self._kbs.values())

    def find(self, name: str) -> KnowledgeBase | None:
        return self._kbs.get(name)

    def add(self, kb: KnowledgeBase) -> None:
        """Add, or replace the version of the same name."""
        self._kbs[kb.name] = kb

    def remove(self, name: str) -> bool:
        self._unavailable.pop(name, None)
        return self._kbs.pop(name, None) is not None

    # -- access ---------------------------------------------------------------------------

    def readable(self, principal: str) -> list[KnowledgeBase]:
        return [kb for kb in self._kbs.values() if kb.spec.access.can_read(principal)]

    def get(self, name: str, principal: str, *, write: bool = False) -> KnowledgeBase:
        kb = self._kbs.get(name)
        # A knowledge base one may not read is indistinguishable from a missing one.
        if kb is None or not kb.spec.access.can_read(principal):
            raise KnowledgeBaseNotFoundError(f"unknown knowledge base {name!r}")
        if write and not kb.spec.access.can_write(principal):
            raise ForbiddenError(f"{principal!r} may read but not change knowledge base {name!r}")
        return kb

    # -- availability ---------------------------------------------------------------------

    def unavailable_reason(self, name: str) -> str | None:
        return self._unavailable.get(name)

    def unavailable(self) -> list[KnowledgeBase]:
        return [kb for kb in self._kbs.values() if kb.name in self._unavailable]

    def mark_available(self, name: str) -> None:
        self._unavailable.pop(name, None)

    async def check(self, kb: KnowledgeBase) -> None:
        """Find out whether `kb` is usable now, and remember why not."""
        try:
            embedder = self.models.get(kb.spec.embedding.model, Capability.EMBEDDINGS)
            if embedder.tokenizer is None:
                raise KnowledgeBaseUnavailableError(f"embedding model {embedder.name} has no tokenizer")
            await self.generations.live(kb)
            await self._report_drift(kb)
        except IndexMissingError as exc:
            self._set_unavailable(kb, f"waiting for the operator to create its index ({exc})")
        except (KubechatError, StoreError) as exc:
            self._set_unavailable(kb, exc.message if isinstance(exc, KubechatError) else str(exc))
        else:
            if self._unavailable.pop(kb.name, None) is not None:
                logger.info("knowledge base %s is available", kb.name)

    async def _report_drift(self, kb: KnowledgeBase) -> None:
        """Log, once per change, the spec.index settings the live index does not follow yet (a
        full re-index applies them; in a cluster the operator reports them as ReindexRequired)."""
        drift = "; ".join(str(d) for d in await self.generations.chunks.index_drift(kb))
        if drift and self._drift.get(kb.name) != drift:
            logger.warning(
                "knowledge base %s: the live index was built with other settings (%s); re-index it "
                "(POST /knowledge-bases/%s/reindex) to apply them",
                kb.name, drift, kb.name,
            )  # fmt: skip
        self._drift[kb.name] = drift

    def _set_unavailable(self, kb: KnowledgeBase, reason: str) -> None:
        # Logged when the reason changes, not at every re-check of the same cause.
        if self._unavailable.get(kb.name) != reason:
            logger.warning("knowledge base %s unavailable: %s", kb.name, reason)
        self._unavailable[kb.name] = reason

    async def require_usable(self, kb: KnowledgeBase) -> None:
        """Raise KnowledgeBaseUnavailableError unless `kb` is usable, checking again first if it
        was not: the cause may be gone."""
        if kb.name in self._unavailable:
            await self.check(kb)
        reason = self._unavailable.get(kb.name)
        if reason is not None:
            raise KnowledgeBaseUnavailableError(f"knowledge base {kb.name} is unavailable: {reason}")
