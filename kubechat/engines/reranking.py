"""Scoring (query, passage) pairs for reranking, with a sentence-transformers checkpoint.

A cross-encoder checkpoint (a sequence-classification head, e.g. ms-marco-MiniLM-L-6-v2) reads
each pair together and is what a reranker should be. A bi-encoder checkpoint (an embedder, e.g.
all-MiniLM-L6-v2) also works: it scores a pair by the cosine of the two embeddings, mapped to
[0, 1] as (1 + cos) / 2 — no better than the kNN list it reorders, but a real model on a machine
without a cross-encoder's weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def is_cross_encoder(checkpoint_dir: str) -> bool:
    config = Path(checkpoint_dir) / "config.json"
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text()).get("architectures") or []
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


class PassageScorer:
    def __init__(self, checkpoint_dir: str) -> None:
        self.cross = is_cross_encoder(checkpoint_dir)
        self.model: Any
        if self.cross:
            from sentence_transformers import CrossEncoder

            self.model = CrossEncoder(checkpoint_dir, device="cpu")
        else:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(checkpoint_dir, device="cpu")

    def scores(self, queries: Sequence[str], texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One relevance per (queries[i], texts[i]); higher is more relevant."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        if self.cross:
            logits = np.asarray(self.model.predict(list(zip(queries, texts, strict=True))), dtype=np.float32)
            return np.asarray(1.0 / (1.0 + np.exp(-logits.reshape(len(texts), -1)[:, -1])), dtype=np.float32)
        unique = list(dict.fromkeys(queries))
        query_vectors = self.model.encode(unique, normalize_embeddings=True)
        text_vectors = self.model.encode(list(texts), normalize_embeddings=True)
        rows = np.array([unique.index(q) for q in queries])
        cosine = np.einsum("ij,ij->i", query_vectors[rows], text_vectors)
        return np.asarray((1.0 + cosine) / 2.0, dtype=np.float32)
