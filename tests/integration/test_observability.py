"""Observability end to end: a real Prometheus (Debian's package) scrapes the API process after real
chats through tritonserver, and PromQL through Prometheus's HTTP API finds the time-to-first-token
histogram; the chart's prometheus-adapter query is run against Triton's real metrics (and against
a TensorRT-LLM pod's, served from a fixture); every dashboard query is valid PromQL; the API's
JSON log lines parse, carry the request id and never the API key; the Triton stream is a span
with its time to first token."""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from websockets.asyncio.client import connect

from kubechat.core.tracing import tracer
from kubechat.embedded.tritonserver import TritonServer
from kubechat.triton.client import SamplingParams, TritonGateway
from tests.chart.test_monitoring import adapter_query, dashboard_queries
from tests.conftest import ALICE_KEY, EXAMPLE_MODELS, ApiProcess, api_env, auth, free_port
from tests.integration.conftest import ChatSocket
from tests.polling import eventually, wait_until
from tests.prometheus import PrometheusServer, Target, binary
from tests.tracing import named, parent_of, spans

__all__ = ["spans"]  # the fixture

pytestmark = pytest.mark.triton

NAMESPACE = "team-chat"
# What a TensorRT-LLM ChatModel's pod reports: its one LLM API model `llama`
# (kubechat/triton/llmapi_model.py), whose requests Triton hands over at once (so Triton's pending
# count stays near 0) while the model reports the requests waiting beyond its batch under the
# metric and labels of TensorRT-LLM's C++ backend.
TRTLLM_POD_METRICS = """\
# HELP nv_inference_pending_request_count Pending requests awaiting execution per-model.
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="llama",version="1"} 1
# HELP nv_trt_llm_request_metrics TRT LLM request metrics
# TYPE nv_trt_llm_request_metrics gauge
nv_trt_llm_request_metrics{model="llama",request_type="waiting",version="1"} 5
"""


class _FixedMetrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = TRTLLM_POD_METRICS.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def trtllm_pod() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FixedMetrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def observed_api(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """An API process as the chart runs it: metrics on their own port, JSON logs, uvicorn's access log."""
    state = tmp_path_factory.mktemp("observed")
    env = {
        **api_env(triton, EXAMPLE_MODELS, state),
        "KUBECHAT_METRICS_PORT": str(free_port()),
        "KUBECHAT_LOG_FORMAT": "json",
    }
    process = ApiProcess(env, state / "api.log", log_level="info")
    process.start()
    yield process
    process.stop()


def log_text(api: ApiProcess) -> str:
    return Path(api.log).read_text()


def metrics_address(api: ApiProcess) -> str:
    return f"127.0.0.1:{api.env['KUBECHAT_METRICS_PORT']}"


@pytest.fixture(scope="module")
def prometheus(
    observed_api: ApiProcess, triton: TritonServer, trtllm_pod: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    binary("prometheus")
    targets = [
        Target(metrics_address(observed_api), {"namespace": NAMESPACE, "pod": "kubechat-api-0"}),
        # The labels a PodMonitor gives a ChatModel's pod.
        Target(f"127.0.0.1:{triton.metrics_port}", {"namespace": NAMESPACE, "pod": "smollm2-triton-0"}),
        Target(trtllm_pod, {"namespace": NAMESPACE, "pod": "llama-triton-0"}),
    ]
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), free_port(), targets)
    server.start()
    yield server
    server.stop()


async def chat_over_both_transports(api: ApiProcess, request_id: str) -> dict[str, Any]:
    """A WebSocket turn (the key in the query string, as browsers send it) and a /v1 completion."""
    async with httpx.AsyncClient(base_url=api.url, headers=auth(), timeout=60) as http:
        created = await http.post(
            "/sessions", json={"title": "observed"}, headers={"X-Request-ID": request_id}
        )
        assert created.headers["x-request-id"] == request_id
        session = created.json()["id"]
        url = f"{api.ws_url}/ws/chat/{session}?token={ALICE_KEY}"
        async with connect(url, additional_headers={"X-Request-ID": f"{request_id}-ws"}) as connection:
            assert connection.response is not None
            assert connection.response.headers["x-request-id"] == f"{request_id}-ws"
            chat = ChatSocket(connection)
            assert (await chat.event())["type"] == "history"
            await chat.ask("Count.", model="synthetic", options={"max_tokens": 20})
            turn = await chat.turn()
        assert turn.done is not None and turn.done["status"] == "complete"
        body = {"model": "synthetic", "messages": [{"role": "user", "content": "Count."}], "max_tokens": 20}
        completion = await http.post("/v1/chat/completions", json=body)
        assert completion.status_code == 200
        return {"session": session, "start": turn.start}


async def test_prometheus_scrapes_the_ttft_histogram_after_real_chats(
    observed_api: ApiProcess, prometheus: PrometheusServer
) -> None:
    await chat_over_both_transports(observed_api, "it-prom")
    # What `curl` on the metrics port shows.
    async with httpx.AsyncClient() as client:
        exposition = (await client.get(f"http://{metrics_address(observed_api)}/metrics")).text
    assert 'kubechat_time_to_first_token_seconds_bucket{le="0.25",model="synthetic"}' in exposition
    assert 'kubechat_inter_token_latency_seconds_bucket{le="+Inf",model="synthetic"}' in exposition
    assert 'kubechat_generated_tokens_total{model="synthetic"}' in exposition

    def scraped() -> list[dict[str, Any]] | None:
        found = prometheus.query(
            f'kubechat_time_to_first_token_seconds_count{{namespace="{NAMESPACE}"}} >= 2'
        )
        return found or None

    (series,) = await eventually(scraped, "Prometheus to scrape both answers' TTFT", within_s=30)
    assert series["metric"]["model"] == "synthetic" and series["metric"]["pod"] == "kubechat-api-0"
    buckets = 'kubechat_time_to_first_token_seconds_bucket{model="synthetic"}'
    p95 = f"histogram_quantile(0.95, sum by (model, le) ({buckets}))"
    (quantile,) = prometheus.query(p95)
    assert 0 < float(quantile["value"][1]) < 60


async def test_the_adapter_query_reads_one_models_queue_per_pod(prometheus: PrometheusServer) -> None:
    """What prometheus-adapter asks Prometheus for an HPA: one value per pod, from the model
    the operator names in the HPA's metric selector, never a sum over the pod's models."""

    def both_pods() -> bool:
        up = prometheus.query('up{pod=~"smollm2-triton-0|llama-triton-0"} == 1')
        return len(up) == 2

    await eventually(both_pods, "Prometheus to scrape both Triton pods", within_s=30)
    (cpu,) = prometheus.query(adapter_query(NAMESPACE, ["smollm2-triton-0"], "smollm2"))
    assert cpu["metric"] == {"pod": "smollm2-triton-0"} and float(cpu["value"][1]) == 0
    (gpu,) = prometheus.query(adapter_query(NAMESPACE, ["llama-triton-0"], "llama"))
    # The model's 5 waiting requests, not Triton's pending count (1) of the same model.
    assert gpu["metric"] == {"pod": "llama-triton-0"} and float(gpu["value"][1]) == 5
    both = prometheus.query(adapter_query(NAMESPACE, ["smollm2-triton-0", "llama-triton-0"], "smollm2"))
    assert [s["metric"]["pod"] for s in both] == ["smollm2-triton-0"]


async def test_every_dashboard_query_is_valid_promql(
    observed_api: ApiProcess, prometheus: PrometheusServer
) -> None:
    await chat_over_both_transports(observed_api, "it-dash")
    for query in dashboard_queries():
        filled = query.replace("$namespace", NAMESPACE).replace("$model", ".*")
        prometheus.query(filled)  # asserts status success


async def test_json_logs_carry_the_request_id_and_never_the_key(observed_api: ApiProcess) -> None:
    started = await chat_over_both_transports(observed_api, "it-logs")
    assert started["start"]["request_id"] == "it-logs-ws"

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in log_text(observed_api).splitlines() if line.startswith("{")]

    def socket_closed() -> list[dict[str, Any]] | None:
        found = [e for e in lines() if e.get("request_id") == "it-logs-ws"]
        return found if any("turn " in e["message"] for e in found) else None

    socket_lines = await eventually(socket_closed, "the turn's log line")
    text = log_text(observed_api)
    assert ALICE_KEY not in text
    # uvicorn's own line for the socket, query string and all, masked.
    accepted = [e for e in socket_lines if "WebSocket" in e["message"]]
    assert accepted and "token=***" in accepted[0]["message"], socket_lines
    alice = hashlib.sha256(b"alice").hexdigest()[:12]
    turn_line = next(e for e in socket_lines if "turn " in e["message"])
    assert (turn_line["session_id"], turn_line["principal_hash"]) == (started["session"], alice)
    assert turn_line["logger"] == "kubechat.chat.service" and turn_line["level"] == "INFO"
    # Every line of the process is JSON (uvicorn's startup and access lines included).
    every = [line for line in text.splitlines() if line.strip()]
    assert every and all(line.startswith("{") for line in every), [x for x in every if not x.startswith("{")][
        :3
    ]
    access = [e for e in lines() if e.get("request_id") == "it-prom" or e.get("request_id") == "it-logs"]
    assert any(e["logger"] == "uvicorn.access" and "POST /sessions" in e["message"] for e in access)


async def test_the_triton_stream_is_a_span_with_its_time_to_first_token(
    triton: TritonServer, spans: InMemorySpanExporter
) -> None:
    gateway = TritonGateway(triton.grpc_url)
    try:
        with tracer.start_as_current_span("chat.turn"):
            deltas = [d async for d in gateway.stream_text("synthetic", "go", SamplingParams(max_tokens=5))]
    finally:
        await gateway.close()
    assert deltas
    (stream,) = named(spans, "triton.stream")
    parent = parent_of(spans, stream)
    assert parent is not None and parent.name == "chat.turn"
    attributes = dict(stream.attributes or {})
    assert attributes["kubechat.model"] == "synthetic"
    ttft = attributes["kubechat.time_to_first_token_ms"]
    assert isinstance(ttft, float) and math.isfinite(ttft) and ttft > 0
    assert [e.name for e in stream.events] == ["first_token"]


def test_the_api_says_where_its_metrics_are(observed_api: ApiProcess) -> None:
    wait_until(lambda: "metrics on http://" in Path(observed_api.log).read_text(), 10, "the metrics line")
    assert (
        f"metrics on http://127.0.0.1:{observed_api.env['KUBECHAT_METRICS_PORT']}/metrics"
        in Path(observed_api.log).read_text()
    )
