"""Every server's /metrics, moved by a real job on the local backend: the RPC
counters by status code, signature checks, jobs by status, the stages, the
bytes staged and published, the queue and the state stream; and every series
the Grafana dashboard in deploy/ queries is one they serve."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import grpc

from c2d.provider.v1 import provider_pb2
from cli import demo
from plumbing.statuses import Status
from services.operator_service import metrics as operator_metrics
from testkit.market import open_market, refused
from tests.observability.scraping import rpcs, scrape, value

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "c2d-dashboard.json"
PROVIDER = "c2d.provider.v1.ProviderService"
OPERATOR = "c2d.operator.v1.OperatorService"
ENGINE = "c2d.engine.v1.EngineService"
JOB_AGENT = "c2d.engine.v1.JobAgentService"


async def jobs_in(port: int | None, status: int, at_least: float) -> float:
    """The operator's jobs-by-status gauge for `status`, once it shows at least
    `at_least` (it is counted at most once per JOBS_COUNT_INTERVAL_S)."""
    deadline = time.monotonic() + 3 * operator_metrics.JOBS_COUNT_INTERVAL_S
    while (count := value(await scrape(port), "c2d_jobs", status=str(status))) < at_least:
        assert time.monotonic() < deadline, f"c2d_jobs{{status={status}}} stayed at {count}"
        await asyncio.sleep(0.5)
    return count


async def test_a_job_moves_every_servers_metrics(data_dir):
    async with open_market(backend="local") as market:
        stack = market.stack
        ports = {"provider": stack.provider.metrics_port, "operator": stack.operator.metrics_port}
        ports["engine"] = stack.engine.metrics_port
        assert len(set(ports.values())) == 3, ports  # a port of its own for each server
        before = {name: await scrape(port) for name, port in ports.items()}
        jobs_done_before = value(before["operator"], "c2d_jobs", status="70")

        job_id = await market.start_job()
        job = await market.finished(job_id)
        assert job.status == Status.FINISHED, job

        # A request whose signature no longer covers its fields is refused and counted as such.
        dataset, dataset_order, algorithm, algorithm_order = await market.ready_job()
        forged = market.consumer.signed(
            "StartCompute",
            provider_pb2.StartComputeRequest(spec=market.spec(dataset, dataset_order, algorithm, algorithm_order)),
        )
        forged.spec.environment_id = "elsewhere"
        refusal = await refused(market.consumer.compute.StartCompute(forged))
        assert refusal.code() != grpc.StatusCode.OK

        provider = await scrape(ports["provider"])
        assert (
            rpcs(provider, PROVIDER, "StartCompute", "OK")
            == rpcs(before["provider"], PROVIDER, "StartCompute", "OK") + 1
        )
        refused_code = refusal.code().name
        assert rpcs(provider, PROVIDER, "StartCompute", refused_code) == (
            rpcs(before["provider"], PROVIDER, "StartCompute", refused_code) + 1
        )
        latency = value(
            provider,
            "grpc_server_handling_seconds_count",
            grpc_service=PROVIDER,
            grpc_method="StartCompute",
            grpc_code="OK",
        )
        assert latency == rpcs(provider, PROVIDER, "StartCompute", "OK")
        assert value(provider, "c2d_signature_checks_total", outcome="valid") > value(
            before["provider"], "c2d_signature_checks_total", outcome="valid"
        )
        assert value(provider, "c2d_signature_checks_total", outcome="signature_invalid") == (
            value(before["provider"], "c2d_signature_checks_total", outcome="signature_invalid") + 1
        )
        assert value(provider, "process_resident_memory_bytes") > 0

        assert await jobs_in(ports["operator"], 70, jobs_done_before + 1) == jobs_done_before + 1
        operator = await scrape(ports["operator"])
        assert rpcs(operator, OPERATOR, "CreateJob", "OK") >= 1
        emitted = value(operator, "c2d_engine_stream_emitted_sequence", engine="local")
        assert emitted >= len([10, 20, 30, 40, 60, 70])  # every change the engine made to the job
        assert value(operator, "c2d_engine_stream_applied_sequence", engine="local") == emitted
        assert value(operator, "c2d_engine_stream_lag", engine="local") == 0

        engine = await scrape(ports["engine"])
        for stage in ("configure", "algorithm", "publish"):
            count = "c2d_engine_stage_duration_seconds_count"
            assert value(engine, count, stage=stage, outcome="succeeded") == (
                value(before["engine"], count, stage=stage, outcome="succeeded") + 1
            ), stage
            assert value(engine, "c2d_engine_stage_duration_seconds_sum", stage=stage, outcome="succeeded") > 0
        assert rpcs(engine, ENGINE, "SubmitJobs", "OK") >= 1
        assert rpcs(engine, JOB_AGENT, "ReportProgress", "OK") >= 1
        published = sum(f.size for f in job.results.files)
        assert published > 0
        assert value(engine, "c2d_engine_published_bytes_total") == published
        # pod_config staged the market's dataset and algorithm files
        assert value(engine, "c2d_engine_staged_bytes_total") == len(demo.CSV) + len(demo.ALGORITHM)
        assert value(engine, "c2d_engine_queued_jobs", environment=market.environment_id) == 0
        assert value(engine, "c2d_engine_running_jobs", environment=market.environment_id) == 0
        assert value(engine, "c2d_engine_last_sequence") == emitted

        served = {name for samples in (provider, operator, engine) for name, _labels in samples}
        assert dashboard_metrics() <= served, dashboard_metrics() - served


def dashboard_metrics() -> set[str]:
    """Every series the Grafana dashboard in deploy/ queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs
    return {name for expr in exprs for name in re.findall(r"\b(?:c2d|grpc_server|process)_[a-z_]+\b", expr)}
