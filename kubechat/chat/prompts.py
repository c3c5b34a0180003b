"""From a request to what the model is given: sampling parameters and the prompt."""

from __future__ import annotations

from collections.abc import Sequence

from kubechat.catalog import CatalogEntry, ChatTurn, Prompt
from kubechat.chat.request import GenerationOptions
from kubechat.core.errors import InvalidRequestError, UnsupportedParameterError, UnsupportedValueError
from kubechat.core.resources import Backend
from kubechat.knowledge.retrieval import Citation, sources_prompt
from kubechat.tools.formats import tools_system_prompt
from kubechat.tools.types import ToolSpec
from kubechat.triton.client import Guide, SamplingParams

# The engines with constrained decoding: TensorRT-LLM's guided decoding (xgrammar) on the GPU,
# the CPU causal LM's xgrammar loop (kubechat.engines.generation). The synthetic and tool-caller
# models compute their answers and cannot be constrained.
GUIDED_BACKENDS = frozenset({Backend.TENSORRTLLM, Backend.TRANSFORMERS})


# The engines that return log probabilities through kubechat's contract: the CPU causal LM.
# kubechat's GPU model (TensorRT-LLM's LLM API, kubechat.triton.llmapi_model) does not carry them
# to the API yet: refused there (docs/openai.md).
LOGPROB_BACKENDS = frozenset({Backend.TRANSFORMERS})


def sampling_params(
    entry: CatalogEntry, options: GenerationOptions, guide: Guide | None = None, logprobs: int | None = None
) -> SamplingParams:
    """Request options over the ChatModel's defaults, bounded by its engine limits."""
    if logprobs is not None and entry.model.spec.engine.backend not in LOGPROB_BACKENDS:
        raise UnsupportedParameterError(
            f"model {entry.name} cannot return log probabilities (backend {entry.model.spec.engine.backend})",
            param="logprobs",
        )
    if guide is not None and entry.model.spec.engine.backend not in GUIDED_BACKENDS:
        raise UnsupportedValueError(
            f"model {entry.name} cannot enforce a response format (backend "
            f"{entry.model.spec.engine.backend} has no constrained decoding)",
            param="response_format",
        )
    defaults = entry.model.spec.defaults
    limit = entry.model.spec.engine.max_output_tokens
    max_tokens = options.max_tokens or defaults.max_tokens
    if max_tokens > limit:
        raise InvalidRequestError(f"max_tokens {max_tokens} exceeds model {entry.name}'s limit {limit}")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=defaults.temperature if options.temperature is None else options.temperature,
        top_p=defaults.top_p if options.top_p is None else options.top_p,
        top_k=defaults.top_k if options.top_k is None else options.top_k,
        repetition_penalty=(
            defaults.repetition_penalty if options.repetition_penalty is None else options.repetition_penalty
        ),
        stop=tuple(defaults.stop if options.stop is None else options.stop),
        seed=options.seed,
        guide=guide,
        logprobs=logprobs,
    )


def cited_prompt(
    entry: CatalogEntry, turns: Sequence[ChatTurn], sources: list[Citation]
) -> tuple[Prompt, list[ChatTurn], list[Citation]]:
    """The prompt of `turns` (the last is the question) with as many of the best sources as fit
    engine.maxInputTokens, put into the question's turn.

    Older turns are dropped first (build_prompt), then the lowest-ranked sources: the question
    and the instruction must never be cut. Returns the prompt, the turns it was built from and
    the sources actually given to the model.
    """
    *past, question = turns
    budget = entry.model.spec.engine.max_input_tokens
    while True:
        cited = [*past, ChatTurn(question.role, sources_prompt(sources, question.content))]
        prompt = entry.build_prompt(cited)
        if prompt.tokens <= budget or not sources:
            return prompt, cited, sources
        sources = sources[:-1]


def tool_system_turns(entry: CatalogEntry, tools: Sequence[ToolSpec], system: str = "") -> list[ChatTurn]:
    """The system turn that offers `tools` in the model's format, after the model's own system
    prompt (or `system`, a client's); none without tools."""
    if not tools:
        return []
    base = system or entry.model.spec.system_prompt
    offer = tools_system_prompt(entry.model.spec.tools.format, tools)
    return [ChatTurn("system", f"{base}\n\n{offer}" if base else offer)]
