"""The reranker Triton model (model-repo/sentence_reranker) in a real tritonserver: a ChatModel
with the rerank capability on the MiniLM checkpoint (a bi-encoder: cosine scores), called through
TritonGateway.rerank as HybridSearch calls it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from kubechat.embedded.launcher import TritonPorts, start_triton
from kubechat.triton.client import TritonGateway
from tests.conftest import EXAMPLE_MODELS, free_port


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TritonGateway]:
    root = tmp_path_factory.mktemp("reranker")
    model = yaml.safe_load((EXAMPLE_MODELS / "minilm.yaml").read_text())
    model["metadata"]["name"] = "minilm-rerank"
    model["spec"]["capabilities"] = ["rerank"]
    (root / "models").mkdir()
    (root / "models" / "reranker.yaml").write_text(yaml.safe_dump(model))
    server = start_triton(
        root / "models", Path(root / "state"), TritonPorts(free_port(), free_port(), free_port()), 300
    )
    client = TritonGateway(server.grpc_url)
    try:
        yield client
    finally:
        await client.close()
        server.stop()


async def test_the_reranker_scores_each_passage_for_the_query(gateway: TritonGateway) -> None:
    passages = [
        "Triton serves models over gRPC.",
        "Pods restart when their liveness probes fail.",
        "Bananas are yellow.",
    ]
    scores = await gateway.rerank("minilm-rerank", "why did my pod restart?", passages)
    assert scores.shape == (3,) and int(scores.argmax()) == 1
    assert ((scores >= 0) & (scores <= 1)).all()
