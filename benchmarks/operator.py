"""Operator reconcile latency and throughput against kmock's Kubernetes emulator.

kmock runs in its own thread and event loop, like an API server in another process; the
operator runs in this one, exactly as `kubechat operator` runs it.

1. Direct path: the children of N ChatModels (ConfigMap, Deployment, Service) created straight
   through the API, C requests in flight: what the emulator and client can do at best.
2. Create: N TensorRT-LLM ChatModels created (C in flight); per model, the time from its create
   call returning until its status carries observedGeneration 1 (children applied, status
   written), seen through a watch. Throughput = N / time until the last one.
3. Update: every spec patched (replicas 2 → a PodDisruptionBudget appears, Deployment patched);
   time until observedGeneration 2.
4. Resync: one drift-correction pass over N unchanged models (one GET per child, nothing written).

Ratio = operator throughput / direct-path throughput (the operator also renders, reads
back and writes status, so < 1 is expected; it says what the reconcile costs on top).

Prints a table and writes benchmarks/results/operator-<time>.json.

    make bench
    python -m benchmarks.operator --models 500   # the target; see docs/operator.md on kmock
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import platform
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kmock
from kmock._internal.apps import Server
from kubernetes_asyncio import client, watch

from benchmarks.streaming import ROOT, percentile, write_report
from kubechat.operator.handlers import Operator
from kubechat.operator.kube import Kube
from kubechat.operator.main import run
from kubechat.operator.manifests import render_children
from kubechat.operator.settings import OperatorSettings
from kubechat.resources import GROUP, VERSION, parse_chat_model
from tests.kube import install_cluster

NAMESPACE = "bench"


def chat_model(index: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ChatModel",
        "metadata": {
            "name": f"model-{index:04d}",
            "namespace": NAMESPACE,
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": {
            "source": {
                "huggingFace": {"repo": "meta-llama/Llama-3.1-8B-Instruct", "tokenSecretRef": "hf-token"}
            },
            "engine": {"backend": "tensorrtllm", "dtype": "bfloat16", "maxBatchSize": 64},
            "resources": {"gpus": 1},
            "replicas": 1,
        },
    }


@contextmanager
def emulator() -> Iterator[str]:
    """kmock's emulator on a free port, served from its own thread and event loop."""
    started: dict[str, str] = {}
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        async with kmock.KubernetesEmulator() as handler, Server(handler):
            started["url"] = install_cluster(handler)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("kmock did not start")
    try:
        yield started["url"]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


async def bounded(concurrency: int, calls: list[Callable[[], Awaitable[Any]]]) -> None:
    limit = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        async with limit:
            await call()

    await asyncio.gather(*(one(c) for c in calls))


async def direct_path(server: str, count: int, concurrency: int) -> float:
    """Create the rendered children of `count` models straight through the API; models/s."""
    api = client.ApiClient(client.Configuration(host=server))
    kube = Kube(api)
    settings = OperatorSettings()
    manifests = []
    for index in range(count):
        children = render_children(parse_chat_model(chat_model(index)), settings)
        for manifest in children.all():
            manifest["metadata"]["namespace"] = "direct"
            manifests.append(manifest)
    started = time.perf_counter()
    await bounded(concurrency, [functools.partial(kube.apply, m) for m in manifests])
    elapsed = time.perf_counter() - started
    await api.close()
    return count / elapsed


async def observe(server: str, generation: int, names: set[str], seen: dict[str, float]) -> None:
    """Record when each model's status first reports `generation` as observed."""
    api = client.ApiClient(client.Configuration(host=server))
    custom = client.CustomObjectsApi(api)

    async def listing(**kwargs: Any) -> Any:
        """:rtype: object"""  # (tells kubernetes_asyncio's Watch to hand events over as dicts)
        if kwargs.get("watch") is True:
            kwargs["watch"] = "true"  # as kubectl sends it; kmock takes "True" for a list
        return await custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "chatmodels", **kwargs)

    stream = watch.Watch().stream(listing)
    try:
        async for event in stream:
            obj = event.get("raw_object") or event["object"]
            name = obj["metadata"]["name"]
            observed = (obj.get("status") or {}).get("observedGeneration")
            if name in names and name not in seen and observed == generation:
                seen[name] = time.perf_counter()
                if len(seen) % max(1, len(names) // 10) == 0:
                    print(f"  generation {generation}: {len(seen)}/{len(names)} reconciled", file=sys.stderr)
                if len(seen) == len(names):
                    return
    finally:
        await api.close()


async def phase(
    server: str,
    generation: int,
    count: int,
    concurrency: int,
    act: Callable[[client.CustomObjectsApi, int], Awaitable[Any]],
) -> dict[str, float]:
    names = {f"model-{i:04d}" for i in range(count)}
    seen: dict[str, float] = {}
    watcher = asyncio.create_task(observe(server, generation, names, seen))
    await asyncio.sleep(0.2)  # the watch is established before the first change
    api = client.ApiClient(client.Configuration(host=server))
    custom = client.CustomObjectsApi(api)
    sent: dict[str, float] = {}

    async def one(index: int) -> None:
        await act(custom, index)
        sent[f"model-{index:04d}"] = time.perf_counter()

    started = time.perf_counter()
    await bounded(concurrency, [functools.partial(one, i) for i in range(count)])
    try:
        await asyncio.wait_for(watcher, 600)
    except TimeoutError:
        raise RuntimeError(f"only {len(seen)}/{count} models reached generation {generation}") from None
    finished = max(seen.values())
    await api.close()
    latencies = sorted((seen[n] - sent[n]) * 1000 for n in names)
    return {
        "models": count,
        "seconds": finished - started,
        "models_per_s": count / (finished - started),
        "p50_ms": percentile(latencies, 0.5),
        "p95_ms": percentile(latencies, 0.95),
        "max_ms": latencies[-1],
    }


async def resync_pass(server: str) -> dict[str, float]:
    """One drift-correction pass over every model, as the resync loop runs it."""
    api = client.ApiClient(client.Configuration(host=server))
    operator = Operator(OperatorSettings(namespace=NAMESPACE), Kube(api), None)
    started = time.perf_counter()
    visited = await operator.resync()
    elapsed = time.perf_counter() - started
    await api.close()
    return {"models": visited, "seconds": elapsed, "models_per_s": visited / elapsed}


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("kubechat").setLevel(logging.WARNING)
    with emulator() as server:
        # Its own emulator: kmock scans every stored object on each request, so the operator's
        # run must not also carry the direct path's objects.
        direct = await direct_path(server, args.models, args.concurrency)
    with emulator() as server:
        settings = OperatorSettings(resync_interval_s=3600, count_interval_s=3600)
        stop, ready = asyncio.Event(), asyncio.Event()
        operator = asyncio.create_task(run(settings, server=server, stop_flag=stop, ready_flag=ready))
        await asyncio.wait_for(ready.wait(), 60)

        async def create(custom: client.CustomObjectsApi, index: int) -> None:
            await custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "chatmodels", chat_model(index)
            )

        async def update(custom: client.CustomObjectsApi, index: int) -> None:
            patch = {"metadata": {"generation": 2}, "spec": {"replicas": 2}}
            await custom.patch_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "chatmodels", f"model-{index:04d}", patch
            )

        try:
            created = await phase(server, 1, args.models, args.concurrency, create)
            updated = await phase(server, 2, args.models, args.concurrency, update)
        finally:
            # Stopped before anything propagates: kopf's tasks would outlive asyncio.run's cancel.
            stop.set()
            await asyncio.wait_for(operator, 60)
        resync = await resync_pass(server)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "models": args.models,
        "concurrency": args.concurrency,
        "direct_models_per_s": direct,
        "create": created,
        "update": updated,
        "resync": resync,
        "ratio_create_vs_direct": created["models_per_s"] / direct,
    }
    print(f"\nOperator against kmock, {args.models} TensorRT-LLM ChatModels, {args.concurrency} in flight")
    print(f"{'phase':<10}{'models/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}{'total s':>10}")
    print(f"{'direct':<10}{direct:>10.1f}{'':>10}{'':>10}{'':>10}{args.models / direct:>10.1f}")
    for label, row in (("create", created), ("update", updated)):
        print(
            f"{label:<10}{row['models_per_s']:>10.1f}{row['p50_ms']:>10.0f}{row['p95_ms']:>10.0f}"
            f"{row['max_ms']:>10.0f}{row['seconds']:>10.1f}"
        )
    print(f"{'resync':<10}{resync['models_per_s']:>10.1f}{'':>30}{resync['seconds']:>10.1f}")
    print(f"ratio create/direct: {report['ratio_create_vs_direct']:.2f}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # 500 is the target; on kmock it does not finish in 20 minutes (see docs/operator.md).
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    write_report(args.out, "operator", asyncio.run(benchmark(args)))


if __name__ == "__main__":
    main()
