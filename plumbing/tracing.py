"""OpenTelemetry traces: one job is one trace, from the consumer to the pods.

The W3C `traceparent` travels in gRPC metadata between the servers, and
with the job itself: the provider writes the context of StartCompute into
the job's workflow (`Workflow.trace_parent`), which the operator-service and
the engine store and the pods fetch, so the stages that run long after the
request (dispatch rounds, the engine's stage loop, the pods) join the job's
trace.

Export is off by default. It is turned on by the standard variables:
OTEL_TRACES_EXPORTER (otlp or console; none keeps it off) or an OTLP
endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
OTEL_SDK_DISABLED=true wins over both. The exporter then reads its own
OTEL_EXPORTER_OTLP_* settings, and the sampler and resource theirs
(OTEL_TRACES_SAMPLER, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES).

Off, nothing records spans and no interceptor runs: a server only reads a
traceparent a client sent, so its log lines and the job carry the client's
trace id (plumbing.logs) at the cost of a look through the call's metadata.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

TRACEPARENT = "traceparent"
_TRUE = ("1", "true", "yes", "on")

log = logging.getLogger("c2d.tracing")
tracer = trace.get_tracer("c2d")


def exporters(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The span exporters the standard variables ask for; () when tracing is off."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return ()
    named = tuple(part.strip().lower() for part in env.get("OTEL_TRACES_EXPORTER", "").split(",") if part.strip())
    if named:
        return tuple(name for name in named if name != "none")
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return ("otlp",)
    return ()


@functools.cache
def enabled() -> bool:
    """Whether this process records and exports spans (decided once, at first use)."""
    return bool(exporters())


def configure(service_name: str) -> bool:
    """Installs the SDK's tracer provider and exporters once per process when
    the OTEL_* variables turn tracing on; whether it is on. `service_name`
    is used when OTEL_SERVICE_NAME does not name the service."""
    if not enabled():
        return False
    from opentelemetry.sdk.resources import OTEL_SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return True  # installed already (`c2d up` runs three servers in one process)

    attributes = {} if os.environ.get(OTEL_SERVICE_NAME) else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in exporters():
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        elif name == "console":
            exporter = ConsoleSpanExporter()
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: this build exports with otlp (gRPC) or console")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing on: spans go to %s", ", ".join(exporters()))
    return True


def flush() -> None:
    """Sends the spans still buffered (a pod's process ends right after)."""
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush()


def client_interceptors() -> list[Any]:
    """The interceptors an internal channel takes: client spans that send the
    trace context along, when tracing is on; none when it is off."""
    if not enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def context_from_metadata(metadata: Collection[tuple[str, Any]] | None) -> otel_context.Context | None:
    """The trace context a client sent in a call's metadata (its traceparent,
    and tracestate and baggage with it); None when it sent no traceparent."""
    if not any(key == TRACEPARENT for key, _ in metadata or ()):
        return None  # the common case, found without building a carrier
    return propagate.extract({key: value for key, value in metadata or () if isinstance(value, str)})


def traceparent() -> str:
    """The current trace context as a W3C traceparent ('' outside any trace)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT, "")


def context_of(parent: str) -> otel_context.Context | None:
    """The context a stored traceparent names; None for '' or a malformed one."""
    if not parent:
        return None
    extracted = propagate.extract({TRACEPARENT: parent})
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


def join(parent: str) -> None:
    """Makes the job's trace (a stored traceparent) current for this task and
    the tasks it creates from now on; nothing for '' or a malformed one."""
    joined = context_of(parent)
    if joined is not None:
        otel_context.attach(joined)


@contextmanager
def joined(parent: str) -> Iterator[None]:
    """The job's trace is current inside the block."""
    joined_context = context_of(parent)
    token = otel_context.attach(joined_context) if joined_context is not None else None
    try:
        yield
    finally:
        if token is not None:
            otel_context.detach(token)


def canonical(parent: str) -> str:
    """A traceparent another service stored, re-written in its canonical form;
    '' when it is empty or malformed (what the job carries on is bounded)."""
    joined = context_of(parent[:128])
    if joined is None:
        return ""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=joined)
    return carrier.get(TRACEPARENT, "")


def end_span(span: trace.Span, error: str = "") -> None:
    """Ends a span; with `error`, marked as failed for that reason."""
    if error:
        span.set_status(trace.StatusCode.ERROR, error)
    span.end()
