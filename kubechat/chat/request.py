"""What a transport asks the chat service for: the new messages, the model and its options."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

from kubechat.catalog import ChatTurn
from kubechat.tools.types import ToolCall, ToolSpec
from kubechat.triton.client import Guide
from kubechat.triton.contract import INT32_MAX, UINT64_MAX

# Every number a client may send for sampling, bounded to what the engine's tensors hold
# (max_tokens and top_k are INT32, seed is UINT64, the others FP32): a value beyond them is a
# refusal before anything is stored, never an overflow while building the request to Triton.
# Strict: `true` is not 1, 1.5 is not 1 and "7" is not 7 (JSON integers are accepted as floats).
MaxTokens = Annotated[int, Strict(), Field(ge=1, le=INT32_MAX)]
TopK = Annotated[int, Strict(), Field(ge=0, le=INT32_MAX, description="0: no top-k filtering.")]
# A seed is further bounded to I-JSON's interoperable integers (RFC 7493): JavaScript, and every
# JSON parser that reads numbers as doubles, keep them exact (2**64 - 1 would arrive as 2**64).
JSON_INT_MAX = 2**53 - 1
assert JSON_INT_MAX <= UINT64_MAX
Seed = Annotated[int, Strict(), Field(ge=0, le=JSON_INT_MAX, description="0 to 2**53 - 1.")]
Temperature = Annotated[float, Strict(), Field(ge=0, le=2)]
TopP = Annotated[float, Strict(), Field(gt=0, le=1)]
RepetitionPenalty = Annotated[float, Strict(), Field(ge=1, le=2)]
StopWord = Annotated[str, Field(min_length=1, max_length=256)]
StopWords = Annotated[list[StopWord], Field(max_length=16)]


class GenerationOptions(BaseModel):
    """Sampling options of one request; unset ones take the ChatModel's defaults."""

    model_config = ConfigDict(extra="forbid")

    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    repetition_penalty: RepetitionPenalty | None = None
    max_tokens: MaxTokens | None = None
    stop: StopWords | None = None
    seed: Seed | None = None


@dataclass(frozen=True, slots=True)
class InlineImage:
    """An image sent inside the request as a base64 data: URL (checked like an upload, not stored)."""

    data_url: str


# An image of a message: the id of one the principal uploaded to /images, or an inline one.
ImageRef = str | InlineImage


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message the client sends: checked against the size limit, its images resolved."""

    role: str  # system, user, assistant or tool
    content: str
    images: Sequence[ImageRef] = ()
    tool_calls: Sequence[ToolCall] = ()  # an assistant's calls of the client's tools, sent back
    tool_call_id: str = ""  # a tool message: the call it answers


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A request for one answer to `messages`, whose last one is the question.

    `mcp_tools` offers the model the MCP tools its ChatModel allows, run here in a loop;
    `client_tools` are the client's own (OpenAI's `tools`): calls are handed back to it.
    `history` holds earlier turns that are already stored (and were checked when they were).
    `guide` constrains the answer (OpenAI's response_format): enforced by the engine's
    constrained decoding, refused for a model whose engine has none. `logprobs` asks for the
    tokens' log probabilities, refused by models that cannot give them.
    """

    messages: Sequence[ChatMessage]
    model: str | None = None
    options: GenerationOptions = field(default_factory=GenerationOptions)
    knowledge_bases: Sequence[str] = ()
    mcp_tools: bool = False
    client_tools: Sequence[ToolSpec] = ()
    history: Sequence[ChatTurn] = ()
    guide: Guide | None = None
    logprobs: int | None = None  # None: none; else the alternatives per token (0 to 20)
    # Set by kubechat only, for a specialist's answer: how many more levels may use tools
    # (None: a request from a client, bounded by its model's spec.tools.maxDepth).
    delegation_left: int | None = None
