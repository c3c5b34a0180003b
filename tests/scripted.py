"""Small scripted stand-ins for the chat service's ports, for fast tests of kubechat.chat and the
API in process: Triton answering from a script, MCP tools as Python functions, knowledge bases
as fixed citations. The real ones are exercised by the integration tests."""

from __future__ import annotations

import asyncio
import fnmatch
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from kubechat.core.errors import KnowledgeBaseNotFoundError, KubechatError
from kubechat.knowledge.attribution import SentenceSources
from kubechat.knowledge.retrieval import Citation
from kubechat.tools.types import ToolResult, ToolSpec
from kubechat.triton.client import ReportedUsage, SamplingParams

# In a scripted reply: wait here until the test sets `ScriptedTriton.release`.
HOLD = object()


@dataclass(frozen=True)
class Pause:
    """In a scripted reply: wait this long before the next item (a model that takes its time)."""

    seconds: float


# A reply: text deltas in order, HOLD, Pause, or an exception to raise at that point of the stream.
Reply = Sequence[object]


@dataclass(frozen=True)
class StreamRequest:
    model: str
    prompt: str
    params: SamplingParams
    request_id: str
    image: bytes | None


class ScriptedTriton:
    """A TritonInference whose streams play the queued replies in order, then `default`."""

    def __init__(self, *replies: Reply, default: Reply = ("Hello", " there", ".")) -> None:
        self.replies: deque[Reply] = deque(replies)
        self.default = default
        self.requests: list[StreamRequest] = []
        self.descriptions: deque[str | KubechatError] = deque()
        self.described: list[tuple[str, str]] = []  # (model, prompt)
        self.holding = asyncio.Event()  # a stream reached HOLD
        self.release = asyncio.Event()
        self.closed_streams = 0

    def answer(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def model_ready(self, model: str) -> bool:
        return True

    async def server_ready(self) -> bool:
        return True

    async def stream_text(
        self,
        model: str,
        prompt: str,
        params: SamplingParams,
        request_id: str = "",
        image: bytes | None = None,
        logprobs: list[dict[str, Any]] | None = None,
        *,
        turns: Sequence[tuple[str, str]] | None = None,
        usage: ReportedUsage | None = None,
    ) -> AsyncGenerator[str, None]:
        self.requests.append(StreamRequest(model, prompt, params, request_id, image))
        reply = self.replies.popleft() if self.replies else self.default
        try:
            for item in reply:
                if item is HOLD:
                    self.holding.set()
                    await self.release.wait()
                elif isinstance(item, Pause):
                    await asyncio.sleep(item.seconds)
                elif isinstance(item, BaseException):
                    raise item
                else:
                    if logprobs is not None:  # one entry per piece, as a model gives one per token
                        top = [{"token": "x", "bytes": [120], "logprob": -2.0}] * (params.logprobs or 0)
                        text = str(item)
                        logprobs.append(
                            {
                                "token": text,
                                "bytes": list(text.encode()),
                                "logprob": -0.5,
                                "top_logprobs": top,
                            }
                        )
                    yield str(item)
        finally:
            self.closed_streams += 1

    async def describe_image(self, model: str, image: bytes, prompt: str, max_tokens: int) -> str:
        self.described.append((model, prompt))
        description = self.descriptions.popleft() if self.descriptions else "a picture"
        if isinstance(description, KubechatError):
            raise description
        return description

    async def embed(self, model: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return np.ones((len(texts), 4), dtype=np.float32)

    async def rerank(self, model: str, query: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return np.zeros(len(texts), dtype=np.float32)

    async def close(self) -> None:
        pass


@dataclass
class FunctionTools:
    """A Toolbox of Python functions, each taking the call's arguments and returning its text."""

    functions: dict[str, Callable[[dict[str, Any]], str]]
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def tools(self, allow: Sequence[str] = ("*",)) -> list[ToolSpec]:
        return [
            ToolSpec(name, f"the {name} tool")
            for name in self.functions
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in allow)
        ]

    async def call(
        self, name: str, arguments: dict[str, Any], *, timeout_s: float | None = None
    ) -> ToolResult:
        self.calls.append((name, arguments))
        try:
            return ToolResult(True, self.functions[name](arguments))
        except Exception as exc:  # a tool's failure is a result, as MCP reports it
            return ToolResult(False, str(exc), "tool_error")


@dataclass
class FixedKnowledge:
    """Knowledge bases that every principal may read, each answering with the same citations
    (or failing with `failure`)."""

    names: set[str]
    sources: list[Citation] = field(default_factory=list)
    failure: KubechatError | None = None
    searched: list[str] = field(default_factory=list)
    attribution: list[SentenceSources] = field(default_factory=list)
    attributed: list[str] = field(default_factory=list)

    def get(self, name: str, principal: str) -> object:
        if name not in self.names:
            raise KnowledgeBaseNotFoundError(f"unknown knowledge base {name!r}")
        return name

    def names_readable(self, principal: str) -> list[str]:
        return sorted(self.names)

    async def search(
        self, principal: str, kb_names: Sequence[str], query: str, *, limit: int, candidates: int
    ) -> list[Citation]:
        self.searched.append(query)
        if self.failure is not None:
            raise self.failure
        return self.sources[:limit]

    async def attribute(
        self, principal: str, answer: str, sources: Sequence[Citation]
    ) -> list[SentenceSources]:
        """`attribution` for every answer (the real one, with a real embedder, is tested in
        tests/unit/test_attribution.py and tests/integration)."""
        self.attributed.append(answer)
        return list(self.attribution)


def citation(n: int, text: str, knowledge_base: str = "handbook") -> Citation:
    return Citation(
        n=n, knowledge_base=knowledge_base, document_id=f"doc{n}", document_name=f"doc{n}.md",
        chunk_id=f"chunk{n}", page=None, section="", score=1.0 / n, snippet=text, text=text,
    )  # fmt: skip
