"""plumbing.tracing: when the OTEL_* variables turn export on, and the trace
contexts a job carries."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from plumbing import tracing

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, ()),  # off by default
        ({"OTEL_TRACES_EXPORTER": "none"}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, ()),
    ],
)
def test_export_is_off_unless_the_standard_variables_turn_it_on(environ, exporters):
    assert tracing.exporters(environ) == exporters


def test_a_stored_traceparent_is_kept_in_canonical_form_and_a_malformed_one_dropped():
    assert tracing.canonical(PARENT) == PARENT
    assert tracing.canonical(PARENT.upper()) == ""  # W3C: lower-case hex only
    assert tracing.canonical("00-" + "0" * 32 + "-00f067aa0ba902b7-01") == ""  # the invalid all-zero trace id
    assert tracing.canonical("x" * 10_000) == ""
    assert tracing.canonical("") == ""


def test_a_client_traceparent_in_metadata_becomes_the_current_trace():
    assert tracing.context_from_metadata((("authorization", "Bearer t"),)) is None
    context = tracing.context_from_metadata((("user-agent", "grpc"), ("traceparent", PARENT)))
    assert context is not None
    assert format(trace.get_current_span(context).get_span_context().trace_id, "032x") == PARENT.split("-")[1]
    assert tracing.traceparent() == ""
    with tracing.joined(PARENT):
        assert tracing.traceparent() == PARENT  # passed on as received while nothing records spans
    assert tracing.traceparent() == ""
