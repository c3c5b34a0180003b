"""Frameworks nobody here wrote, pointed at /v1 with only their base URL and key changed:
LangChain's OpenAI integrations, chat (streaming, structured output, tools) and embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field, SecretStr

from tests.conftest import ALICE_KEY, ApiProcess

pytestmark = pytest.mark.triton


def test_langchain_embeddings(api: ApiProcess) -> None:
    # check_embedding_ctx_length=False: with it on, LangChain tokenizes with tiktoken (whose
    # vocabulary it downloads, and which is not the embedder's) and sends token arrays, which
    # kubechat refuses; off, it sends the texts, as to any OpenAI-compatible server.
    embeddings = OpenAIEmbeddings(
        model="minilm", base_url=f"{api.url}/v1", api_key=SecretStr(ALICE_KEY),  # type: ignore[call-arg]
        check_embedding_ctx_length=False, max_retries=0,
    )  # fmt: skip
    documents = embeddings.embed_documents(["a cat sleeps", "the bank raised rates"])
    query = embeddings.embed_query("a kitten naps")
    assert [len(v) for v in documents] == [384, 384] and len(query) == 384
    cat, bank = np.array(documents)
    assert np.array(query) @ cat > np.array(query) @ bank


def chat(api: ApiProcess, model: str, **settings: Any) -> ChatOpenAI:
    # Unchanged client code: only the base URL and the key point it at kubechat.
    return ChatOpenAI(
        model=model, base_url=f"{api.url}/v1", api_key=SecretStr(ALICE_KEY), max_retries=0, **settings
    )


def test_langchain_chat_streams_what_it_invokes(api: ApiProcess) -> None:
    llm = chat(api, "smollm2", temperature=0, max_completion_tokens=24)
    whole = llm.invoke("Name three colours.")
    pieces = [chunk.content for chunk in llm.stream("Name three colours.")]
    assert isinstance(whole.content, str) and whole.content
    assert len(pieces) > 3 and "".join(str(p) for p in pieces) == whole.content


class Fruit(BaseModel):
    """A fruit and its colour."""

    name: str = Field(max_length=20)
    colour: str = Field(max_length=12)


def test_langchain_structured_output_is_enforced(api: ApiProcess) -> None:
    # LangChain's default method sends a strict json_schema response_format.
    llm = chat(api, "smollm2", temperature=0, max_completion_tokens=60)
    fruit = llm.with_structured_output(Fruit).invoke("Describe a banana.")
    assert isinstance(fruit, Fruit) and fruit.name and fruit.colour


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def test_langchain_tool_binding_with_the_tool_caller(api: ApiProcess) -> None:
    llm = chat(api, "tool-caller").bind_tools([get_weather])
    reply = llm.invoke('call get_weather {"city": "Oslo"}')
    assert isinstance(reply, AIMessage)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("get_weather", {"city": "Oslo"})]
