"""Triton python-backend reranker: (query, passage) pairs scored by a sentence-transformers model."""

from kubechat.engines.python_backend import SentenceRerankModel


class TritonPythonModel(SentenceRerankModel):
    pass
