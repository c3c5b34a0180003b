"""The Triton tensor contracts kubechat speaks, in one place for the API, renderer and models.

The chat contract is the interface of TensorRT-LLM's former `ensemble` / `tensorrt_llm_bls`
models (`text_input`, `max_tokens`, ... -> `text_output`, decoupled). The CPU development models
speak it, and so does the GPU model (kubechat.triton.llmapi_model, TensorRT-LLM's LLM API), whose
text tensors are those of upstream's `all_models/llmapi`. The vision contract is the chat
contract plus the encoded image file, under the name TensorRT-LLM's multimodal ensemble gave its
image input (whose dims differ: see model-repo/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Chat inputs (the names of TensorRT-LLM's ensemble and of its LLM API model).
TEXT_INPUT: Final = "text_input"
MAX_TOKENS: Final = "max_tokens"
STREAM: Final = "stream"
TEMPERATURE: Final = "temperature"
TOP_P: Final = "top_p"
TOP_K: Final = "top_k"
REPETITION_PENALTY: Final = "repetition_penalty"
STOP_WORDS: Final = "stop_words"
END_ID: Final = "end_id"
RANDOM_SEED: Final = "random_seed"
EXCLUDE_INPUT_IN_OUTPUT: Final = "exclude_input_in_output"
# Structured outputs, as TensorRT-LLM's backend names them: the guide type ("json",
# "json_schema", "regex", "ebnf_grammar") and the guide (the schema, regex or grammar text).
GUIDED_DECODING_GUIDE_TYPE: Final = "guided_decoding_guide_type"
GUIDED_DECODING_GUIDE: Final = "guided_decoding_guide"
GUIDE_JSON: Final = "json"
GUIDE_JSON_SCHEMA: Final = "json_schema"
# Log probabilities (the CPU chat model only; see docs/openai.md for the GPU path):
# `return_log_probs` is TensorRT-LLM's input name, `top_logprobs` (0 to 20 alternatives per
# token) is kubechat's. Each response then carries `logprobs`: a JSON list, one entry per token
# generated since the previous response ({"token", "bytes", "logprob", "top_logprobs"}, OpenAI's
# shape), as a BYTES tensor beside `text_output`.
RETURN_LOG_PROBS: Final = "return_log_probs"
TOP_LOGPROBS: Final = "top_logprobs"
LOGPROBS_OUTPUT: Final = "logprobs"
MAX_TOP_LOGPROBS: Final = 20
# Chat output: one text delta per streamed response.
TEXT_OUTPUT: Final = "text_output"

# Vision input: the bytes of one encoded image file (kubechat sends PNG), UINT8 [1, N] with the
# batch dimension. The prompt is `text_input`, the description comes back as `text_output`.
IMAGE_BYTES_INPUT: Final = "image_bytes_input"

# Embedder contract: a batch of texts in, one FP32 vector per text out.
EMBED_TEXT: Final = "text"
EMBED_OUTPUT: Final = "embedding"

# Reranker contract: (query, passage) pairs in, one FP32 relevance per pair out; a batch of
# pairs is one request (Triton's dynamic batcher may merge several).
RERANK_QUERY: Final = "query"
RERANK_TEXT: Final = "text"
RERANK_OUTPUT: Final = "score"

# The ranges of the numeric tensors' types: requests are bounded to them before a tensor is built
# (numpy would raise on a value beyond them, or silently wrap a negative one into an unsigned type).
INT32_MAX: Final = 2**31 - 1
UINT64_MAX: Final = 2**64 - 1

# Set by Triton on the last response of a decoupled stream.
FINAL_RESPONSE_PARAM: Final = "triton_final_response"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton config name, e.g. TYPE_STRING
    dims: tuple[int, ...]
    optional: bool = False


CHAT_INPUTS: Final = (
    TensorSpec(TEXT_INPUT, "TYPE_STRING", (1,)),
    TensorSpec(MAX_TOKENS, "TYPE_INT32", (1,)),
    TensorSpec(STREAM, "TYPE_BOOL", (1,), optional=True),
    TensorSpec(TEMPERATURE, "TYPE_FP32", (1,), optional=True),
    TensorSpec(TOP_P, "TYPE_FP32", (1,), optional=True),
    TensorSpec(TOP_K, "TYPE_INT32", (1,), optional=True),
    TensorSpec(REPETITION_PENALTY, "TYPE_FP32", (1,), optional=True),
    TensorSpec(STOP_WORDS, "TYPE_STRING", (-1,), optional=True),
    TensorSpec(END_ID, "TYPE_INT32", (1,), optional=True),
    TensorSpec(RANDOM_SEED, "TYPE_UINT64", (1,), optional=True),
    TensorSpec(EXCLUDE_INPUT_IN_OUTPUT, "TYPE_BOOL", (1,), optional=True),
    TensorSpec(GUIDED_DECODING_GUIDE_TYPE, "TYPE_STRING", (1,), optional=True),
    TensorSpec(GUIDED_DECODING_GUIDE, "TYPE_STRING", (1,), optional=True),
)
CHAT_OUTPUTS: Final = (TensorSpec(TEXT_OUTPUT, "TYPE_STRING", (-1,)),)
# The CPU chat models' extension of the contract (kubechat's GPU LLM API model does not carry it).
LOGPROB_INPUTS: Final = (
    TensorSpec(RETURN_LOG_PROBS, "TYPE_BOOL", (1,), optional=True),
    TensorSpec(TOP_LOGPROBS, "TYPE_INT32", (1,), optional=True),
)
LOGPROB_OUTPUTS: Final = (TensorSpec(LOGPROBS_OUTPUT, "TYPE_STRING", (-1,)),)
# A vision model takes the chat inputs plus the image (required) and answers like a chat model.
VISION_INPUTS: Final = (*CHAT_INPUTS, TensorSpec(IMAGE_BYTES_INPUT, "TYPE_UINT8", (-1,)))


def embed_inputs() -> tuple[TensorSpec, ...]:
    return (TensorSpec(EMBED_TEXT, "TYPE_STRING", (1,)),)


def embed_outputs(dimensions: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec(EMBED_OUTPUT, "TYPE_FP32", (dimensions,)),)


RERANK_INPUTS: Final = (
    TensorSpec(RERANK_QUERY, "TYPE_STRING", (1,)),
    TensorSpec(RERANK_TEXT, "TYPE_STRING", (1,)),
)
RERANK_OUTPUTS: Final = (TensorSpec(RERANK_OUTPUT, "TYPE_FP32", (1,)),)
