"""The API's Prometheus metrics: every series the API process exports, defined in one place.

They live in `core` so that every layer (the chat service, knowledge ingestion and retrieval, the
MCP toolbox, image description, the HTTP transport) can observe without importing the API. The
series go to a registry of kubechat's own (`REGISTRY`), which the API serves on its separate
metrics port (kubechat.api.observability), off the ingress. docs/observability.md lists each one
with its meaning and labels; a test fails when one is missing there.

Labels stay bounded: model names come from the catalog, routes are route templates, errors are
stable error codes, tools are those the configured MCP servers declare. Never a session id, a
principal, a document or a raw path.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
# The process's CPU, memory, file descriptors and the interpreter's GC, as the default registry has.
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

# Seconds. A first token waits for retrieval, image descriptions and the prefill of a long prompt;
# tokens come every few milliseconds on a GPU and every 30-50 ms on this project's CPU model.
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
INTER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DOCUMENT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class TokenGapHistogram(Collector):
    """A histogram of the gaps between an answer's tokens, filled once per answer.

    `Histogram.observe` takes a lock and searches the buckets in Python for every token; an
    answer instead counts its gaps into a plain list (`bucket`, one C bisect) and `merge`s them
    when it ends. The gaps' sum is the time from the first token to the last, so only the counts
    are kept per token.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(buckets)
        self._lock = threading.Lock()
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def new_counts(self) -> list[int]:
        """Per-bucket counts for one answer: one slot per bound plus +Inf."""
        return [0] * (len(self.bounds) + 1)

    def bucket(self, gap: float) -> int:
        return bisect_left(self.bounds, gap)

    def merge(self, model: str, counts: Sequence[int], total: float) -> None:
        if not any(counts):
            return
        with self._lock:
            mine = self._counts.setdefault(model, self.new_counts())
            for index, count in enumerate(counts):
                mine[index] += count
            self._sums[model] = self._sums.get(model, 0.0) + total

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=["model"])]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["model"])
        with self._lock:
            snapshot = {model: (list(counts), self._sums[model]) for model, counts in self._counts.items()}
        for model, (counts, total) in sorted(snapshot.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric([model], buckets, total)
        return [family]


# --- chat: one generation path for the WebSocket and /v1 (kubechat.chat.generation) ----------

TIME_TO_FIRST_TOKEN = Histogram(
    "kubechat_time_to_first_token_seconds",
    "From the request's arrival to the answer's first token: grounding (image descriptions, "
    "retrieval), queueing in Triton and the prompt's prefill.",
    ["model"],
    buckets=TTFT_BUCKETS,
    registry=REGISTRY,
)
INTER_TOKEN_LATENCY = TokenGapHistogram(
    "kubechat_inter_token_latency_seconds",
    "Time between consecutive tokens of an answer, as the API receives them from Triton.",
    INTER_TOKEN_BUCKETS,
)
REGISTRY.register(INTER_TOKEN_LATENCY)
GENERATED_TOKENS = Counter(
    "kubechat_generated_tokens",
    "Completion tokens generated, counted with the model's tokenizer when each answer ends.",
    ["model"],
    registry=REGISTRY,
)
PROMPT_TOKENS = Counter(
    "kubechat_prompt_tokens",
    "Prompt tokens sent to the model, per answer (sources and image descriptions included).",
    ["model"],
    registry=REGISTRY,
)
ANSWERS = Counter(
    "kubechat_answers",
    "Answers that ended, by status: complete, stopped (the user asked), interrupted (the client "
    "left) or failed.",
    ["model", "status"],
    registry=REGISTRY,
)
ACTIVE_STREAMS = Gauge(
    "kubechat_active_streams",
    "Answers streaming from Triton now (WebSocket turns and /v1 completions).",
    ["model"],
    registry=REGISTRY,
)

# --- transports (kubechat.api) ----------------------------------------------------------------

OPEN_WEBSOCKETS = Gauge(
    "kubechat_open_websockets", "Chat WebSockets open now (accepted, not yet closed).", registry=REGISTRY
)
HTTP_REQUESTS = Counter(
    "kubechat_http_requests",
    "HTTP requests answered, by method, route template and status (WebSocket handshakes are "
    "counted with status 101 once they close).",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "kubechat_http_request_duration_seconds",
    "Time to answer an HTTP request, to the last byte (a streamed completion's whole stream).",
    ["method", "route"],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)
ERRORS = Counter(
    "kubechat_errors",
    "Errors sent to clients, by route template and stable error code: HTTP error bodies, "
    "WebSocket error events, in-band SSE errors.",
    ["route", "code"],
    registry=REGISTRY,
)
BUSY_REFUSALS = Counter(
    "kubechat_busy_refusals",
    "Requests refused with `busy` (a WebSocket message while an answer still streams).",
    ["route"],
    registry=REGISTRY,
)

# --- knowledge bases (kubechat.knowledge) -----------------------------------------------------

INGESTION_QUEUE_DEPTH = Gauge(
    "kubechat_ingestion_queue_depth",
    "Documents in this replica's ingestion queue: queued (waiting for a worker), running, "
    "retrying (waiting out a back-off after a transient failure).",
    ["state"],
    registry=REGISTRY,
)
INGESTION_DOCUMENT_DURATION = Histogram(
    "kubechat_ingestion_document_duration_seconds",
    "One ingestion run of a document, from its claim to its outcome: indexed, failed (a bad "
    "document), retrying (a dependency was down; it runs again later), superseded (deleted or "
    "queued again meanwhile), cancelled (stopped here), error (a crash; scanned again later).",
    ["status"],
    buckets=DOCUMENT_BUCKETS,
    registry=REGISTRY,
)
RETRIEVAL_DURATION = Histogram(
    "kubechat_retrieval_duration_seconds",
    "Hybrid retrieval by step: embed (the question), knn and bm25 (each ranked list of each "
    "knowledge base, run concurrently), total (embedding, search and fusion).",
    ["step"],
    buckets=STEP_BUCKETS,
    registry=REGISTRY,
)

# --- tools and images -------------------------------------------------------------------------

TOOL_CALL_DURATION = Histogram(
    "kubechat_tool_call_duration_seconds",
    "MCP tool calls by server, tool and outcome (ok, or the error code: tool_error, tool_timeout, "
    "tool_unavailable, unknown_tool, invalid_arguments). A tool no server declares is counted as "
    "server and tool `unknown`.",
    ["server", "tool", "outcome"],
    buckets=STEP_BUCKETS,
    registry=REGISTRY,
)
IMAGE_DESCRIPTION_DURATION = Histogram(
    "kubechat_image_description_duration_seconds",
    "One image described by a vision model, by model, purpose (chat: for a text-only chat model; "
    "ingestion: an image document) and outcome (ok, error).",
    ["model", "purpose", "outcome"],
    buckets=STEP_BUCKETS,
    registry=REGISTRY,
)
