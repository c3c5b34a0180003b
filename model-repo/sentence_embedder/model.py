"""Triton python-backend embedder: sentence-transformers, batched by Triton's dynamic batcher."""

from kubechat.engines.python_backend import SentenceEmbeddingModel


class TritonPythonModel(SentenceEmbeddingModel):
    pass
