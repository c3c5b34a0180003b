"""OpenTelemetry traces: off unless an OTLP endpoint is configured.

Every layer takes its tracer from here (`tracer`); without `configure_tracing` OpenTelemetry's
API hands out non-recording spans, which cost next to nothing and propagate nothing. With
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, spans are batched
to that collector over OTLP, gRPC by default or HTTP with `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`;
the SDK reads the other standard variables itself (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_EXPORTER_OTLP_HEADERS`…).

What is traced: a chat turn (`chat.turn`, or `chat.completion` for /v1) with its image
descriptions, retrieval steps, the Triton stream (its time to first token) and each tool call;
each ingested document with its steps. The W3C trace context goes to Triton as gRPC metadata
(`traceparent`), which Triton's OpenTelemetry trace mode continues.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context

logger = logging.getLogger(__name__)

tracer = trace.get_tracer("kubechat")

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def otlp_endpoint(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return next((environ[name] for name in _ENDPOINT_VARIABLES if environ.get(name)), "")


def configure_tracing(service_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Export spans over OTLP when an endpoint is configured; whether tracing is now on.

    The SDK is imported only then. A process has one tracer provider: a second call is a no-op.
    """
    environ = os.environ if environ is None else environ
    endpoint = otlp_endpoint(environ)
    if not endpoint:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return True
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    exporter: SpanExporter
    if protocol in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter = GrpcExporter()
    resource = Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    logger.info("tracing: spans go to %s over OTLP (%s)", endpoint, protocol or "grpc")
    return True


def trace_headers(context: Context | None = None) -> dict[str, str]:
    """The W3C trace context (`traceparent`, `tracestate`) of `context` (default: the current
    one), for a request to another service; empty when nothing is being traced."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier
