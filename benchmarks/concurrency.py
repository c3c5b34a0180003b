"""Concurrent users of the CPU chat model: one stream against four at once (issue 19).

The embedded SmolLM2 decoded one stream at a time: 4 concurrent users waited 8 s (p50) for a
first token. Now the active streams decode as one batch per step (DecodingBatch). This runs the
same four chat requests (greedy, `--tokens` each, repetition penalty 1.1)

- one after another, each alone: the single-stream rate, and the time to first token that
  four users had when requests queued (each waits for those before it);
- all four at once in one batch;

in process (the engine of the Triton model, no server) and, unless `--no-triton`, through
tritonserver's gRPC stream (the Triton model with its scheduler, as the API reaches it; a
server of its own with only examples/models/smollm2.yaml). Aggregate tokens/s is tokens over
the wall time from the first request to the last token; time to first token is counted from
the moment all four were sent. The targets: four streams give >= 2.5x the aggregate tokens/s
of one, and a time to first token p50 <= 1 s (the Triton path's figures when it runs).

Prints a table and writes benchmarks/results/concurrency-<time>.json.

    python -m benchmarks.concurrency
    python -m benchmarks.concurrency --tokens 32 --no-triton
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.streaming import ROOT, machine, write_report
from kubechat.catalog import CatalogEntry, ChatTurn, load_catalog
from kubechat.core.resources import Capability
from kubechat.engines.generation import CausalLmGenerator, DecodingSequence, GenerationRequest
from kubechat.triton.artifacts import prepare_artifacts

QUESTIONS = [
    "Explain what a Kubernetes operator does, in detail.",
    "Write a short story about a lighthouse keeper.",
    "Describe how a web browser loads a page, step by step.",
    "What are the benefits of regular exercise? Give many.",
]
STREAMS = len(QUESTIONS)


@dataclass
class Stream:
    tokens: int
    first_token_s: float  # from the start of the scenario
    end_s: float


@dataclass
class Scenario:
    path: str  # "in process" or "triton grpc"
    mode: str  # "1 stream" (each alone, in turn) or "4 streams" (at once)
    streams: list[Stream]

    @property
    def wall_s(self) -> float:
        return max(s.end_s for s in self.streams)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.streams)

    @property
    def aggregate_tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def per_stream_tokens_per_s(self) -> float:
        return statistics.mean(s.tokens / (s.end_s - s.first_token_s + 1e-9) for s in self.streams)

    @property
    def ttft_p50_s(self) -> float:
        """p50 time to first token from the start of the scenario. For "1 stream" the requests
        ran in turn, so this is what four users sent at once to a one-at-a-time model saw."""
        return statistics.median(s.first_token_s for s in self.streams)

    @property
    def own_ttft_p50_s(self) -> float:
        """p50 time to first token from each request's own start (each started when the one
        before it ended, or all at once)."""
        starts = (
            [0.0] + [s.end_s for s in self.streams[:-1]]
            if self.mode == "1 stream"
            else [0.0] * len(self.streams)
        )
        return statistics.median(
            s.first_token_s - start for s, start in zip(self.streams, starts, strict=True)
        )

    def summary(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "mode": self.mode,
            "tokens": self.tokens,
            "wall_s": round(self.wall_s, 3),
            "aggregate_tokens_per_s": round(self.aggregate_tokens_per_s, 2),
            "per_stream_tokens_per_s": round(self.per_stream_tokens_per_s, 2),
            "ttft_p50_s": round(self.ttft_p50_s, 3),
            "own_ttft_p50_s": round(self.own_ttft_p50_s, 3),
            "streams": [asdict(s) for s in self.streams],
        }


def requests_of(entry: CatalogEntry, tokens: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            prompt=entry.build_prompt([ChatTurn("user", q)]).text, max_tokens=tokens, repetition_penalty=1.1
        )
        for q in QUESTIONS
    ]


def in_process(generator: CausalLmGenerator, requests: list[GenerationRequest], together: bool) -> Scenario:
    """Each request alone in turn, or all in one batch, stepped as the Triton model steps it."""
    streams: list[Stream] = []
    started = time.perf_counter()
    batches = [requests] if together else [[r] for r in requests]
    for group in batches:
        batch = generator.open_batch()
        sequences = [batch.add(r, lambda: False) for r in group]
        first: dict[int, float] = {}
        end: dict[int, float] = {}
        while len(batch):
            batch.step()
            now = time.perf_counter() - started
            for i, sequence in enumerate(sequences):
                if sequence.tokens and i not in first:
                    first[i] = now
                if sequence.finished and i not in end:
                    end[i] = now
        streams += [Stream(_generated(s), first[i], end[i]) for i, s in enumerate(sequences)]
    return Scenario("in process", f"{STREAMS} streams" if together else "1 stream", streams)


def _generated(sequence: DecodingSequence) -> int:
    return len(sequence.tokens)


async def through_triton(url: str, requests: list[GenerationRequest], together: bool) -> Scenario:
    from kubechat.triton.client import SamplingParams, TritonGateway

    gateway = TritonGateway(url, timeout_s=600)
    started = time.perf_counter()

    async def one(request: GenerationRequest) -> Stream:
        params = SamplingParams(max_tokens=request.max_tokens, repetition_penalty=request.repetition_penalty)
        first: float | None = None
        deltas = 0
        async for _ in gateway.stream_text("smollm2", request.prompt, params):
            deltas += 1  # a delta per token, except where text is held back (rare in prose)
            if first is None:
                first = time.perf_counter() - started
        assert first is not None
        return Stream(deltas, first, time.perf_counter() - started)

    try:
        if together:
            streams = list(await asyncio.gather(*(one(r) for r in requests)))
        else:
            streams = [await one(r) for r in requests]
    finally:
        await gateway.close()
    return Scenario("triton grpc", f"{STREAMS} streams" if together else "1 stream", streams)


def rate(scenarios: list[Scenario]) -> float:
    """Aggregate tokens/s over several runs of a scenario: all their tokens over all their time."""
    return sum(s.tokens for s in scenarios) / sum(s.wall_s for s in scenarios)


def targets_of(alone: list[Scenario], together: list[Scenario]) -> list[dict[str, Any]]:
    ratio = rate(together) / rate(alone)
    ttft = statistics.median(s.first_token_s for run in together for s in run.streams)
    queued = statistics.median(s.first_token_s for run in alone for s in run.streams)
    own = statistics.median(run.own_ttft_p50_s for run in alone)
    where = f"{together[0].path}, {len(together)} round(s) in one run"
    return [
        {
            "name": f"embedded SmolLM2, {STREAMS} streams: aggregate tokens/s vs 1 stream",
            "value": round(ratio, 2),
            "unit": "x",
            "target": ">= 2.5x",
            "met": ratio >= 2.5,
            "note": f"{rate(together):.1f} against {rate(alone):.1f} tok/s ({where})",
        },
        {
            "name": f"embedded SmolLM2, {STREAMS} streams: time to first token p50",
            "value": round(ttft, 3),
            "unit": "s",
            "target": "<= 1 s",
            "met": ttft <= 1.0,
            "note": f"queued one at a time: {queued:.2f} s; one user alone: {own:.2f} s ({where})",
        },
    ]


def print_table(scenarios: list[Scenario], targets: list[dict[str, Any]]) -> None:
    print(
        f"\n{'path':<12} {'mode':<10} {'tokens':>6} {'wall s':>7} {'agg tok/s':>9} "
        f"{'per-stream':>10} {'TTFT p50 s':>10} {'own TTFT':>9} {'ratio':>6}"
    )
    baseline = {
        path: rate([s for s in scenarios if s.path == path and s.mode == "1 stream"])
        for path in {s.path for s in scenarios}
    }
    for s in scenarios:
        ratio = s.aggregate_tokens_per_s / baseline[s.path]
        print(
            f"{s.path:<12} {s.mode:<10} {s.tokens:>6} {s.wall_s:>7.2f} {s.aggregate_tokens_per_s:>9.1f} "
            f"{s.per_stream_tokens_per_s:>10.1f} {s.ttft_p50_s:>10.2f} {s.own_ttft_p50_s:>9.2f} "
            f"{ratio:>5.2f}x"
        )
    print(f"\n{'target':<64} {'value':>8} {'goal':>8}  met")
    for t in targets:
        print(
            f"{t['name']:<64} {t['value']:>7}{t['unit']:<1} {t['target']:>8}  {'yes' if t['met'] else 'NO'}"
        )


def with_triton(state: Path, run: Callable[[str], Coroutine[Any, Any, list[Scenario]]]) -> list[Scenario]:
    from kubechat.embedded.launcher import TritonPorts, start_triton
    from tests.conftest import free_port

    models = state / "models"
    models.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "models" / "smollm2.yaml", models)
    server = start_triton(models, state, TritonPorts(free_port(), free_port(), free_port()), timeout=300)
    try:
        return asyncio.run(run(server.grpc_url))
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per request")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each scenario, alternating")
    parser.add_argument("--no-triton", action="store_true", help="in process only")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = os.getloadavg()
    scenarios: list[Scenario] = []
    with tempfile.TemporaryDirectory(prefix="kubechat-concurrency-") as folder:
        state = Path(folder)
        catalog = load_catalog(ROOT / "examples" / "models", state)
        entry = catalog.get("smollm2", Capability.CHAT)
        artifacts = prepare_artifacts(entry.model, state)
        generator = CausalLmGenerator(
            artifacts.checkpoint_dir, artifacts.checkpoint_file, artifacts.tokenizer_dir,
            entry.model.spec.engine.max_input_tokens,
        )  # fmt: skip
        requests = requests_of(entry, args.tokens)
        in_process(generator, requests_of(entry, 4), together=True)  # warm-up
        for round_ in range(args.rounds):  # alone first, then together first: drifting load hits both
            for batched in (False, True) if round_ % 2 == 0 else (True, False):
                scenarios.append(in_process(generator, requests, batched))
        if not args.no_triton:
            del generator  # the server loads its own copy; two would share the same cores

            async def run(url: str) -> list[Scenario]:
                await through_triton(url, requests_of(entry, 4), True)  # warm-up
                runs = []
                for round_ in range(args.rounds):
                    for batched in (False, True) if round_ % 2 == 0 else (True, False):
                        runs.append(await through_triton(url, requests, batched))
                return runs

            scenarios += with_triton(state / "triton", run)
    path = scenarios[-1].path  # the Triton path's figures when it ran
    alone = [s for s in scenarios if s.path == path and s.mode == "1 stream"]
    together = [s for s in scenarios if s.path == path and s.mode != "1 stream"]
    targets = targets_of(alone, together)
    print_table(scenarios, targets)
    write_report(
        args.out, "concurrency",
        {
            "benchmark": "concurrency",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(load_average_before=load_before, load_average_after=os.getloadavg()),
            "model": entry.name,
            "tokens_per_request": args.tokens,
            "rounds": args.rounds,
            "scenarios": [s.summary() for s in scenarios],
            "targets": targets,
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()
