"""Tracing on: `c2d up --processes` and `c2d demo` with the standard OTEL_*
variables pointed at an OTLP collector this test runs; the job is one trace,
with spans from the provider, the operator-service, the engine and both pods."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from testkit.servers import stop_process
from testkit.up import start_up, up_environment

REPO = Path(__file__).resolve().parents[2]
SERVICES = {"c2d-provider", "c2d-operator-service", "c2d-operator-engine", "c2d-pod_config", "c2d-pod_publish"}


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver: each span's trace id with its service's name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str]] = []  # (trace id, service.name, span name)

    async def Export(self, request, context):  # type: ignore[override]
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            service = attributes.get("service.name", "")
            for scope in resource_spans.scope_spans:
                self.spans.extend((span.trace_id.hex(), service, span.name) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def collector():
    receiver = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield receiver, port
    finally:
        await server.stop(None)


async def test_a_job_is_one_trace_across_the_servers_and_pods(collector, tmp_path):
    receiver, port = collector
    env = up_environment(
        tmp_path / "data",  # the demo serves its files on loopback, which it allows
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_BSP_SCHEDULE_DELAY="100",  # ms: spans leave soon after they end
    )
    # (in a thread: this loop serves the collector meanwhile)
    up = await asyncio.to_thread(start_up, env)
    try:
        demo = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "cli.main", "demo"],
            cwd=REPO,
            env={**env, "OTEL_TRACES_EXPORTER": "none"},  # the consumer sends no trace: StartCompute starts it
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "status 70" in demo.stdout

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            services_by_trace = defaultdict(set)
            for trace_id, service, _name in receiver.spans:
                services_by_trace[trace_id].add(service)
            job_traces = [t for t, s in services_by_trace.items() if "c2d-pod_config" in s]
            if job_traces and services_by_trace[job_traces[0]] >= SERVICES:
                break
            await asyncio.sleep(0.2)
        assert len(job_traces) == 1, dict(services_by_trace)
        job_trace = job_traces[0]
        assert services_by_trace[job_trace] == SERVICES
        names = {name for trace_id, _service, name in receiver.spans if trace_id == job_trace}
        assert "c2d.provider.v1.ProviderService/StartCompute" in names
        assert {"stage configure", "stage algorithm", "stage publish"} <= names
    finally:
        stop_process(up.process, grace=60.0)
