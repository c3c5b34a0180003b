"""Attributing answer sentences to sources, with the real all-MiniLM-L6-v2 (in process)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sentence_transformers import SentenceTransformer

from kubechat.catalog import load_catalog
from kubechat.core.resources import Capability
from kubechat.knowledge.attribution import attribute, sentence_spans
from kubechat.triton.artifacts import prepare_artifacts
from tests.conftest import EXAMPLE_MODELS
from tests.scripted import citation


class MiniLM:
    """The embedder the minilm Triton model runs (engines' SentenceEmbeddingModel), in process."""

    def __init__(self, checkpoint: str) -> None:
        self.model = SentenceTransformer(checkpoint, device="cpu")

    async def embed(self, model: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return np.asarray(self.model.encode(list(texts), normalize_embeddings=True), dtype=np.float32)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> MiniLM:
    state = tmp_path_factory.mktemp("state")
    model = load_catalog(EXAMPLE_MODELS, state).get("minilm", Capability.EMBEDDINGS).model
    return MiniLM(prepare_artifacts(model, Path(state)).checkpoint_dir)


def test_sentences_keep_their_markers_and_offsets() -> None:
    text = "Backups run nightly [1]. The codename is Heron! \n\n- a list item\nWhy? Because."
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == [
        "Backups run nightly [1].", "The codename is Heron!", "- a list item", "Why?", "Because.",
    ]  # fmt: skip
    assert sentence_spans("") == [] and sentence_spans("no full stop") == [(0, 12)]


async def test_each_sentence_gets_the_sources_that_support_it(minilm: MiniLM) -> None:
    sources = [
        citation(1, "Chat history is backed up every night at 02:00 UTC to the object store."),
        citation(2, "The scheduler now batches requests. The codename of the autumn release is Blue Heron."),
    ]  # fmt: skip
    answer = (
        "The autumn release is code-named Blue Heron. "
        "History backups are taken nightly at 2 am UTC [2]. "
        "Let me know if there is anything else I can help with."
    )
    first, second, third = await attribute(minilm, "minilm", answer, sources)
    assert answer[first.start : first.end] == "The autumn release is code-named Blue Heron."
    assert (first.sources[:1], first.cited) == ([2], [])
    assert second.sources[:1] == [1] and second.cited == [2]  # the model's own [n] is kept, even a wrong one
    assert third.sources == [] and third.similarity < 0.45  # small talk is attributed to nothing
    assert await attribute(minilm, "minilm", answer, []) == []
