"""LlamaIndex's OpenAI-like LLM against kubechat's /v1, as a framework user's program would be:
unchanged client code, only the base URL and key. Run by tests/integration/test_llamaindex.py in
a process of its own (LlamaIndex needs openai<3; kubechat's environment has openai 3). Prints
what it got as one JSON object.

Usage: python llamaindex_client.py BASE_URL API_KEY
"""

import json
import sys

from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike


def main(base_url: str, api_key: str) -> None:
    llm = OpenAILike(
        model="smollm2", api_base=base_url, api_key=api_key, is_chat_model=True,
        context_window=2048, max_tokens=24, temperature=0, max_retries=0,
    )  # fmt: skip
    question = [ChatMessage(role="user", content="Name three colours.")]
    whole = llm.chat(question).message.content
    streamed = "".join(part.delta or "" for part in llm.stream_chat(question))
    completed = llm.complete("Name three colours.").text  # a chat model answers through chat
    print(json.dumps({"chat": whole, "stream_chat": streamed, "complete": completed}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
