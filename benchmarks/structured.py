"""The cost of structured outputs: tokens/s of SmolLM2 constrained by a JSON schema against free
text, the same model and prompt, through the real tritonserver (target: a ratio of at least 0.9).

Each round streams the prompt twice, free and constrained, in alternating order (so that
neither always runs on a warmer machine), greedy, to max_tokens. Reported per mode: decode
tokens/s (first delta to last: the masking cost per token) and end-to-end tokens/s (request to
last delta: the grammar's compilation included), and the constrained/free ratios; then the
masking cost per token timed alone, which load on a shared machine cannot blur.

Prints a table and writes benchmarks/results/structured-<time>.json.

    make bench
    python -m benchmarks.structured --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from contextlib import aclosing
from dataclasses import asdict, dataclass
from pathlib import Path

from tokenizers import Tokenizer

from benchmarks.streaming import ROOT, write_report
from kubechat.embedded.launcher import TritonPorts, start_triton
from kubechat.triton import contract
from kubechat.triton.client import Guide, SamplingParams, TritonGateway
from tests.conftest import free_port

PROMPT = (
    "<|im_start|>user\nList animals with one fact about each, as JSON with an `animals` array of "
    "objects with `name` and `fact`.<|im_end|>\n<|im_start|>assistant\n"
)
ANIMALS = {
    "type": "object",
    "properties": {
        "animals": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "fact": {"type": "string"}},
                "required": ["name", "fact"],
            },
            # More items than max_tokens can hold: the constrained answer runs to max_tokens like
            # the free one, so both rates are over the same number of tokens.
            "minItems": 12,
        }
    },
    "required": ["animals"],
}
TARGET = 0.9


@dataclass
class Run:
    mode: str
    tokens: int
    decode_tokens_per_s: float
    end_to_end_tokens_per_s: float
    text: str


async def one(gateway: TritonGateway, tokenizer: Tokenizer, params: SamplingParams, mode: str) -> Run:
    started = time.perf_counter()
    first = last = 0.0
    pieces = []
    async with aclosing(gateway.stream_text("smollm2", PROMPT, params)) as deltas:
        async for delta in deltas:
            last = time.perf_counter()
            first = first or last
            pieces.append(delta)
    tokens = len(tokenizer.encode("".join(pieces), add_special_tokens=False).ids)
    text = "".join(pieces)
    return Run(mode, tokens, (tokens - 1) / (last - first), tokens / (last - started), text)


def masking_ms_per_token(tokenizer_dir: Path, answer: str) -> float:
    """What the grammar adds to each decoding step, timed alone (no other work competes on a
    shared machine, where tokens/s ratios are noisy): the next-token bitmask and its application
    to a vocabulary of logits, along the constrained answer's own tokens."""
    import torch
    import xgrammar
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    vocab = 49152  # SmolLM2's logits
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
    grammar = xgrammar.GrammarCompiler(info).compile_json_schema(json.dumps(ANIMALS), any_whitespace=False)
    matcher = xgrammar.GrammarMatcher(grammar)
    bitmask = xgrammar.allocate_token_bitmask(1, vocab)
    logits = torch.randn(1, vocab)
    ids = tokenizer(answer, add_special_tokens=False).input_ids
    spent = 0.0
    for token in ids:
        started = time.perf_counter()
        matcher.fill_next_token_bitmask(bitmask)
        xgrammar.apply_token_bitmask_inplace(logits, bitmask, vocab_size=vocab)
        spent += time.perf_counter() - started
        if not matcher.accept_token(token):
            break
    return 1000 * spent / max(1, len(ids))


def summary(runs: list[Run], mode: str) -> dict[str, float]:
    mine = [r for r in runs if r.mode == mode]
    return {
        "tokens": statistics.median(r.tokens for r in mine),
        "decode_tokens_per_s": statistics.median(r.decode_tokens_per_s for r in mine),
        "end_to_end_tokens_per_s": statistics.median(r.end_to_end_tokens_per_s for r in mine),
    }


async def benchmark(args: argparse.Namespace) -> dict[str, object]:
    state = ROOT / ".kubechat" / "bench"
    triton = start_triton(
        ROOT / "examples" / "models", state, TritonPorts(free_port(), free_port(), free_port()), 300
    )
    tokenizer_dir = next((state / "tokenizers").glob("smollm2-*"))
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    gateway = TritonGateway(triton.grpc_url)
    free = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    guided = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=0.0,
        guide=Guide(contract.GUIDE_JSON_SCHEMA, json.dumps(ANIMALS)),
    )
    runs: list[Run] = []
    try:
        await one(gateway, tokenizer, guided, "warm-up")  # loads xgrammar and the tokenizer info
        for round_ in range(args.rounds):
            order = [("free", free), ("json_schema", guided)]
            for mode, params in order if round_ % 2 == 0 else reversed(order):
                runs.append(await one(gateway, tokenizer, params, mode))
    finally:
        await gateway.close()
        triton.stop()
    free_s, guided_s = summary(runs, "free"), summary(runs, "json_schema")
    decode_ratio = guided_s["decode_tokens_per_s"] / free_s["decode_tokens_per_s"]
    e2e_ratio = guided_s["end_to_end_tokens_per_s"] / free_s["end_to_end_tokens_per_s"]
    print(f"{'mode':<12} {'tokens':>6} {'decode tok/s':>13} {'end-to-end tok/s':>17}")
    for mode, s in (("free", free_s), ("json_schema", guided_s)):
        decode, e2e = s["decode_tokens_per_s"], s["end_to_end_tokens_per_s"]
        print(f"{mode:<12} {s['tokens']:>6.0f} {decode:>13.1f} {e2e:>17.1f}")
    masking_ms = masking_ms_per_token(tokenizer_dir, next(r.text for r in runs if r.mode == "json_schema"))
    step_ms = 1000 / free_s["decode_tokens_per_s"]
    share = 100 * masking_ms / step_ms
    print(f"masking: {masking_ms:.3f} ms per token, {share:.1f}% of a {step_ms:.1f} ms step")
    met = decode_ratio >= TARGET
    verdict = "met" if met else "NOT met"
    print(f"ratio (json_schema/free): decode {decode_ratio:.3f}, end-to-end {e2e_ratio:.3f}")
    print(f"target: decode ratio >= {TARGET}: {verdict}")
    return {
        "benchmark": "structured",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "free": free_s,
        "json_schema": guided_s,
        "decode_ratio": decode_ratio,
        "end_to_end_ratio": e2e_ratio,
        "masking_ms_per_token": masking_ms,
        "masking_share_of_step": masking_ms / step_ms,
        "target": {"decode_ratio": TARGET, "met": met},
        "runs": [{k: v for k, v in asdict(r).items() if k != "text"} for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds of 48 tokens")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.max_tokens = 3, 48
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    write_report(args.out, "structured", asyncio.run(benchmark(args)))


if __name__ == "__main__":
    main()
