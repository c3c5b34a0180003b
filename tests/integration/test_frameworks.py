"""Frameworks nobody here wrote, pointed at /v1 with only their base URL and key changed:
LangChain's OpenAI integrations (and LlamaIndex's OpenAI-like ones where installed)."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_openai import OpenAIEmbeddings
from pydantic import SecretStr

from tests.conftest import ALICE_KEY, ApiProcess

pytestmark = pytest.mark.triton


def test_langchain_embeddings(api: ApiProcess) -> None:
    # check_embedding_ctx_length=False: with it on, LangChain tokenizes with tiktoken (whose
    # vocabulary it downloads, and which is not the embedder's) and sends token arrays, which
    # kubechat refuses; off, it sends the texts, as to any OpenAI-compatible server.
    embeddings = OpenAIEmbeddings(
        model="minilm", base_url=f"{api.url}/v1", api_key=SecretStr(ALICE_KEY),
        check_embedding_ctx_length=False, max_retries=0,
    )  # fmt: skip
    documents = embeddings.embed_documents(["a cat sleeps", "the bank raised rates"])
    query = embeddings.embed_query("a kitten naps")
    assert [len(v) for v in documents] == [384, 384] and len(query) == 384
    cat, bank = np.array(documents)
    assert np.array(query) @ cat > np.array(query) @ bank
