"""A client's trace id on the log lines of the job it started: the engine's
and pod_config's, as JSON objects one a line, tracing off (the servers pass
the client's trace context on without recording spans)."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from c2d.provider.v1 import provider_pb2
from plumbing import logs
from plumbing.statuses import Status
from testkit.market import open_market


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The in-process servers' log lines, formatted as they are written (the
    job and trace ids live in the writer's context)."""
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def parsed(text: str) -> list[dict]:
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    for entry in entries:
        assert {"time", "level", "logger", "component", "message"} <= entry.keys(), entry
    return entries


async def test_the_client_trace_id_is_on_the_engine_and_pod_config_lines_of_its_job(data_dir, json_log):
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    async with open_market(backend="local") as market:
        dataset, dataset_order, algorithm, algorithm_order = await market.ready_job()
        request = provider_pb2.StartComputeRequest(spec=market.spec(dataset, dataset_order, algorithm, algorithm_order))
        response = await market.consumer.compute.StartCompute(
            market.consumer.signed("StartCompute", request), metadata=(("traceparent", traceparent),)
        )
        job_id = response.job_id
        assert (await market.finished(job_id)).status == Status.FINISHED

    entries = parsed(json_log.getvalue())  # every line is one JSON object
    of_job = [e for e in entries if e.get("job_id") == job_id]
    engine = [e for e in of_job if e["component"] == "operator-engine"]
    assert engine, "no engine line names the job"
    assert all(e["trace_id"] == trace_id for e in engine), engine
    assert any("ended: status 70" in e["message"] for e in engine), engine
    provider = [e for e in of_job if e["component"] == "provider"]
    assert provider and all(e["trace_id"] == trace_id for e in provider), provider
    # Other jobs' lines (the market's set-up made none) never carry this trace.
    assert all(e.get("job_id") == job_id for e in entries if e.get("trace_id") == trace_id)

    configure_log = Path(data_dir) / "workspaces" / job_id / "admin" / "configure.log"
    pod_config = parsed(configure_log.read_text())
    assert pod_config, "pod_config wrote nothing"
    assert all(e["component"] == "pod_config" and e["job_id"] == job_id for e in pod_config), pod_config
    assert all(e["trace_id"] == trace_id for e in pod_config), pod_config
    assert any("staging ended" in e["message"] for e in pod_config), pod_config
