"""Local-backend job latency and throughput: `.venv/bin/python bench/local_jobs.py [--quick]`.

On the embedded engine (in this process, SQLite store, local backend: real
pod_config and pod_publish, the algorithm in bubblewrap with cgroup limits):

1. a trivial job (copies its input to its output), SubmitJob -> status 70 as
   seen on the state stream, p50 over N jobs run one after the other, against
   the bare run of the same algorithm (`python3 algo.py` with the same files),
   one bare run between two jobs so both see the same load on a shared machine;
2. M trivial jobs submitted at once: sustained jobs/s (max_jobs 8 by default:
   on 2 cores a job mostly waits on process starts and RPC round trips, and 4 to
   16 measured alike; more only adds contention);
   next to the bare run made the same way (M runs, max_jobs at a time, no
   engine, no sandbox): the most any engine could reach on this machine;
3. the sandbox's start overhead alone (/bin/true through SandboxRun vs a bare
   subprocess); and start -> outcome run in the engine's process against
   under the per-job monitor the engine now uses (so a run outlives the
   engine: backends/local/monitor.py), its idle monitor given a second to be
   ready, as it is between two jobs.

(1) and (2) run with both pod launchers, `forkserver` (the default: pods forked
from a pre-imported helper) and `subprocess` (a fresh interpreter per stage, as
before), so the table shows before and after. The last line is one JSON object.
A shared machine makes every figure noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu import machine_busy_s
from c2d.common.v1 import common_pb2
from c2d.engine.v1 import engine_pb2, engine_pb2_grpc
from plumbing import auth
from services.operator_engine import server
from services.operator_engine.backends.local.monitor import MonitorLauncher
from services.operator_engine.backends.local.sandbox import SandboxLimits, SandboxRun, SandboxSpec, detect_capabilities
from services.operator_engine.settings import EngineSettings

ALGORITHM = """\
import json, os, shutil
did = json.loads(os.environ["DIDS"])[0]
shutil.copy(os.path.join(os.environ["INPUTS"], did, "0"), os.path.join(os.environ["OUTPUTS"], "copy"))
"""
DATASET_DID = "did:op:" + "cd" * 32
DATASET = "city,temperature\nOslo,4.5\nLisbon,18.25\n"
LAUNCHERS = ("forkserver", "subprocess")


def trivial_workflow() -> common_pb2.Workflow:
    return common_pb2.Workflow(
        datasets=[
            common_pb2.WorkflowAsset(
                did=DATASET_DID, files=[common_pb2.FileLocation(type="raw", content=DATASET)], ddo_json="{}"
            )
        ],
        raw_algorithm=ALGORITHM,
        container=common_pb2.AlgorithmContainer(entrypoint="python3 $ALGO", image="python"),
    )


class BareRun:
    """`python3 algo.py` with the same files and variables, no engine."""

    def __init__(self, root: Path) -> None:
        did = DATASET_DID.removeprefix("did:op:")
        (root / "inputs" / did).mkdir(parents=True)
        (root / "inputs" / did / "0").write_text(DATASET)
        (root / "outputs").mkdir()
        (root / "algo.py").write_text(ALGORITHM)
        self.argv = ["python3", str(root / "algo.py")]
        self.env = {
            "PATH": "/usr/bin:/bin",
            "DIDS": json.dumps([did]),
            "INPUTS": str(root / "inputs"),
            "OUTPUTS": str(root / "outputs"),
        }

    def __call__(self) -> float:
        started = time.monotonic()
        subprocess.run(self.argv, env=self.env, check=True)
        return time.monotonic() - started


class Engine:
    """The engine in this process and one state-stream subscriber resolving per-job futures."""

    def __init__(self, root: Path, launcher: str, max_jobs: int) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.config = EngineSettings(
            address="127.0.0.1:0",
            metrics_address="127.0.0.1:0",  # RPCs measured, as `c2d up` runs them
            database_url=f"sqlite:///{root}/engine-{launcher}.db",
            workspaces_dir=str(root / f"workspaces-{launcher}"),
            max_jobs=max_jobs,
            pod_launcher=launcher,
        )
        self.finished: dict[str, asyncio.Future[engine_pb2.StateChange]] = {}

    async def __aenter__(self) -> Engine:
        import grpc

        self.running = await server.start(self.config)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.running.port}")
        self.stub = engine_pb2_grpc.EngineServiceStub(self.channel)
        self.metadata = auth.bearer(auth.service_token())
        self.follower = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.follower.cancel()
        await self.channel.close()
        await self.running.stop(1)

    async def _follow(self) -> None:
        async for event in self.stub.StreamStateChanges(engine_pb2.StreamStateChangesRequest(), metadata=self.metadata):
            for change in event.changes.changes:
                if change.status in (41, 42, 31, 32, 61, 62, 70):
                    future = self.finished.get(change.job_id)
                    if future is not None and not future.done():
                        future.set_result(change)

    async def run_job(self) -> float:
        job_id = str(uuid.uuid4())
        self.finished[job_id] = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        await self.stub.SubmitJob(
            engine_pb2.SubmitJobRequest(
                job_id=job_id, environment_id=self.config.environment_id, workflow=trivial_workflow()
            ),
            metadata=self.metadata,
        )
        end = await asyncio.wait_for(self.finished[job_id], 600)
        if end.status != 70:
            admin = Path(self.config.workspaces_dir) / job_id / "admin"
            logs = "".join(f"\n--- {p.name}\n" + p.read_text()[-2000:] for p in sorted(admin.glob("*.log")))
            raise RuntimeError(f"job {job_id} ended with {end.status}: {end.error_message}{logs}")
        return time.monotonic() - started


async def latency(root: Path, launcher: str, n: int, bare: BareRun) -> tuple[list[float], list[float]]:
    """n jobs one after the other, each followed by one bare run: (job times, bare times)."""
    async with Engine(root, launcher, max_jobs=2) as engine:
        await engine.run_job()  # warm-up: the fork server starts on first use
        bare()
        jobs, bares = [], []
        for _ in range(n):
            jobs.append(await engine.run_job())
            bares.append(bare())
        return jobs, bares


async def throughput(root: Path, launcher: str, n: int, max_jobs: int) -> tuple[float, float]:
    """(jobs/s, the machine's busy CPU-seconds per job)."""
    async with Engine(root, launcher, max_jobs=max_jobs) as engine:
        await engine.run_job()
        started, cpu = time.monotonic(), machine_busy_s()
        await asyncio.gather(*(engine.run_job() for _ in range(n)))
        return n / (time.monotonic() - started), (machine_busy_s() - cpu) / n


async def bare_burst(bare: BareRun, n: int, at_once: int) -> tuple[float, float]:
    """The bare run n times, at_once at a time, with no engine and no sandbox:
    the ceiling of any engine's jobs/s on this machine. (runs/s, CPU-s per run)."""
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            process = await asyncio.create_subprocess_exec(*bare.argv, env=bare.env)
            if await process.wait() != 0:
                raise RuntimeError("the bare run failed")

    started, cpu = time.monotonic(), machine_busy_s()
    await asyncio.gather(*(worker() for _ in range(at_once)))
    return n / (time.monotonic() - started), (machine_busy_s() - cpu) / n


async def sandbox_overhead(n: int) -> tuple[float, float, float, float]:
    from bench.sandbox_overhead import bare, through_sandbox

    detect_capabilities()
    limits = SandboxLimits(
        wall_timeout_s=10, memory_bytes=256 << 20, cpu_cores=1, max_processes=32, disk_quota_bytes=1 << 30
    )
    with tempfile.TemporaryDirectory() as tmp:
        plain = statistics.median([await bare() for _ in range(n)])
        boxed = statistics.median([(await through_sandbox(Path(tmp), True, limits))[0] for _ in range(n)])
        in_engine = statistics.median([await to_outcome(Path(tmp), limits) for _ in range(n)])
        monitored = statistics.median(await through_monitor(Path(tmp), limits, n))
    return plain, boxed, in_engine, monitored


async def to_outcome(root: Path, limits: SandboxLimits) -> float:
    """/bin/true through SandboxRun in this process: from the start to its outcome (the
    log drained, the leftovers killed), the baseline of through_monitor."""
    spec = SandboxSpec("bench", root / "ws", ("/bin/true",), {}, limits=limits)
    started = time.monotonic()
    run = await SandboxRun.start(spec)
    await run.outcome()
    took = time.monotonic() - started
    await run.wait()
    return took


async def through_monitor(root: Path, limits: SandboxLimits, n: int) -> list[float]:
    """/bin/true through MonitorLauncher: from the start to the outcome the engine reads."""
    monitors, times = MonitorLauncher(), []
    try:
        for i in range(n + 1):  # the first spawns its monitor cold: not counted
            await asyncio.sleep(1.0)
            spec = SandboxSpec("bench", root / "ws", ("/bin/true",), {}, limits=limits)
            started = time.monotonic()
            run = monitors.start(spec, root / f"run-{i}" / "monitor")
            outcome = await run.outcome()
            assert outcome.exit_code == 0, outcome
            if i:
                times.append(time.monotonic() - started)
            await run.reap()
    finally:
        monitors.close()
    return times


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--max-jobs", type=int, default=8, help="max_jobs for the throughput run")
    args = parser.parse_args()
    latency_n, before_n, burst, before_burst, sandbox_n = (5, 3, 20, 6, 5) if args.quick else (50, 20, 500, 40, 30)

    with tempfile.TemporaryDirectory(prefix="c2d-bench-") as tmp:
        root = Path(tmp)
        os.environ["C2D_DATA_DIR"] = str(root / "data")
        os.environ.setdefault("C2D_LOG_LEVEL", "WARNING")
        bare_run = BareRun(root / "bare")
        e2e, bare = {}, {}  # per launcher: each against the bare runs made beside its own jobs
        for launcher, n in zip(LAUNCHERS, (latency_n, before_n), strict=False):
            jobs, bare_times = await latency(root / f"lat-{launcher}", launcher, n, bare_run)
            e2e[launcher], bare[launcher] = statistics.median(jobs), statistics.median(bare_times)
        bursts = {
            launcher: await throughput(root / f"burst-{launcher}", launcher, n, args.max_jobs)
            for launcher, n in zip(LAUNCHERS, (burst, before_burst), strict=False)
        }
        rate = {launcher: jobs_per_s for launcher, (jobs_per_s, _) in bursts.items()}
        bare_rate, bare_cpu = await bare_burst(bare_run, burst, args.max_jobs)
        plain_start, sandbox_start, in_engine, monitored_start = await sandbox_overhead(sandbox_n)

    print(f"trivial job (copy input to output), {os.cpu_count()} cores, SQLite store, local backend + bubblewrap")
    print(f"{'':44s} {'forkserver':>12s} {'subprocess':>12s}")
    print(f"{'bare python3 algo.py, p50 ms':44s} {ms(bare['forkserver']):12.1f} {ms(bare['subprocess']):12.1f}")
    print(f"{'submit -> 70, p50 ms':44s} {ms(e2e['forkserver']):12.1f} {ms(e2e['subprocess']):12.1f}")
    print(
        f"{'  x bare':44s} {e2e['forkserver'] / bare['forkserver']:12.1f} "
        f"{e2e['subprocess'] / bare['subprocess']:12.1f}"
    )
    print(f"{'jobs/s, jobs submitted at once':44s} {rate['forkserver']:12.1f} {rate['subprocess']:12.1f}")
    print(
        f"{'  (jobs in the burst; max_jobs)':44s} "
        f"{burst:>8d}; {args.max_jobs:<2d} {before_burst:>8d}; {args.max_jobs:<2d}"
    )
    print(f"{'  machine CPU ms per job':44s} {ms(bursts['forkserver'][1]):12.1f} {ms(bursts['subprocess'][1]):12.1f}")
    print(
        f"{'  x bare burst (jobs_over_bare_burst)':44s} {rate['forkserver'] / bare_rate:12.2f} "
        f"{rate['subprocess'] / bare_rate:12.2f}"
    )
    print(
        f"bare python3 algo.py, {burst} runs {args.max_jobs} at a time, no engine: {bare_rate:.1f} runs/s, "
        f"{ms(bare_cpu)} machine CPU ms per run (the most any engine could reach here)"
    )
    print(
        f"/bin/true: bare {ms(plain_start)} ms, through the sandbox {ms(sandbox_start)} ms "
        f"(start overhead {ms(sandbox_start - plain_start)} ms)"
    )
    print(
        f"/bin/true, start -> outcome: in the engine's process {ms(in_engine)} ms, under its own monitor "
        f"{ms(monitored_start)} ms (the monitor's cost {ms(monitored_start - in_engine)} ms)"
    )
    print(
        json.dumps(
            {
                "e2e_p50_ms": ms(e2e["forkserver"]),
                "bare_p50_ms": ms(bare["forkserver"]),
                "e2e_over_bare": round(e2e["forkserver"] / bare["forkserver"], 2),
                "jobs_per_s": round(rate["forkserver"], 1),
                "jobs_over_bare_burst": round(rate["forkserver"] / bare_rate, 2),
                "machine_cpu_ms_per_job": ms(bursts["forkserver"][1]),
                "bare_burst_runs_per_s": round(bare_rate, 1),
                "bare_machine_cpu_ms_per_run": ms(bare_cpu),
                "sandbox_start_ms": ms(sandbox_start - plain_start),
                "monitor_cost_ms": ms(monitored_start - in_engine),
                "e2e_p50_ms_subprocess_pods": ms(e2e["subprocess"]),
                "jobs_per_s_subprocess_pods": round(rate["subprocess"], 1),
                "jobs_in_burst": burst,
                "max_jobs": args.max_jobs,
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
