"""Operator reconcile latency and throughput against kmock's Kubernetes emulator.

kmock runs in a process of its own, like an API server (with the changes `_Emulator`
describes, which keep its cost per request flat); the operator runs in this one, exactly as
`kubechat operator` runs it.

1. Direct path: the children of N ChatModels (ConfigMap, Deployment, Service) created straight
   through the API, C requests in flight: what the emulator and client can do at best.
2. Create: N TensorRT-LLM ChatModels created (C in flight); per model, the time from its create
   call returning until its status carries observedGeneration 1 (children applied, status
   written), seen through a watch. Throughput = N / time until the last one.
3. Update: every spec patched (replicas 2 → a PodDisruptionBudget appears, Deployment patched);
   time until observedGeneration 2. It starts once kmock has gone quiet after the create phase.
4. Resync: one drift-correction pass over N unchanged models (one GET per child; a status
   write only where the status is out of date).

Ratio = operator throughput / direct-path throughput (the operator also renders, reads
back and writes status, so < 1 is expected; it says what the reconcile costs on top).

Per phase it also records the requests kmock served by kind (requests per model), and the CPU
seconds of the kmock process and of this one (the operator, with this benchmark's own client)
until kmock went quiet: on a machine with few cores the two compete for them.

Prints a table and writes benchmarks/results/operator-<time>.json.

    make bench
    python -m benchmarks.operator --models 500   # the target; see docs/operator.md
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import logging
import multiprocessing
import os
import platform
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import kmock
from aiohttp import web
from kmock._internal import enums
from kmock._internal.apps import Server
from kmock._internal.rendering import Request
from kubernetes_asyncio import client, watch

from benchmarks.streaming import ROOT, percentile, write_report
from kubechat.core.resources import GROUP, VERSION, parse_chat_model
from kubechat.operator.chat_models import ChatModelReconciler
from kubechat.operator.kube import Kube
from kubechat.operator.manifests import render_children
from kubechat.operator.runner import run
from kubechat.operator.settings import OperatorSettings
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
            # Weights already on a claim: a huggingFace source would first wait for its weight
            # cache Job, which nothing runs in kmock, and the Deployment would never be applied.
            "source": {"pvc": {"claimName": "llama-3-1-8b-instruct", "path": "Llama-3.1-8B-Instruct"}},
            "engine": {"backend": "tensorrtllm", "dtype": "bfloat16", "maxBatchSize": 64},
            "resources": {"gpus": 1},
            "replicas": 1,
        },
    }


class _Emulator(kmock.KubernetesEmulator):
    """kmock's emulator without two costs that grow with the run, with resourceVersions, counting.

    kmock (0.8) matches each request against its reactions by looking for it, by identity,
    among every request the handler has recorded, running the reaction's criteria on each
    (`request in payload._source` in `RawHandler._handle`). On this machine a bare GET took
    ~0.1 ms more for every request served before it (61 ms each over the first thousand GETs,
    330 ms over the third); a benchmark sends tens of thousands. Here each request leaves the
    log once answered, leaving those in flight, and the reactions' own logs (kept for test
    assertions, never read here) are emptied: ~0.8 ms a GET, flat.

    kmock also finds the one object a GET, PATCH or POST names by comparing the request with
    every stored object; here that is one lookup by (resource, namespace, name), which is the
    key kmock stores objects under. Listings and watches still go through kmock's own scan.

    And every write gets a new metadata.resourceVersion, as a real API server gives it (kmock
    keeps whatever the client sent). kopf relies on it: after patching an object it waits for
    the event carrying the version its patch returned and treats earlier events as stale. With
    one version for every state, an event from before kopf's own patch (a status written on a
    child's event, say) passes for the patched object, without kopf's annotations: kopf runs
    the create or update handler again (measured: ~1.65 reconciles per update, not 1).
    """

    def __init__(self) -> None:
        super().__init__()
        self.served: collections.Counter[str] = collections.Counter()
        self._writes = 1  # the benchmark's ChatModels arrive with resourceVersion "1"

    async def _handle(self, request: Request) -> web.StreamResponse:
        writing = request.action in (enums.action.CREATE, enums.action.UPDATE)
        if writing and isinstance(request.data, dict) and isinstance(request.data.get("metadata", {}), dict):
            # (Here, before kmock's handler takes its lock in this same step: versions follow the
            # order in which the writes are applied.)
            self._writes += 1
            request.data.setdefault("metadata", {})["resourceVersion"] = str(self._writes)
        if request.resource is not None and request.action is not None:
            subresource = f"/{request.subresource}" if request.subresource else ""
            self.served[f"{request.action.value} {request.resource.plural}{subresource}"] += 1
        else:
            self.served["discovery"] += 1
        try:
            return await super()._handle(request)
        finally:
            log = self._requests
            for index in range(len(log) - 1, -1, -1):
                if log[index] is request:  # by identity: a Request's == matches patterns
                    del log[index]
                    break
            for reaction in self._payloads:
                reaction._requests.clear()

    def _KubernetesEmulator__get_objs(self, request: Request, strict: bool) -> list[Any]:
        """(kmock's private `__get_objs`, by its mangled name: the one place objects are found.)"""
        if strict and request.resource is not None and request.name is not None:
            key = (request.resource, request.namespace, request.name)
            return [self.objects[key]] if key in self.objects else []
        # (mypy does not mangle private names, so it does not see kmock's method under this one)
        found: list[Any] = super()._KubernetesEmulator__get_objs(request, strict)  # type: ignore[misc]
        return found


def _serve_emulator(conn: Connection) -> None:
    """The kmock child process: serve, answer the parent's questions, stop when it hangs up."""

    async def serve() -> None:
        stop = asyncio.Event()
        async with _Emulator() as handler, Server(handler):

            def answer() -> None:
                try:
                    conn.recv()
                except EOFError:
                    stop.set()
                    return
                conn.send({"served": dict(handler.served), "cpu_s": time.process_time()})

            asyncio.get_running_loop().add_reader(conn.fileno(), answer)
            conn.send(install_cluster(handler))
            await stop.wait()

    asyncio.run(serve())


@dataclass
class Emulator:
    """The parent's handle on the kmock process."""

    url: str
    conn: Connection

    async def stats(self) -> dict[str, Any]:
        """Requests served so far by kind (`ACTION plural[/subresource]`) and kmock's CPU time."""

        def ask() -> dict[str, Any]:
            self.conn.send("stats")
            answer: dict[str, Any] = self.conn.recv()
            return answer

        return await asyncio.to_thread(ask)


@contextmanager
def emulator() -> Iterator[Emulator]:
    """kmock's emulator on a free port, served from a process of its own.

    Not a thread of this one: kmock and the operator would share one interpreter lock, so
    every request would also wait for the operator's and the watch observer's Python code.
    """
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=_serve_emulator, args=(theirs,), name="kmock", daemon=True)
    process.start()
    theirs.close()
    try:
        if not ours.poll(60):
            raise RuntimeError("kmock did not start")
        url: str = ours.recv()
        print(f"  kmock serving {url} from pid {process.pid}", file=sys.stderr)
        yield Emulator(url, ours)
    finally:
        ours.close()  # the child sees the end of its pipe and stops
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join(10)


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

    try:
        async with watch.Watch() as watcher:  # (closes the client it makes for itself)
            async for event in watcher.stream(listing):
                obj = event.get("raw_object") or event["object"]
                name = obj["metadata"]["name"]
                observed = (obj.get("status") or {}).get("observedGeneration")
                if name in names and name not in seen and observed == generation:
                    seen[name] = time.perf_counter()
                    if len(seen) % max(1, len(names) // 10) == 0:
                        done = f"{len(seen)}/{len(names)}"
                        print(f"  generation {generation}: {done} reconciled", file=sys.stderr)
                    if len(seen) == len(names):
                        return
    finally:
        await api.close()


async def settle(kmock_: Emulator, quiet_s: float = 1.0, limit_s: float = 120.0) -> dict[str, Any]:
    """Wait until kmock has served nothing new for `quiet_s` (the operator's trailing work on
    child events is done); its statistics then."""
    deadline = time.perf_counter() + limit_s
    last = await kmock_.stats()
    while time.perf_counter() < deadline:
        await asyncio.sleep(quiet_s)
        now = await kmock_.stats()
        if now["served"] == last["served"]:
            return now
        last = now
    return last


def requests_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    served = collections.Counter(after["served"])
    served.subtract(before["served"])
    return dict(sorted((kind, count) for kind, count in served.items() if count))


async def phase(
    kmock_: Emulator,
    generation: int,
    count: int,
    concurrency: int,
    act: Callable[[client.CustomObjectsApi, int], Awaitable[Any]],
) -> dict[str, Any]:
    names = {f"model-{i:04d}" for i in range(count)}
    seen: dict[str, float] = {}
    watcher = asyncio.create_task(observe(kmock_.url, generation, names, seen))
    await asyncio.sleep(0.2)  # the watch is established before the first change
    api = client.ApiClient(client.Configuration(host=kmock_.url))
    custom = client.CustomObjectsApi(api)
    sent: dict[str, float] = {}

    async def one(index: int) -> None:
        await act(custom, index)
        sent[f"model-{index:04d}"] = time.perf_counter()

    before, cpu_before = await kmock_.stats(), time.process_time()
    started = time.perf_counter()
    await bounded(concurrency, [functools.partial(one, i) for i in range(count)])
    try:
        await asyncio.wait_for(watcher, 600)
    except TimeoutError:
        raise RuntimeError(f"only {len(seen)}/{count} models reached generation {generation}") from None
    finished = max(seen.values())
    await api.close()
    after = await settle(kmock_)
    settled = time.perf_counter()
    requests = requests_between(before, after)
    latencies = sorted((seen[n] - sent[n]) * 1000 for n in names)
    return {
        "models": count,
        "seconds": finished - started,
        "models_per_s": count / (finished - started),
        "p50_ms": percentile(latencies, 0.5),
        "p95_ms": percentile(latencies, 0.95),
        "max_ms": latencies[-1],
        # Until kmock went quiet (the last 1 s of quiet included): trailing child events too.
        "settled_s": settled - started,
        "cpu_s": {
            "kmock": after["cpu_s"] - before["cpu_s"],
            "operator": time.process_time() - cpu_before,  # with this benchmark's own client
        },
        # Every request kmock served in the phase, this benchmark's own (one create or patch
        # per model) included.
        "requests": requests,
        "requests_per_model": sum(requests.values()) / count,
    }


async def resync_pass(kmock_: Emulator) -> dict[str, Any]:
    """One drift-correction pass over every model, as the resync loop runs it."""
    api = client.ApiClient(client.Configuration(host=kmock_.url))
    chat_models = ChatModelReconciler(OperatorSettings(namespace=NAMESPACE), Kube(api))
    before = await kmock_.stats()
    started = time.perf_counter()
    visited = await chat_models.resync()
    elapsed = time.perf_counter() - started
    await api.close()
    requests = requests_between(before, await kmock_.stats())
    return {
        "models": visited,
        "seconds": elapsed,
        "models_per_s": visited / elapsed,
        "requests": requests,
        "requests_per_model": sum(requests.values()) / visited,
    }


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    logging.getLogger("kopf").setLevel(logging.WARNING)
    # Not "Unprocessed streams left" at stop: kopf keeps each object's worker for a while idle.
    logging.getLogger("kopf._core.reactor.queueing").setLevel(logging.ERROR)
    logging.getLogger("kubechat").setLevel(logging.WARNING)
    load_before = os.getloadavg()
    with emulator() as kmock_:
        # An emulator of its own: kopf watches children in every namespace and would react to
        # these (labelled as a ChatModel's) in the operator's run.
        direct = await direct_path(kmock_.url, args.models, args.concurrency)
    with emulator() as kmock_:
        settings = OperatorSettings(resync_interval_s=3600, count_interval_s=3600)
        stop, ready = asyncio.Event(), asyncio.Event()
        operator = asyncio.create_task(run(settings, server=kmock_.url, stop_flag=stop, ready_flag=ready))
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
            await settle(kmock_)  # kopf's startup: discovery, watches
            created = await phase(kmock_, 1, args.models, args.concurrency, create)
            updated = await phase(kmock_, 2, args.models, args.concurrency, update)
        finally:
            # Stopped before anything propagates: kopf's tasks would outlive asyncio.run's cancel.
            stop.set()
            await asyncio.wait_for(operator, 60)
        resync = await resync_pass(kmock_)
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # 1, 5 and 15 min load averages: anything else running shares the same cores.
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "models": args.models,
        "concurrency": args.concurrency,
        "direct_models_per_s": direct,
        "create": created,
        "update": updated,
        "resync": resync,
        "ratio_create_vs_direct": created["models_per_s"] / direct,
    }
    print(f"\nOperator against kmock, {args.models} TensorRT-LLM ChatModels, {args.concurrency} in flight")
    print(
        f"{'phase':<10}{'models/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}{'total s':>10}"
        f"{'req/model':>10}{'kmock cpu':>10}{'op cpu':>10}"
    )
    print(f"{'direct':<10}{direct:>10.1f}{'':>40}{args.models / direct:>10.1f}")
    for label, row in (("create", created), ("update", updated)):
        print(
            f"{label:<10}{row['models_per_s']:>10.1f}{row['p50_ms']:>10.0f}{row['p95_ms']:>10.0f}"
            f"{row['max_ms']:>10.0f}{row['seconds']:>10.1f}{row['requests_per_model']:>10.1f}"
            f"{row['cpu_s']['kmock']:>10.1f}{row['cpu_s']['operator']:>10.1f}"
        )
    print(
        f"{'resync':<10}{resync['models_per_s']:>10.1f}{'':>30}{resync['seconds']:>10.1f}"
        f"{resync['requests_per_model']:>10.1f}"
    )
    print(f"ratio create/direct: {report['ratio_create_vs_direct']:.2f}")
    print("(cpu: seconds of CPU from the phase's start until kmock went quiet)")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # 500 is the target: 2 to 4 minutes on a 2-core machine (see docs/operator.md); 20 for make bench.
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    write_report(args.out, "operator", asyncio.run(benchmark(args)))


if __name__ == "__main__":
    main()
