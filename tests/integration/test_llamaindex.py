"""LlamaIndex's OpenAI-like LLM pointed at /v1: unchanged client code, only the base URL and key.

Skipped where LlamaIndex is not installed: llama-index-llms-openai pins openai<3, so it is not in
the dev extra yet (docs/openai.md, "Frameworks"); install it beside openai 2.x to run this.
"""

from __future__ import annotations

import pytest

from tests.conftest import ALICE_KEY, ApiProcess

openai_like = pytest.importorskip("llama_index.llms.openai_like")
llms = pytest.importorskip("llama_index.core.llms")

pytestmark = pytest.mark.triton


def test_llamaindex_openai_like_chats_and_streams(api: ApiProcess) -> None:
    llm = openai_like.OpenAILike(
        model="smollm2", api_base=f"{api.url}/v1", api_key=ALICE_KEY, is_chat_model=True,
        context_window=2048, max_tokens=24, temperature=0, max_retries=0,
    )  # fmt: skip
    question = [llms.ChatMessage(role="user", content="Name three colours.")]
    whole = llm.chat(question)
    assert whole.message.content
    streamed = "".join(part.delta or "" for part in llm.stream_chat(question))
    assert streamed == whole.message.content
    completed = llm.complete("Name three colours.")  # chat models answer complete() through chat
    assert completed.text == whole.message.content
