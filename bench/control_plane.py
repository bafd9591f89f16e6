"""Control-plane benchmark: `.venv/bin/python bench/control_plane.py [--quick]`.

On the embedded stack with the engine's no-op backend and a fresh PostgreSQL
database (the tests' server, 127.0.0.1:5432), in one run:

1. throughput: jobs/s from the first CreateJob to the last job at status 70,
   for 2000 jobs, next to the engine alone (SubmitJob straight to it, same
   jobs) as the baseline: the ceiling the operator-service can reach. The
   engine and the operator-service run as their own processes, as deployed
   (`python -m services...`); the same with everything in this one process
   (one event loop, one GIL) is reported beside it;
2. propagation: engine emit (the change's time, stamped by the engine) to
   applied (the service's commit, when the change is published to watchers),
   p50/p99, with jobs created at a steady 1000 changes/s; the engine and the
   load (the CreateJob calls a provider would make) each in its own process,
   the operator-service in this one (where its commits are seen);
3. GetJob / ListJobs latency over gRPC with 1,000,000 jobs in the table,
   bulk-inserted with INSERT ... SELECT generate_series.

Prints a table and, as its last line, one JSON object. Not a test: figures
to report (targets: >= 500 jobs/s, propagation p99 <= 20 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc
import psycopg2

from bench.cpu import machine_busy_s
from c2d.engine.v1 import engine_pb2, engine_pb2_grpc
from c2d.operator.v1 import operator_pb2
from plumbing import auth
from plumbing.server import freeze_startup_heap
from services.operator_service import server as operator_server
from services.operator_service.domain import watching
from testkit.control_plane import (
    ENVIRONMENT,
    Operator,
    OperatorProcess,
    control_plane,
    operator_settings,
    query,
    wait_available,
    workflow,
)
from testkit.servers import free_ports
from testkit.stacks import fresh_postgres_database

CHANGES_PER_JOB = 6  # the no-op backend's 10, 20, 30, 40, 60, 70
LOW_RATE = 60.0  # changes/s: ten jobs a second


def fresh_database():
    return fresh_postgres_database("c2d_bench")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def bounded(calls: list[Callable[[], Awaitable[object]]], concurrency: int) -> None:
    queue = collections.deque(calls)

    async def worker() -> None:
        while queue:
            await queue.popleft()()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def wait_count(database_url: str, sql: str, target: int, timeout: float = 600) -> None:
    """Polls on one connection (a new one per poll would load the server it measures)."""
    connection = psycopg2.connect(database_url.replace("postgresql+psycopg2://", "postgresql://"))
    connection.autocommit = True
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with connection.cursor() as cur:
                cur.execute(sql)
                if cur.fetchone()[0] >= target:
                    return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"{sql} did not reach {target}")
    finally:
        connection.close()


# -- 1. throughput ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def engine_process(database_url: str, log_path: Path) -> AsyncIterator[int]:
    """The engine (no-op backend) as its own process; yields its port."""
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "C2D_ENGINE_ADDRESS": f"127.0.0.1:{port}",
        "C2D_ENGINE_DATABASE_URL": database_url,
        "C2D_ENGINE_BACKEND": "noop",
        "C2D_ENGINE_MAX_JOBS": "1000",
        "C2D_ENGINE_HEARTBEAT_S": "0.2",
        "C2D_SERVICE_TOKEN": auth.service_token(),
    }
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.operator_engine"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = engine_pb2_grpc.EngineServiceStub(channel)
        for _ in range(600):
            try:
                await stub.ListEnvironments(
                    engine_pb2.ListEnvironmentsRequest(), metadata=auth.bearer(auth.service_token())
                )
                break
            except grpc.aio.AioRpcError:
                if process.poll() is not None:
                    raise RuntimeError(f"the engine exited: see {log_path}") from None
                await asyncio.sleep(0.1)
        await channel.close()
        yield port
    finally:
        process.terminate()
        process.wait(30)


@contextlib.asynccontextmanager
async def processes(database_url: str) -> AsyncIterator[Operator]:
    """Engine and operator-service as their own processes; yields an operator client."""
    logs = Path(os.environ["C2D_DATA_DIR"])
    async with engine_process(database_url, logs / "engine.log") as engine_port:
        service = OperatorProcess(database_url, engine_port, logs / "operator.log")
        await service.start()
        operator = Operator(service.port)
        try:
            await wait_available(operator)
            yield operator
        finally:
            await operator.close()
            service.stop()


async def engine_alone(jobs: int, concurrency: int) -> float:
    """The baseline: the same jobs submitted straight to the engine."""
    with fresh_database() as url:
        async with engine_process(url, Path(os.environ["C2D_DATA_DIR"]) / "engine-alone.log") as port:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            stub = engine_pb2_grpc.EngineServiceStub(channel)
            metadata = auth.bearer(auth.service_token())
            flow = workflow()
            try:
                started = time.perf_counter()
                await bounded(
                    [
                        (
                            lambda: stub.SubmitJob(
                                engine_pb2.SubmitJobRequest(
                                    job_id=str(uuid.uuid4()), environment_id=ENVIRONMENT, workflow=flow
                                ),
                                metadata=metadata,
                            )
                        )
                        for _ in range(jobs)
                    ],
                    concurrency,
                )
                await wait_count(url, "SELECT count(*) FROM engine_jobs WHERE status = 70", jobs)
                return jobs / (time.perf_counter() - started)
            finally:
                await channel.close()


async def through_the_service(jobs: int, concurrency: int, one_process: bool) -> float:
    with fresh_database() as url:
        async with in_process(url) if one_process else processes(url) as operator:
            started = time.perf_counter()
            await bounded([operator.create for _ in range(jobs)], concurrency)
            await wait_count(url, "SELECT count(*) FROM jobs WHERE status = 70", jobs)
            return jobs / (time.perf_counter() - started)


@contextlib.asynccontextmanager
async def operator_in_process(database_url: str, engine_port: int) -> AsyncIterator[Operator]:
    running = await operator_server.start(operator_settings(database_url, engine_port))
    # As a deployed service does once it serves (serve_until_signalled): without
    # it a full collection walks this whole process, 118 ms with the loop stopped.
    freeze_startup_heap()
    operator = Operator(running.port)
    try:
        await wait_available(operator)
        yield operator
    finally:
        await operator.close()
        await running.stop(1)


@contextlib.asynccontextmanager
async def in_process(database_url: str) -> AsyncIterator[Operator]:
    async with control_plane(database_url) as plane:
        yield plane.operator


# -- 2. propagation ------------------------------------------------------------------------


class AppliedClock:
    """Instrumentation: when each applied change was published (right after its commit)."""

    def __init__(self) -> None:
        self.published: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
        self._original = watching.Broker.publish

    def __enter__(self) -> AppliedClock:
        original, published = self._original, self.published

        def publish(broker, jobs):  # type: ignore[no-untyped-def]
            now = time.time()
            jobs = list(jobs)
            for job in jobs:
                published[job.job_id].append((job.sequence, now))
            original(broker, jobs)

        watching.Broker.publish = publish  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        watching.Broker.publish = self._original  # type: ignore[method-assign]

    def applied_at(self, job_id: str, sequence: int) -> float:
        # A batch publishes each job once, with its latest sequence: earlier
        # changes of the job in that batch were committed at the same moment.
        marks = self.published[job_id]
        index = bisect.bisect_left(marks, (sequence, 0.0))
        return marks[index][1]


async def propagation(seconds: float, changes_per_s: float) -> tuple[list[float], float, float]:
    """(latencies in ms, the rate achieved, the share of the machine's cores busy meanwhile)."""
    jobs = int(seconds * changes_per_s / CHANGES_PER_JOB)
    # The engine runs in its own process and so does the load (CreateJob calls at
    # a steady rate, as the provider makes them); the operator-service in this
    # one, where AppliedClock can see its commits.
    with fresh_database() as url, AppliedClock() as clock:
        async with (
            engine_process(url, Path(os.environ["C2D_DATA_DIR"]) / "engine-propagation.log") as engine_port,
            operator_in_process(url, engine_port) as operator,
        ):
            load = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--load",
                str(operator.port),
                str(jobs),
                str(CHANGES_PER_JOB / changes_per_s),
                cwd=ROOT,
                env={**os.environ, "C2D_SERVICE_TOKEN": auth.service_token()},
                stdout=asyncio.subprocess.PIPE,
            )
            first_call = float((await load.stdout.readline()).decode())  # the load has started up
            busy, started = machine_busy_s(), time.monotonic()
            await load.communicate()
            if load.returncode != 0:
                raise RuntimeError("the load process failed")
            await wait_count(url, "SELECT count(*) FROM jobs WHERE status = 70", jobs)
            busy_share = (machine_busy_s() - busy) / (time.monotonic() - started) / (os.cpu_count() or 1)
            rate = jobs * CHANGES_PER_JOB / (time.time() - first_call)
        events = await asyncio.to_thread(
            query,
            url,
            "SELECT job_id, sequence, extract(epoch from time) FROM job_events WHERE engine_id = 'local'",
        )
    latencies = [(clock.applied_at(job_id, sequence) - float(emitted)) * 1000 for job_id, sequence, emitted in events]
    return latencies, rate, busy_share


async def steady_load(port: int, jobs: int, interval: float) -> None:
    """In its own process: one CreateJob every `interval` seconds, each at its
    slot, not after the previous answer."""
    operator = Operator(port)
    try:
        await wait_available(operator)
        print(time.time(), flush=True)  # when the load starts, for the parent's rate
        started = time.perf_counter()
        pending = []
        for i in range(jobs):
            delay = started + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(operator.create()))
        await asyncio.gather(*pending)
    finally:
        await operator.close()


# -- 3. reads with a million jobs -------------------------------------------------------------

BULK_INSERT = """
INSERT INTO jobs (job_id, request_id, owner, environment_id, engine_id, status, end_reason, error_code,
                  error_message, created_at, started_at, finished_at, workflow, dataset_dids, algorithm_did,
                  viewers, results, results_did, dispatched, sequence)
SELECT md5(i::text)::uuid::text, 'bulk-' || i, '0xowner' || (i %% 1000), 'local-cpu', 'local',
       CASE WHEN i %% 10 = 0 THEN 41 ELSE 70 END, CASE WHEN i %% 10 = 0 THEN 4 ELSE 1 END, '', '',
       now() - (i || ' seconds')::interval, now() - (i || ' seconds')::interval,
       now() - (i || ' seconds')::interval + interval '5 seconds', '\\x0a00'::bytea, '["did:op:bulk"]'::json,
       'did:op:algo', '[]'::json, '{"files": [], "storage": "local"}'::json, '', true, i
FROM generate_series(1, %(rows)s) AS i
"""


async def reads(rows: int, samples: int) -> dict[str, float]:
    with fresh_database() as url:
        async with control_plane(url) as plane:
            started = time.perf_counter()
            admin = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
            admin.autocommit = True
            with admin.cursor() as cur:
                await asyncio.to_thread(cur.execute, BULK_INSERT, {"rows": rows})
                await asyncio.to_thread(cur.execute, "ANALYZE jobs")
            admin.close()
            print(f"  bulk-inserted {rows:,} jobs in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            ids = [
                job_id for (job_id,) in query(url, f"SELECT job_id FROM jobs TABLESAMPLE SYSTEM (1) LIMIT {samples}")
            ]
            if len(ids) < samples:
                ids = [job_id for (job_id,) in query(url, f"SELECT job_id FROM jobs ORDER BY random() LIMIT {samples}")]
            stub, metadata = plane.operator.stub, plane.operator.metadata

            async def timed(call: Callable[[], Awaitable[object]]) -> float:
                t0 = time.perf_counter()
                await call()
                return (time.perf_counter() - t0) * 1000

            getjob = [
                await timed(lambda j=j: stub.GetJob(operator_pb2.GetJobRequest(job_id=j), metadata=metadata))
                for j in ids
            ]
            first = await stub.ListJobs(operator_pb2.ListJobsRequest(page_size=100), metadata=metadata)
            deep_token = first.next_page_token
            for _ in range(20):  # twenty pages in
                deep_token = (
                    await stub.ListJobs(
                        operator_pb2.ListJobsRequest(page_size=100, page_token=deep_token), metadata=metadata
                    )
                ).next_page_token
            shapes = {
                "list_newest_ms": operator_pb2.ListJobsRequest(page_size=100),
                "list_owner_ms": operator_pb2.ListJobsRequest(owner="0xowner7", page_size=100),
                "list_status_ms": operator_pb2.ListJobsRequest(statuses=[41], page_size=100),
                "list_deep_page_ms": operator_pb2.ListJobsRequest(page_size=100, page_token=deep_token),
            }
            figures = {
                "getjob_ms_at_1m_jobs": statistics.median(getjob),
                "getjob_p99_ms_at_1m_jobs": percentile(getjob, 99),
            }
            for name, request in shapes.items():
                times = [
                    await timed(lambda r=request: stub.ListJobs(r, metadata=metadata))
                    for _ in range(max(10, samples // 10))
                ]
                figures[name] = statistics.median(times)
            return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--load", nargs=3, metavar=("PORT", "JOBS", "INTERVAL_S"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        port, jobs, interval = args.load
        await steady_load(int(port), int(jobs), float(interval))
        return
    jobs, seconds, rows, samples = (200, 1.0, 20_000, 50) if args.quick else (2000, 5.0, 1_000_000, 500)
    concurrency = 64

    with tempfile.TemporaryDirectory() as data:
        os.environ["C2D_DATA_DIR"] = data
        os.environ.pop("C2D_SERVICE_TOKEN", None)
        import logging

        logging.basicConfig(level=logging.WARNING)
        print(f"control plane, no-op engine, PostgreSQL; {os.cpu_count()} cores (shared machine)", file=sys.stderr)
        baseline = await engine_alone(jobs, concurrency)
        print(f"  engine alone: {baseline:.0f} jobs/s", file=sys.stderr)
        throughput = await through_the_service(jobs, concurrency, one_process=False)
        print(f"  through the service: {throughput:.0f} jobs/s", file=sys.stderr)
        one_process = await through_the_service(jobs, concurrency, one_process=True)
        print(f"  through the service, all in one process: {one_process:.0f} jobs/s", file=sys.stderr)
        latencies, rate, busy = await propagation(seconds, 1000.0)
        print(f"  propagation: {len(latencies)} changes at {rate:.0f}/s", file=sys.stderr)
        # The same at a rate the engine sustains: the pipeline's own latency, with no queue.
        calm, calm_rate, calm_busy = await propagation(seconds, LOW_RATE)
        print(f"  propagation: {len(calm)} changes at {calm_rate:.0f}/s", file=sys.stderr)
        read_figures = await reads(rows, samples)

    figures = {
        "jobs": jobs,
        "jobs_per_s": round(throughput, 1),
        "engine_alone_jobs_per_s": round(baseline, 1),
        "jobs_per_s_one_process": round(one_process, 1),
        "propagation_changes": len(latencies),
        "propagation_rate_per_s": round(rate, 1),
        "propagation_p50_ms": round(percentile(latencies, 50), 2),
        "propagation_p99_ms": round(percentile(latencies, 99), 2),
        "propagation_machine_busy": round(busy, 2),
        "propagation_low_rate_per_s": round(calm_rate, 1),
        "propagation_low_rate_machine_busy": round(calm_busy, 2),
        "propagation_low_rate_p50_ms": round(percentile(calm, 50), 2),
        "propagation_low_rate_p99_ms": round(percentile(calm, 99), 2),
        "jobs_in_table": rows,
        **{k: round(v, 2) for k, v in read_figures.items()},
    }
    label = f"{rows:,} jobs"
    lines = [
        (
            "CreateJob -> 70 throughput",
            f"{figures['jobs_per_s']:.0f} jobs/s",
            ">= 500 jobs/s",
            f"engine alone {figures['engine_alone_jobs_per_s']:.0f} jobs/s",
        ),
        (
            "  the same, all in one process",
            f"{figures['jobs_per_s_one_process']:.0f} jobs/s",
            "",
            "one event loop, one GIL",
        ),
        (
            "propagation p50",
            f"{figures['propagation_p50_ms']:.1f} ms",
            "",
            f"{figures['propagation_changes']} changes at {figures['propagation_rate_per_s']:.0f}/s",
        ),
        (
            "propagation p99",
            f"{figures['propagation_p99_ms']:.1f} ms",
            "<= 20 ms",
            f"offered 1000 changes/s; machine {busy:.0%} busy",
        ),
        (
            "propagation p50 / p99, low rate",
            f"{figures['propagation_low_rate_p50_ms']:.1f} / {figures['propagation_low_rate_p99_ms']:.1f} ms",
            "",
            f"{figures['propagation_low_rate_per_s']:.0f} changes/s; machine {calm_busy:.0%} busy",
        ),
        (
            f"GetJob p50 / p99, {label}",
            f"{figures['getjob_ms_at_1m_jobs']:.2f} / {figures['getjob_p99_ms_at_1m_jobs']:.2f} ms",
            "",
            "",
        ),
        (f"ListJobs newest page, {label}", f"{figures['list_newest_ms']:.2f} ms", "", "100 jobs"),
        (f"ListJobs by owner, {label}", f"{figures['list_owner_ms']:.2f} ms", "", ""),
        (f"ListJobs by status, {label}", f"{figures['list_status_ms']:.2f} ms", "", ""),
        (f"ListJobs page 21, {label}", f"{figures['list_deep_page_ms']:.2f} ms", "", "keyset token"),
    ]
    print(f"{'measure':<36} {'value':>18}  {'target':<14} note")
    for name, value, target, note in lines:
        print(f"{name:<36} {value:>18}  {target:<14} {note}")
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
