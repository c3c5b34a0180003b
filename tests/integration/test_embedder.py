"""The MiniLM embedder through Triton: the contract the knowledge-base work builds on."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kubechat.embedded.tritonserver import TritonServer
from kubechat.triton.client import TritonGateway

pytestmark = pytest.mark.triton


async def test_embeddings_are_normalized_and_meaningful(triton: TritonServer) -> None:
    gateway = TritonGateway(triton.grpc_url)
    try:
        texts = ["The cat sleeps on the sofa.", "A kitten naps on the couch.", "Stock markets fell today."]
        # Concurrent requests, merged by Triton's dynamic batcher, each get their own rows back.
        batches = await asyncio.gather(gateway.embed("minilm", texts), gateway.embed("minilm", texts[:1]))
    finally:
        await gateway.close()
    vectors, single = batches
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(single[0], vectors[0], atol=1e-5)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > 0.5 > unrelated
