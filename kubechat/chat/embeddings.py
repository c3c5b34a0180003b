"""Embeddings for clients (OpenAI's /v1/embeddings): the knowledge bases' embedder, served to the
frameworks that would use it (LangChain, LlamaIndex) through the same Triton contract.

Inputs are checked against the embedder's context window before anything is embedded: an
embedder silently truncates a longer text (sentence-transformers cuts at its max_seq_length),
and a vector of half a text returned as the text's own would mislead the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kubechat.catalog import CatalogEntry, ModelCatalog
from kubechat.core.errors import InvalidRequestError, UnsupportedValueError
from kubechat.core.resources import Capability
from kubechat.knowledge.inference import Embedder

# OpenAI's limit on the number of inputs of one request.
MAX_INPUTS = 2048


@dataclass(frozen=True)
class Embeddings:
    """One vector per input, in order, and the tokens the embedder read (usage)."""

    model: str
    vectors: npt.NDArray[np.float32]  # [len(inputs), dimensions]
    tokens: int


class EmbeddingService:
    def __init__(self, catalog: ModelCatalog, embedder: Embedder) -> None:
        self.catalog = catalog
        self.embedder = embedder

    async def embed(self, model: str, texts: Sequence[str], dimensions: int | None = None) -> Embeddings:
        """Embed `texts` with the model of that name (it must have the `embeddings` capability),
        in batches of the model's maxBatchSize sent together (Triton's dynamic batcher merges
        them). `dimensions` is refused unless it is the model's own: kubechat does not shorten
        vectors (only Matryoshka-trained models keep their meaning when cut)."""
        entry = self.catalog.get(model, Capability.EMBEDDINGS)
        entry.check_ready()
        if not texts:
            raise InvalidRequestError("input must not be empty", param="input")
        if len(texts) > MAX_INPUTS:
            raise InvalidRequestError(f"input may hold at most {MAX_INPUTS} texts", param="input")
        tokens = [self._tokens(entry, index, text) for index, text in enumerate(texts)]
        batch = max(1, entry.batch_size)
        parts = await asyncio.gather(
            *(self.embedder.embed(entry.name, texts[i : i + batch]) for i in range(0, len(texts), batch))
        )
        vectors = np.concatenate(parts).astype(np.float32, copy=False)
        if dimensions is not None and dimensions != vectors.shape[1]:
            raise UnsupportedValueError(
                f"model {entry.name} makes vectors of {vectors.shape[1]} dimensions; dimensions may "
                f"only be {vectors.shape[1]} (kubechat does not shorten vectors)",
                param="dimensions",
            )
        return Embeddings(entry.name, vectors, sum(tokens))

    @staticmethod
    def _tokens(entry: CatalogEntry, index: int, text: str) -> int:
        """The tokens the embedder reads for `text`, its special tokens included, refused past
        the model's window (engine.maxInputTokens)."""
        if not text:
            raise InvalidRequestError(f"input[{index}] is empty", param="input")
        if entry.tokenizer is not None:
            count = len(entry.tokenizer.encode(text, add_special_tokens=True).ids)
        else:
            count = entry.counter.count(text)
        limit = entry.model.spec.engine.max_input_tokens
        if count > limit:
            raise InvalidRequestError(
                f"input[{index}] is {count} tokens; model {entry.name} reads at most {limit}",
                param="input",
            )
        return count
