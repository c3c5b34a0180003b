"""Reranking: the engine's scorer with the real all-MiniLM-L6-v2, and HybridSearch's call path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from kubechat.catalog import load_catalog
from kubechat.core.errors import InvalidRequestError
from kubechat.core.resources import Capability, KnowledgeBase
from kubechat.engines.reranking import PassageScorer, is_cross_encoder
from kubechat.knowledge.retrieval import HybridSearch
from kubechat.stores.sqlite.chunks import SQLiteChunkStore
from kubechat.triton.artifacts import prepare_artifacts
from tests.conformance.test_chunk_store import filled, knowledge_base
from tests.conftest import EXAMPLE_MODELS


class InProcessModels:
    """What the minilm embedder and a reranker on the same checkpoint answer, run in process."""

    def __init__(self, scorer: PassageScorer) -> None:
        self.scorer = scorer
        self.reranked: list[tuple[str, str, int]] = []

    async def embed(self, model: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return np.array([[1, 0, 0, 0]] * len(texts), dtype=np.float32)  # the corpus's 4-d vectors

    async def rerank(self, model: str, query: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.reranked.append((model, query, len(texts)))
        return self.scorer.scores([query] * len(texts), texts)


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> PassageScorer:
    state = tmp_path_factory.mktemp("state")
    model = load_catalog(EXAMPLE_MODELS, state).get("minilm", Capability.EMBEDDINGS).model
    return PassageScorer(prepare_artifacts(model, Path(state)).checkpoint_dir)


def test_a_bi_encoder_scores_the_relevant_passage_highest(scorer: PassageScorer) -> None:
    assert scorer.cross is False  # all-MiniLM-L6-v2 has no classification head
    passages = ["Triton serves models over gRPC.", "Pods restart when their liveness probes fail."]
    scores = scorer.scores(["why did my pod restart?"] * 2, passages)
    assert scores.shape == (2,) and scores[1] > scores[0] and ((scores >= 0) & (scores <= 1)).all()
    assert scorer.scores([], []).shape == (0,)


def test_a_cross_encoder_is_told_by_its_head(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"architectures": ["BertForSequenceClassification"]}')
    assert is_cross_encoder(str(tmp_path)) and not is_cross_encoder(str(tmp_path / "missing"))


def reranked_kb(name: str, reranker: str) -> KnowledgeBase:
    kb = knowledge_base(name)
    retrieval = kb.spec.retrieval.model_copy(update={"reranker": reranker})
    return kb.model_copy(update={"spec": kb.spec.model_copy(update={"retrieval": retrieval})})


async def test_a_knowledge_base_with_a_reranker_is_reordered_by_it(
    tmp_path: Path, scorer: PassageScorer
) -> None:
    store = await SQLiteChunkStore.open(tmp_path / "chunks.sqlite3")
    models = InProcessModels(scorer)
    try:
        kb = reranked_kb("handbook", "minilm-rerank")
        await filled(store, kb)
        search = HybridSearch(store, models, reranker=models)
        found = await search.search([kb], "why do pods restart?", limit=4, candidates=10)
        with pytest.raises(InvalidRequestError, match="different rerankers"):
            other = reranked_kb("runbooks", "another")
            await filled(store, other)
            await search.search([kb, other], "why do pods restart?", limit=4, candidates=10)
    finally:
        await store.close()
    assert models.reranked[0] == ("minilm-rerank", "why do pods restart?", 4)
    assert found[0].text == "Pods restart when their liveness probes fail on the nodes."
    assert [c.score for c in found] == sorted((c.score for c in found), reverse=True)  # the reranker's
