"""Streaming overhead of the API against the direct Triton gRPC stream, in one run.

For each model and concurrency, the same prompt is streamed N times directly from Triton
(tritonclient.grpc.aio, the raw ModelStreamInfer call: the floor), through Triton's own HTTP
`generate_stream` SSE (the peer: what a user could call without kubechat), through the API's
WebSocket and through its /v1/chat/completions SSE stream. Reported: aggregate tokens/s, time
to first token (p50/p99), the ratios to direct, and the API's CPU time per token (psutil: the
API process's user + system time over the tokens it streamed).

A token frame may carry several tokens (kubechat.chat.coalesce): the WebSocket client counts
tokens by `seq`; the SSE client by the usage the stream ends with.

Then the cost of metrics (docs/observability.md): the same WebSocket streams through two API
processes, one as deployed (metrics recorded and served on their port) and one with
KUBECHAT_METRICS_ENABLED=false, rounds interleaved in alternating order; reported as the
metrics-on/metrics-off throughput ratio (target: at least 0.98).

Prints the tables and writes benchmarks/results/streaming-<time>.json.

    make bench                        # everything
    python -m benchmarks.streaming --quick

The gateway's targets (issue 19) are printed last and stored under "targets" in the report:
time to first token p50 through the API <= 1.3x direct at 64 streams and <= 1.5x at 256,
throughput >= 0.9x direct at 1 stream, API CPU per token <= 30 us at 64 streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import psutil
from tritonclient.grpc import InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from websockets.asyncio.client import connect

from kubechat.catalog import ChatTurn, load_catalog
from kubechat.chat.generation import Generation
from kubechat.chat.plan import Grounding, Plan
from kubechat.embedded.launcher import TritonPorts, start_triton
from kubechat.triton import contract
from kubechat.triton.client import SamplingParams, TritonInference, chat_inputs
from tests.conftest import ApiProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Explain in a few sentences why the sky is blue."


@dataclass(frozen=True)
class Scenario:
    model: str
    concurrency: int
    max_tokens: int
    rounds: int


@dataclass
class Sample:
    ttft_s: float
    tokens: int
    total_s: float


@dataclass
class Result:
    path: str
    model: str
    concurrency: int
    streams: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def direct_stream(client: InferenceServerClient, model: str, prompt: str, max_tokens: int) -> Sample:
    done = asyncio.Event()
    request: dict[str, object] = {
        "model_name": model,
        "inputs": chat_inputs(prompt, SamplingParams(max_tokens=max_tokens)),
        "outputs": [InferRequestedOutput(contract.TEXT_OUTPUT)],
        "request_id": uuid.uuid4().hex,
    }

    async def requests() -> AsyncIterator[dict[str, object]]:
        yield request
        await done.wait()

    started = time.perf_counter()
    first, tokens = 0.0, 0
    responses = client.stream_infer(requests())
    async for result, error in responses:
        assert error is None, error
        text = result.as_numpy(contract.TEXT_OUTPUT).reshape(-1)[0]
        if text:
            tokens += 1
            first = first or time.perf_counter()
        if result.get_response().parameters[contract.FINAL_RESPONSE_PARAM].bool_param:
            break
    done.set()
    return Sample(first - started, tokens, time.perf_counter() - started)


async def api_stream(api: ApiProcess, session: str, model: str, max_tokens: int) -> Sample:
    async with connect(f"{api.ws_url}/ws/chat/{session}", max_size=None) as ws:
        await ws.recv()  # history
        options = {"max_tokens": max_tokens, "temperature": 0}
        started = time.perf_counter()
        await ws.send(json.dumps({"type": "message", "content": PROMPT, "model": model, "options": options}))
        first, tokens = 0.0, 0
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "token":
                tokens = event["seq"]  # a frame may carry several tokens; seq counts them
                first = first or time.perf_counter()
            elif event["type"] == "done":
                return Sample(first - started, tokens, time.perf_counter() - started)
            elif event["type"] == "error":
                raise RuntimeError(event)


async def api_sse_stream(http: httpx.AsyncClient, model: str, max_tokens: int) -> Sample:
    """One /v1/chat/completions stream; tokens: the usage its last chunk reports."""
    body = {
        "model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
        "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    started = time.perf_counter()
    first, tokens = 0.0, 0
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter()
    return Sample(first - started, tokens, time.perf_counter() - started)


async def triton_sse_stream(http: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> Sample:
    """Triton's own HTTP generate_stream (its generate extension, server-sent events): the peer."""
    body = {"text_input": prompt, "max_tokens": max_tokens, "stream": True, "temperature": 0.0,
            "exclude_input_in_output": True}  # fmt: skip
    started = time.perf_counter()
    first, tokens = 0.0, 0
    async with http.stream("POST", f"/v2/models/{model}/generate_stream", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"])
            if event.get("text_output"):
                tokens += 1
                first = first or time.perf_counter()
    return Sample(first - started, tokens, time.perf_counter() - started)


def summarize(path: str, scenario: Scenario, samples: list[Sample], wall: float) -> Result:
    tokens = sum(s.tokens for s in samples)
    ttfts = [s.ttft_s * 1000 for s in samples]
    return Result(
        path=path, model=scenario.model, concurrency=scenario.concurrency, streams=len(samples),
        tokens=tokens, wall_s=wall, tokens_per_s=tokens / wall,
        ttft_p50_ms=statistics.median(ttfts), ttft_p99_ms=percentile(ttfts, 0.99),
    )  # fmt: skip


async def fresh_sessions(api: ApiProcess, count: int) -> list[str]:
    # A new session per stream and round: the API then sends the same single-turn
    # prompt as the direct path, not one that grows with the session's history.
    async with httpx.AsyncClient(base_url=api.url) as http:
        return [(await http.post("/sessions", json={"title": "bench"})).json()["id"] for _ in range(count)]


async def api_round(api: ApiProcess, scenario: Scenario) -> tuple[list[Sample], float]:
    """One round of `concurrency` WebSocket streams at once; its samples and wall time."""
    sessions = await fresh_sessions(api, scenario.concurrency)
    started = time.perf_counter()
    samples = await asyncio.gather(
        *(api_stream(api, s, scenario.model, scenario.max_tokens) for s in sessions)
    )
    return list(samples), time.perf_counter() - started


@dataclass
class Paths:
    """The clients of one run: the gRPC floor, Triton's own SSE, and the API."""

    grpc: InferenceServerClient
    triton_http: httpx.AsyncClient
    api: ApiProcess
    api_http: httpx.AsyncClient


async def run_scenario(scenario: Scenario, paths: Paths, prompt: str) -> dict[str, object]:
    """Every path at `concurrency` streams, rounds interleaved; the API's CPU time per token."""
    model, tokens, conc = scenario.model, scenario.max_tokens, scenario.concurrency
    api = paths.api

    def direct() -> list[Awaitable[Sample]]:
        return [direct_stream(paths.grpc, model, prompt, tokens) for _ in range(conc)]

    def triton_sse() -> list[Awaitable[Sample]]:
        return [triton_sse_stream(paths.triton_http, model, prompt, tokens) for _ in range(conc)]

    def api_sse() -> list[Awaitable[Sample]]:
        return [api_sse_stream(paths.api_http, model, tokens) for _ in range(conc)]

    # Warm every path (first-request costs are not what we measure).
    await direct_stream(paths.grpc, model, prompt, 4)
    await triton_sse_stream(paths.triton_http, model, prompt, 4)
    await api_stream(api, (await fresh_sessions(api, 1))[0], model, 4)
    await api_sse_stream(paths.api_http, model, 4)
    collected: dict[str, tuple[list[Sample], float]] = {
        name: ([], 0.0) for name in ("direct", "triton-sse", "api-ws", "api-sse")
    }
    cpu = {"api-ws": 0.0, "api-sse": 0.0}
    # Interleave rounds so drift (thermal, caches, the machine's other load) hits every path alike.
    for _ in range(scenario.rounds):
        for name in collected:
            if name == "api-ws":
                sessions = await fresh_sessions(api, conc)
                streams: list[Awaitable[Sample]] = [api_stream(api, s, model, tokens) for s in sessions]
            else:
                streams = {"direct": direct, "triton-sse": triton_sse, "api-sse": api_sse}[name]()
            before = cpu_seconds(api) if name in cpu else 0.0
            started = time.perf_counter()
            samples = list(await asyncio.gather(*streams))
            wall = time.perf_counter() - started
            if name in cpu:
                cpu[name] += cpu_seconds(api) - before
            kept, total = collected[name]
            collected[name] = (kept + samples, total + wall)
    results = {name: summarize(name, scenario, *collected[name]) for name in collected}
    floor = results["direct"]
    return {
        "scenario": asdict(scenario),
        **{name.replace("-", "_"): asdict(result) for name, result in results.items()},
        "api": asdict(results["api-ws"]),  # the WebSocket, as earlier reports named it
        "throughput_ratio": results["api-ws"].tokens_per_s / floor.tokens_per_s,
        "added_ttft_p50_ms": results["api-ws"].ttft_p50_ms - floor.ttft_p50_ms,
        "ratios": {
            name: {
                "throughput": r.tokens_per_s / floor.tokens_per_s,
                "ttft_p50": r.ttft_p50_ms / floor.ttft_p50_ms,
            }
            for name, r in results.items()
            if name != "direct"
        },
        "api_cpu_us_per_token": {name: cpu[name] / max(1, results[name].tokens) * 1e6 for name in cpu},
    }


def cpu_seconds(api: ApiProcess) -> float:
    """CPU time (user + system) the API process has used so far."""
    assert api.process is not None
    times = psutil.Process(api.process.pid).cpu_times()
    return float(times.user + times.system)


async def metrics_overhead(
    scenario: Scenario, on: ApiProcess, off: ApiProcess
) -> tuple[Result, Result, dict[str, float]]:
    """The same streams through an API recording metrics and one that does not, rounds interleaved
    and their order alternated, so drift and the machine's other load hit both alike. Besides
    throughput (wall clock, at the mercy of whatever else runs on the machine), the CPU time
    each API process spent per token."""
    for api in (on, off):
        await api_round(api, scenario)  # warm: a fresh process is slower on its first rounds
    collected: dict[str, tuple[list[Sample], float]] = {"on": ([], 0.0), "off": ([], 0.0)}
    cpu = {"on": 0.0, "off": 0.0}
    for round_ in range(scenario.rounds):
        order = (("on", on), ("off", off)) if round_ % 2 == 0 else (("off", off), ("on", on))
        for name, api in order:
            before = cpu_seconds(api)
            samples, wall = await api_round(api, scenario)
            cpu[name] += cpu_seconds(api) - before
            kept, total = collected[name]
            collected[name] = (kept + samples, total + wall)
    tokens = {name: sum(s.tokens for s in samples) for name, (samples, _) in collected.items()}
    cpu_us = {f"{name}_api_cpu_us_per_token": cpu[name] / tokens[name] * 1e6 for name in cpu}
    return (
        summarize("api-metrics-on", scenario, *collected["on"]),
        summarize("api-metrics-off", scenario, *collected["off"]),
        cpu_us,
    )


class _InstantTriton:
    """Deltas as fast as a generator yields them: what is left to time is the generation loop."""

    async def stream_text(
        self,
        model: str,
        prompt: str,
        params: SamplingParams,
        request_id: str = "",
        image: bytes | None = None,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> AsyncIterator[str]:
        for _ in range(params.max_tokens):
            yield "tok "


async def generation_loop_cost(tokens: int, repeats: int = 5) -> dict[str, float]:
    """CPU cost per token of the generation loop (kubechat.chat.generation), observed and not, in
    this process: the one place metrics add work per token. The best of `repeats` runs each."""
    state = ROOT / ".kubechat" / "bench"
    entry = load_catalog(ROOT / "examples" / "models", state).get("synthetic")
    turns = [ChatTurn("user", PROMPT)]

    async def run(observe: bool) -> float:
        plan = Plan(
            principal="bench", entry=entry, params=SamplingParams(max_tokens=tokens), tools=[],
            runs_tools=False, turns=turns, attachments={}, describer=None, knowledge_bases=[],
            question=PROMPT, received=time.perf_counter(),
        )  # fmt: skip
        grounding = Grounding(plan, turns, plan.prompt, [], False, None, None)
        generation = Generation(
            grounding, "bench", cast(TritonInference, _InstantTriton()), None, 1.0, observe=observe
        )
        started = time.process_time()
        async with aclosing(generation.events()) as events:
            async for _ in events:
                pass
        return time.process_time() - started

    await run(True)
    await run(False)
    off = min([await run(False) for _ in range(repeats)])
    on = min([await run(True) for _ in range(repeats)])
    return {"off_us_per_token": off / tokens * 1e6, "on_us_per_token": on / tokens * 1e6}


def overhead_scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [Scenario("synthetic", 1, 512, 4), Scenario("synthetic", 32, 128, 2)]
    return [Scenario("synthetic", 1, 2048, 8), Scenario("synthetic", 64, 256, 6)]


def scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [
            Scenario("synthetic", 1, 256, 2),
            Scenario("synthetic", 64, 64, 1),
            Scenario("synthetic", 256, 32, 1),
        ]
    return [
        Scenario("synthetic", 1, 1024, 5),
        Scenario("synthetic", 64, 256, 3),
        Scenario("synthetic", 256, 256, 2),
        Scenario("smollm2", 1, 64, 2),
    ]


async def benchmark(args: argparse.Namespace) -> dict[str, object]:
    state = ROOT / ".kubechat" / "bench"
    models = ROOT / "examples" / "models"
    ports = TritonPorts(free_port(), free_port(), free_port())
    triton = start_triton(models, state, ports, timeout=300)
    env = {
        "KUBECHAT_TRITON_URL": triton.grpc_url,
        "KUBECHAT_MODELS_DIR": str(models),
        "KUBECHAT_STATE_DIR": str(state),
    }

    def api_process(name: str, **extra: str) -> ApiProcess:
        # A history database of its own: processes compared must not inherit each other's rows.
        database = {"KUBECHAT_DATABASE_URL": str(state / f"bench-{name}-{uuid.uuid4().hex}.sqlite3")}
        chosen = dict(kv.split("=", 1) for kv in args.api_env)  # e.g. uvicorn's options, to compare
        return ApiProcess({**env, **database, **extra, **chosen}, state / f"{name}.log")

    catalog = load_catalog(models, state)
    rows: list[dict[str, object]] = []
    overhead: list[dict[str, object]] = []
    loop: dict[str, float] = {}
    started: list[ApiProcess] = []
    try:
        if args.part in ("all", "paths"):
            # As deployed: metrics recorded and served on their own port.
            api = api_process("api", KUBECHAT_METRICS_PORT=str(free_port()))
            started.append(api)
            api.start()
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=512)
            paths = Paths(
                InferenceServerClient(triton.grpc_url),
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.http}", limits=limits, timeout=300),
                api,
                httpx.AsyncClient(base_url=api.url, limits=limits, timeout=300),
            )
            for scenario in scenarios(args.quick):
                prompt = catalog.get(scenario.model).build_prompt([ChatTurn("user", PROMPT)]).text
                rows.append(await run_scenario(scenario, paths, prompt))
                print_row(rows[-1])
            await paths.grpc.close()
            await paths.triton_http.aclose()
            await paths.api_http.aclose()
            api.stop()
        if args.part in ("all", "metrics"):
            # Two fresh processes, alike but for the metrics.
            with_metrics = api_process("api-metrics-on", KUBECHAT_METRICS_PORT=str(free_port()))
            without_metrics = api_process("api-metrics-off", KUBECHAT_METRICS_ENABLED="false")
            for process in (with_metrics, without_metrics):
                started.append(process)
                process.start()
            loop = await generation_loop_cost(20_000 if args.quick else 200_000)
            print(
                f"\ngeneration loop, CPU per token: {loop['off_us_per_token']:.3f} us unobserved, "
                f"{loop['on_us_per_token']:.3f} us observed",
                flush=True,
            )
            print(f"\n{OVERHEAD_HEADER}", flush=True)
            for scenario in overhead_scenarios(args.quick):
                on, off, cpu = await metrics_overhead(scenario, with_metrics, without_metrics)
                overhead.append(
                    {
                        "scenario": asdict(scenario),
                        "metrics_on": asdict(on),
                        "metrics_off": asdict(off),
                        "throughput_ratio": on.tokens_per_s / off.tokens_per_s,
                        **cpu,
                        # Tokens per CPU second of the API, on against off: the cost on an idle machine.
                        "cpu_efficiency_ratio": cpu["off_api_cpu_us_per_token"]
                        / cpu["on_api_cpu_us_per_token"],
                        "added_ttft_p50_ms": on.ttft_p50_ms - off.ttft_p50_ms,
                    }
                )
                print_overhead(overhead[-1])
    finally:
        for process in started:
            process.stop()
        triton.stop()
    return {
        "benchmark": "streaming",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "load_before": os.getloadavg()[0],
        "api_env": args.api_env,
        "results": rows,
        "targets": gateway_targets(rows),
        "metrics_overhead": overhead,
        "generation_loop_cost": loop if args.part != "paths" else None,
    }


HEADER = (
    f"{'model':<10} {'conc':>4} {'path':<10} {'tokens':>7} {'tok/s':>7} {'x direct':>8} "
    f"{'ttft p50':>11} {'x direct':>8} {'ttft p99':>11} {'api cpu/tok':>11}"
)


def print_row(row: dict[str, object]) -> None:
    ratios, cpu = row["ratios"], row["api_cpu_us_per_token"]
    assert isinstance(ratios, dict) and isinstance(cpu, dict)
    for key in ("direct", "triton_sse", "api_ws", "api_sse"):
        r = row[key]
        assert isinstance(r, dict)
        ratio = ratios.get(r["path"], {"throughput": 1.0, "ttft_p50": 1.0})
        used = f"{cpu[r['path']]:>8.1f} us" if r["path"] in cpu else ""
        print(
            f"{r['model']:<10} {r['concurrency']:>4} {r['path']:<10} {r['tokens']:>7} "
            f"{r['tokens_per_s']:>7.0f} {ratio['throughput']:>8.2f} {r['ttft_p50_ms']:>8.1f} ms "
            f"{ratio['ttft_p50']:>8.2f} {r['ttft_p99_ms']:>8.1f} ms {used:>11}",
            flush=True,
        )


def target_row(
    name: str, value: float, unit: str, target: str, met: bool, note: str = ""
) -> dict[str, object]:
    """One row of issue 19's targets table (benchmarks.targets prints them all together)."""
    return {
        "name": name,
        "value": float(value),
        "unit": unit,
        "target": target,
        "met": bool(met),
        "note": note,
    }


def print_targets(rows: list[dict[str, object]]) -> None:
    print("\ntargets")
    for row in rows:
        mark = "met" if row["met"] else "MISSED"
        value = row["value"]
        assert isinstance(value, float)
        print(
            f"  {row['name']:<52} {value:>9.2f} {row['unit']:<6} {row['target']:<9} {mark:<6} {row['note']}"
        )


def gateway_targets(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """The issue's gateway targets from the synthetic model's rows: ratios within this run."""
    by_conc: dict[int, dict[str, Any]] = {}  # the rows as JSON would read them
    for row in rows:
        scenario = row["scenario"]
        assert isinstance(scenario, dict)
        if scenario["model"] == "synthetic":
            by_conc[int(scenario["concurrency"])] = dict(row)
    targets: list[dict[str, object]] = []
    for conc, limit in ((64, 1.3), (256, 1.5)):
        if conc in by_conc:
            found = by_conc[conc]
            for path in ("api-ws", "api-sse"):
                ratio = found["ratios"][path]["ttft_p50"]
                key = path.replace("-", "_")
                via, floor = found[key]["ttft_p50_ms"], found["direct"]["ttft_p50_ms"]
                note = f"{via:.0f} ms against {floor:.0f} ms direct"
                targets.append(target_row(f"TTFT p50 {path} / direct, {conc} streams", ratio, "x",
                                          f"<= {limit}x", ratio <= limit, note))  # fmt: skip
    if 1 in by_conc:
        for path in ("api-ws", "api-sse"):
            ratio = by_conc[1]["ratios"][path]["throughput"]
            targets.append(target_row(f"throughput {path} / direct, 1 stream", ratio, "x", ">= 0.9x",
                                      ratio >= 0.9))  # fmt: skip
    if 64 in by_conc:
        for path in ("api-ws", "api-sse"):
            us = by_conc[64]["api_cpu_us_per_token"][path]
            targets.append(target_row(f"API CPU per token, {path}, 64 streams", us, "us", "<= 30", us <= 30))
    return targets


OVERHEAD_HEADER = (
    f"{'metrics':<10} {'conc':>4} {'tokens':>7} {'on tok/s':>9} {'off tok/s':>9} {'on/off':>6} "
    f"{'on cpu us/tok':>13} {'off cpu us/tok':>14} {'cpu off/on':>10} "
    f"{'on ttft p50':>11} {'off ttft p50':>12}"
)


def print_overhead(row: dict[str, object]) -> None:
    on, off = row["metrics_on"], row["metrics_off"]
    assert isinstance(on, dict) and isinstance(off, dict)
    print(
        f"{on['model']:<10} {on['concurrency']:>4} {on['tokens']:>7} {on['tokens_per_s']:>9.0f} "
        f"{off['tokens_per_s']:>9.0f} {row['throughput_ratio']:>6.3f} "
        f"{row['on_api_cpu_us_per_token']:>13.1f} {row['off_api_cpu_us_per_token']:>14.1f} "
        f"{row['cpu_efficiency_ratio']:>10.3f} {on['ttft_p50_ms']:>8.1f} ms {off['ttft_p50_ms']:>9.1f} ms",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter scenarios")
    parser.add_argument(
        "--part",
        choices=("all", "paths", "metrics"),
        default="all",
        help="paths: API against direct Triton; metrics: metrics on against off",
    )
    parser.add_argument(
        "--api-env", action="append", default=[], help="NAME=VALUE for the API processes (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.part != "metrics":
        print(HEADER, flush=True)
    report = asyncio.run(benchmark(args))
    targets = report["targets"]
    assert isinstance(targets, list)
    print_targets(targets)
    write_report(args.out, "streaming", report)


def machine(**extra: object) -> dict[str, object]:
    """The machine a report was measured on (every benchmark's `machine`), with `extra` fields
    such as the load average around the run."""
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **extra,
    }


def write_report(folder: Path, name: str, report: object) -> None:
    """The JSON a benchmark leaves behind, named by benchmark and time."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
