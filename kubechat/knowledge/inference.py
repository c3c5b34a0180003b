"""What the knowledge service needs from Triton: embeddings, and descriptions of image documents.

Narrower than kubechat.triton.client.TritonInference (which satisfies both), so that a test can
stand in for the models with a few lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Embedder(Protocol):
    async def embed(self, model: str, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class Reranker(Protocol):
    async def rerank(self, model: str, query: str, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class KnowledgeInference(Embedder, Reranker, Protocol):
    async def describe_image(self, model: str, image: bytes, prompt: str, max_tokens: int) -> str: ...
