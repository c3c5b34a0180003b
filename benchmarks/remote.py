"""kubechat in front of a remote OpenAI-compatible server, against that server directly.

llama.cpp's server (llama-cpp-python, `make llama-server`) serves the SmolLM2 GGUF; a remote
ChatModel (backend openai) points kubechat at it. The same prompt is streamed with the official
`openai` client, at 1 and 16 concurrent streams, directly from the server's /v1 and through
kubechat's /v1 (rounds interleaved so drift hits both alike). Reported: aggregate tokens/s
(chunks with text), time to first token p50/p99, the kubechat/direct throughput ratio and the
added TTFT p50. Also in the same run: the server's own tokens/s against the embedded Triton
SmolLM2 (the `transformers` CPU backend) on the same prompt, the direct gRPC stream.
Prints a table and writes benchmarks/results/remote-<time>.json.

    make bench
    python -m benchmarks.remote --quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import openai
from tritonclient.grpc.aio import InferenceServerClient

from benchmarks.streaming import direct_stream, machine, percentile, write_report
from kubechat.catalog import ChatTurn, load_catalog
from kubechat.embedded.launcher import TritonPorts, start_triton
from tests.conftest import ApiProcess, free_port, remote_model_document
from tests.llama_server import UPSTREAM_MODEL, LlamaServer, llama_server_python

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Explain in a few sentences why the sky is blue."
# The remote ChatModel's defaults (remote_model_document), sent alike on the direct path.
SAMPLING: dict[str, Any] = {"temperature": 0, "top_p": 0.9, "extra_body": {"repetition_penalty": 1.1}}


@dataclass(frozen=True)
class Scenario:
    concurrency: int
    max_tokens: int
    rounds: int


@dataclass
class Sample:
    ttft_s: float
    tokens: int


@dataclass
class Result:
    path: str
    concurrency: int
    streams: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float


async def openai_stream(client: openai.AsyncOpenAI, model: str, max_tokens: int) -> Sample:
    started = time.perf_counter()
    first, tokens = 0.0, 0
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=max_tokens, stream=True,
        **SAMPLING,
    )  # fmt: skip
    async for chunk in stream:
        if any(c.delta and c.delta.content for c in chunk.choices):
            tokens += 1
            first = first or time.perf_counter()
    return Sample(first - started, tokens)


def summarize(path: str, concurrency: int, samples: list[Sample], wall: float) -> Result:
    tokens = sum(s.tokens for s in samples)
    if any(s.tokens == 0 for s in samples):
        raise RuntimeError(f"{path}: {sum(s.tokens == 0 for s in samples)} streams sent no text")
    ttfts = [s.ttft_s * 1000 for s in samples]
    return Result(
        path=path, concurrency=concurrency, streams=len(samples), tokens=tokens, wall_s=wall,
        tokens_per_s=tokens / wall, ttft_p50_ms=statistics.median(ttfts), ttft_p99_ms=percentile(ttfts, 0.99),
    )  # fmt: skip


async def timed(streams: list[Any]) -> tuple[list[Sample], float]:
    started = time.perf_counter()
    samples = list(await asyncio.gather(*streams))
    return samples, time.perf_counter() - started


async def run_scenario(
    scenario: Scenario,
    direct: openai.AsyncOpenAI,
    through: openai.AsyncOpenAI,
    triton: InferenceServerClient,
    triton_prompt: str,
) -> dict[str, Any]:
    n, tokens = scenario.concurrency, scenario.max_tokens
    await openai_stream(direct, UPSTREAM_MODEL, 4)  # warm every path
    await openai_stream(through, "llama", 4)
    await direct_stream(triton, "smollm2", triton_prompt, 4)
    collected: dict[str, tuple[list[Sample], float]] = {
        "direct": ([], 0.0),
        "kubechat": ([], 0.0),
        "triton": ([], 0.0),
    }

    def add(path: str, samples: list[Sample], wall: float) -> None:
        previous, total = collected[path]
        collected[path] = (previous + samples, total + wall)

    for _ in range(scenario.rounds):
        add("direct", *await timed([openai_stream(direct, UPSTREAM_MODEL, tokens) for _ in range(n)]))
        add("kubechat", *await timed([openai_stream(through, "llama", tokens) for _ in range(n)]))
        triton_samples, wall = await timed(
            [direct_stream(triton, "smollm2", triton_prompt, tokens) for _ in range(n)]
        )
        add("triton", [Sample(s.ttft_s, s.tokens) for s in triton_samples], wall)
    results = {path: summarize(path, n, *collected[path]) for path in collected}
    d, k, t = results["direct"], results["kubechat"], results["triton"]
    return {
        "scenario": asdict(scenario),
        "llama_direct": asdict(d),
        "llama_via_kubechat": asdict(k),
        "triton_smollm2_direct": asdict(t),
        "throughput_ratio": k.tokens_per_s / d.tokens_per_s,
        "added_ttft_p50_ms": k.ttft_p50_ms - d.ttft_p50_ms,
        "llama_vs_triton_tokens_per_s": d.tokens_per_s / t.tokens_per_s,
    }


def scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [Scenario(1, 32, 2), Scenario(16, 16, 1)]
    return [Scenario(1, 64, 5), Scenario(16, 32, 2)]


async def benchmark(args: argparse.Namespace) -> dict[str, object]:
    python = llama_server_python()
    if python is None:
        raise SystemExit("llama.cpp's server is not installed: run `make llama-server`")
    state = ROOT / ".kubechat" / "bench-remote"
    models = state / "models"
    models.mkdir(parents=True, exist_ok=True)
    server = LlamaServer(python, free_port(), state / "llama-server.log", api_key=None)
    server.start()
    for example in (ROOT / "examples" / "models").glob("*.yaml"):
        (models / example.name).write_text(example.read_text())
    (models / "llama.yaml").write_text(remote_model_document("llama", server.url))
    triton = start_triton(
        ROOT / "examples" / "models", state, TritonPorts(free_port(), free_port(), free_port()), 300
    )
    api = ApiProcess(
        {
            "KUBECHAT_TRITON_URL": triton.grpc_url,
            "KUBECHAT_MODELS_DIR": str(models),
            "KUBECHAT_STATE_DIR": str(state),
            "KUBECHAT_DATABASE_URL": str(state / f"bench-{uuid.uuid4().hex}.sqlite3"),
        },
        state / "api.log",
    )
    api.start()
    rows: list[dict[str, Any]] = []
    try:
        direct = openai.AsyncOpenAI(base_url=server.url, api_key="EMPTY", max_retries=0, timeout=600)
        through = openai.AsyncOpenAI(base_url=f"{api.url}/v1", api_key="EMPTY", max_retries=0, timeout=600)
        grpc = InferenceServerClient(triton.grpc_url)
        prompt = load_catalog(models, state).get("smollm2").build_prompt([ChatTurn("user", PROMPT)]).text
        for scenario in scenarios(args.quick):
            rows.append(await run_scenario(scenario, direct, through, grpc, prompt))
            print_row(rows[-1])
        await grpc.close()
    finally:
        api.stop()
        triton.stop()
        server.stop()
    return {
        "benchmark": "remote",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "server": "llama-cpp-python 0.3.36 llama_cpp.server, SmolLM2-135M-Instruct Q4_1 GGUF, 2 threads",
        "results": rows,
    }


HEADER = (
    f"{'conc':>4} {'tokens':>6} {'llama tok/s':>11} {'kubechat tok/s':>14} {'ratio':>6} "
    f"{'llama ttft p50':>14} {'kubechat ttft p50':>17} {'added p50':>9} "
    f"{'triton tok/s':>12} {'llama/triton':>12}"
)


def print_row(row: dict[str, Any]) -> None:
    d, k, t = row["llama_direct"], row["llama_via_kubechat"], row["triton_smollm2_direct"]
    print(
        f"{d['concurrency']:>4} {k['tokens']:>6} {d['tokens_per_s']:>11.1f} {k['tokens_per_s']:>14.1f} "
        f"{row['throughput_ratio']:>6.3f} {d['ttft_p50_ms']:>11.1f} ms {k['ttft_p50_ms']:>14.1f} ms "
        f"{row['added_ttft_p50_ms']:>6.1f} ms {t['tokens_per_s']:>12.1f} "
        f"{row['llama_vs_triton_tokens_per_s']:>12.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter scenarios")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(HEADER, flush=True)
    write_report(args.out, "remote", asyncio.run(benchmark(args)))


if __name__ == "__main__":
    main()
