"""Socket scale: N concurrent WebSocket chats in one API process, against the synthetic model.

For each N (1k, 4k, 10k; 500 as the baseline of CPU per turn), a fresh API process: N sockets
are opened (each reads its history), then every socket sends one message at once and reads its
answer to `done`. Reported: the time from the first message to the last `done`, the errors,
the API's CPU time per turn (psutil: user + system during the chats, divided by N), and its
RSS before the sockets open, at its peak (sampled every 100 ms) and after they all closed
(after a few seconds' rest). The fd limit is raised to its hard limit here, and the API process
inherits it (the API raises its own too: kubechat.api.app).

Checked against the issue's targets: N = 10,000 with no error, CPU per turn within 1.5x of the
500-socket figure, RSS after within 1.3x of before.

    python -m benchmarks.sockets --quick     # 500, 1000 and 2000 sockets
    python -m benchmarks.sockets             # 500, 1000, 4000 and 10000 sockets
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect

from benchmarks.streaming import machine, print_targets, target_row, write_report
from kubechat.embedded.launcher import TritonPorts, start_triton
from tests.conftest import ApiProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
MAX_TOKENS = 16
# At most this many handshakes (and session creations) in flight: the listen backlog is finite.
OPENING = 256


@dataclass
class ScaleResult:
    sockets: int
    opened: int
    completed: int
    errors: int
    open_s: float
    chat_s: float
    api_cpu_ms_per_turn: float
    rss_before_mib: float
    rss_peak_mib: float
    rss_after_mib: float


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def rss_mib(process: psutil.Process) -> float:
    return float(process.memory_info().rss) / 2**20


async def sessions(api: ApiProcess, count: int) -> list[str]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=api.url, limits=limits, timeout=120) as http:
        gate = asyncio.Semaphore(64)

        async def one() -> str:
            async with gate:
                response = await http.post("/sessions", json={"title": "scale"})
                return str(response.json()["id"])

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def chat(
    api: ApiProcess, session: str, gate: asyncio.Semaphore, ready: list[int], opened: asyncio.Event,
    go: asyncio.Event,
) -> bool:  # fmt: skip
    """One socket: open, wait for every socket to be open, ask, read the answer to done."""
    ws: ClientConnection | None = None
    try:
        async with gate:
            ws = await connect(f"{api.ws_url}/ws/chat/{session}", max_size=None, open_timeout=120)
            await ws.recv()  # history
    except Exception:
        ws = None
    finally:
        ready[0] -= 1  # opened, or failed to
        if ready[0] == 0:
            opened.set()
    if ws is None:
        return False
    try:
        await go.wait()
        options = {"max_tokens": MAX_TOKENS, "temperature": 0}
        message = {"type": "message", "content": "Say hello.", "model": "synthetic", "options": options}
        await ws.send(json.dumps(message))
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "done":
                return bool(event["status"] == "complete")
            if event["type"] == "error":
                return False
    except Exception:
        return False
    finally:
        await ws.close()


async def sample_peak(process: psutil.Process, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mib(process))
        await asyncio.sleep(0.1)


async def scale(api: ApiProcess, count: int) -> ScaleResult:
    assert api.process is not None
    process = psutil.Process(api.process.pid)
    ids = await sessions(api, count)
    await asyncio.sleep(1.0)
    before = rss_mib(process)
    peak, stop = [before], asyncio.Event()
    sampler = asyncio.create_task(sample_peak(process, peak, stop))
    gate, opened, go = asyncio.Semaphore(OPENING), asyncio.Event(), asyncio.Event()
    ready = [count]
    started = time.perf_counter()
    chats = [asyncio.create_task(chat(api, s, gate, ready, opened, go)) for s in ids]
    await opened.wait()
    open_s = time.perf_counter() - started
    cpu = cpu_seconds(process)
    started = time.perf_counter()
    go.set()
    outcomes = await asyncio.gather(*chats)
    chat_s = time.perf_counter() - started
    cpu = cpu_seconds(process) - cpu
    # Let the server see every close, then give it a few seconds' rest.
    await asyncio.sleep(5.0)
    stop.set()
    await sampler
    completed = sum(outcomes)
    return ScaleResult(
        sockets=count, opened=count, completed=completed, errors=count - completed, open_s=open_s,
        chat_s=chat_s, api_cpu_ms_per_turn=cpu / count * 1000, rss_before_mib=before,
        rss_peak_mib=peak[0], rss_after_mib=rss_mib(process),
    )  # fmt: skip


HEADER = (
    f"{'sockets':>7} {'errors':>6} {'open s':>7} {'chat s':>7} {'cpu ms/turn':>11} "
    f"{'rss before':>10} {'rss peak':>9} {'rss after':>9}"
)


def print_row(r: ScaleResult) -> None:
    print(
        f"{r.sockets:>7} {r.errors:>6} {r.open_s:>7.1f} {r.chat_s:>7.1f} {r.api_cpu_ms_per_turn:>11.2f} "
        f"{r.rss_before_mib:>7.0f} MiB {r.rss_peak_mib:>5.0f} MiB {r.rss_after_mib:>5.0f} MiB",
        flush=True,
    )


def targets(results: list[ScaleResult]) -> list[dict[str, object]]:
    """The issue's socket targets, on the largest N measured against the 500-socket baseline."""
    base, top = results[0], results[-1]
    cpu_ratio = top.api_cpu_ms_per_turn / base.api_cpu_ms_per_turn
    rss_ratio = top.rss_after_mib / top.rss_before_mib
    where = f"{top.sockets} sockets"
    full = top.sockets >= 10_000
    return [
        target_row(
            f"errors at {where}", top.errors, "errors", "== 0", top.errors == 0 and full,
            "" if full else "quick run: fewer than 10,000 sockets",
        ),
        target_row(
            f"CPU per turn at {where} / at {base.sockets}", cpu_ratio, "x", "<= 1.5x", cpu_ratio <= 1.5,
            f"{top.api_cpu_ms_per_turn:.2f} ms against {base.api_cpu_ms_per_turn:.2f} ms",
        ),
        target_row(
            f"RSS after / before at {where}", rss_ratio, "x", "<= 1.3x", rss_ratio <= 1.3,
            f"{top.rss_after_mib:.0f} MiB after, {top.rss_before_mib:.0f} before, "
            f"{top.rss_peak_mib:.0f} at peak",
        ),
    ]  # fmt: skip


async def benchmark(args: argparse.Namespace) -> dict[str, object]:
    limit = raise_fd_limit()
    counts = [int(n) for n in args.sockets.split(",")] if args.sockets else None
    counts = counts or ([500, 1000, 2000] if args.quick else [500, 1000, 4000, 10_000])
    if max(counts) + 256 > limit:  # this process holds the client ends; the API, the others
        raise SystemExit(f"{max(counts)} sockets need more file descriptors than the limit of {limit}")
    state = ROOT / ".kubechat" / "bench"
    models = ROOT / "examples" / "models"
    triton = start_triton(models, state, TritonPorts(free_port(), free_port(), free_port()), timeout=300)
    results: list[ScaleResult] = []
    try:
        print(HEADER, flush=True)
        for count in counts:
            database = str(state / f"bench-sockets-{uuid.uuid4().hex}.sqlite3")
            env = {
                "KUBECHAT_TRITON_URL": triton.grpc_url,
                "KUBECHAT_MODELS_DIR": str(models),
                "KUBECHAT_STATE_DIR": str(state),
                "KUBECHAT_DATABASE_URL": database,
                "KUBECHAT_METRICS_PORT": str(free_port()),
                **dict(kv.split("=", 1) for kv in args.env),
            }
            api = ApiProcess(env, state / "api-sockets.log")
            api.start()
            try:
                results.append(await scale(api, count))
                print_row(results[-1])
            finally:
                api.stop()
    finally:
        triton.stop()
    rows = targets(results)
    print_targets(rows)
    return {
        "benchmark": "sockets",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(load_before=os.getloadavg()[0]),
        "max_tokens": MAX_TOKENS,
        "env": args.env,
        "results": [asdict(r) for r in results],
        "targets": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="500, 1000 and 2000 sockets")
    parser.add_argument(
        "--sockets", default="", help="comma-separated socket counts (the first is the baseline)"
    )
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the API process")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    write_report(args.out, "sockets", asyncio.run(benchmark(args)))


if __name__ == "__main__":
    main()
