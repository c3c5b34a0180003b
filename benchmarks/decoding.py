"""Decoding speed of the CPU chat model against prompt length, in process (no Triton, no API).

Issue 20 saw SmolLM2 decode at 2-5 tokens/s with sources in the prompt against ~22 without.
This loads the engine the Triton model runs (kubechat.engines.generation.CausalLmGenerator)
with examples/models/smollm2.yaml's checkpoint, and for each prompt length (filler text of real
prose, then a question) times the prefill (prompt to first token) and the decode rate (tokens
after the first / time after the first), greedy, a fixed number of tokens, no stop words,
once with the engine's ENGINE_THREADS and once with a thread per core (torch's default, what
the engine used before), alternating.

Prints a table and writes benchmarks/results/decoding-<time>.json.

    python -m benchmarks.decoding
    python -m benchmarks.decoding --lengths 50 1000 --tokens 48
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.streaming import ROOT, machine, write_report
from kubechat.catalog import CatalogEntry, ChatTurn, load_catalog
from kubechat.core.resources import Capability
from kubechat.engines.generation import ENGINE_THREADS, CausalLmGenerator, GenerationRequest
from kubechat.triton.artifacts import prepare_artifacts

FILLER = (ROOT / "benchmarks" / "data" / "retrieval" / "Apache-2.0.txt").read_text()


@dataclass
class Run:
    prompt_tokens: int
    generated: int
    prefill_s: float
    decode_tokens_per_s: float
    threads: int


def prompt_of(entry: CatalogEntry, tokens: int) -> str:
    """A chat prompt of about `tokens` tokens: licence text as sources, then a question."""
    words = FILLER.split()
    low, high = 0, len(words)
    while low < high:  # the most words whose prompt stays within `tokens`
        middle = (low + high + 1) // 2
        text = " ".join(words[:middle]) + "\n\nQuestion: what does this licence say about patents?"
        if entry.build_prompt([ChatTurn("user", text)]).tokens <= tokens:
            low = middle
        else:
            high = middle - 1
    text = " ".join(words[:low]) + "\n\nQuestion: what does this licence say about patents?"
    return entry.build_prompt([ChatTurn("user", text)]).text


def measure(generator: CausalLmGenerator, prompt: str, tokens: int, threads: int) -> Run:
    generator.threads = threads
    request = GenerationRequest(prompt=prompt, max_tokens=tokens, temperature=0.0, repetition_penalty=1.1)
    started = time.perf_counter()
    first: float | None = None
    count = 0
    for _ in generator.generate(request, lambda: False):
        count += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    ids = len(generator.tokenizer(prompt, add_special_tokens=False).input_ids)
    return Run(ids, count, first - started, (count - 1) / (end - first), threads)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 250, 500, 1000, 1800])
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per prompt")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="kubechat-decoding-") as state:
        catalog = load_catalog(ROOT / "examples" / "models", Path(state))
        entry = catalog.get("smollm2", Capability.CHAT)
        artifacts = prepare_artifacts(entry.model, Path(state))
        generator = CausalLmGenerator(
            artifacts.checkpoint_dir, artifacts.checkpoint_file, artifacts.tokenizer_dir,
            entry.model.spec.engine.max_input_tokens,
        )  # fmt: skip
        measure(generator, prompt_of(entry, 50), 8, ENGINE_THREADS)  # warm-up
        load_before = os.getloadavg()
        runs = []
        # Each length with every thread count in turn, so load that comes and goes hits all alike.
        threads = sorted({ENGINE_THREADS, os.cpu_count() or 1})
        print(
            f"{'prompt tokens':>13} {'threads':>7} {'generated':>9} {'prefill s':>9} "
            f"{'decode tok/s':>12} {'load':>5}"
        )
        for length in args.lengths:
            prompt = prompt_of(entry, length)
            for count in threads:
                run = measure(generator, prompt, args.tokens, count)
                runs.append(run)
                print(
                    f"{run.prompt_tokens:>13} {count:>7} {run.generated:>9} {run.prefill_s:>9.2f} "
                    f"{run.decode_tokens_per_s:>12.1f} {os.getloadavg()[0]:>5.1f}",
                    flush=True,
                )
    write_report(
        args.out, "decoding",
        {
            "benchmark": "decoding",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(load_average_before=load_before, load_average_after=os.getloadavg()),
            "model": entry.name,
            "runs": [asdict(r) for r in runs],
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()
