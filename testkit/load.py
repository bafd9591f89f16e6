"""Load on the stack of `c2d up --processes` (issue 19): many jobs submitted at
once by many consumers through the provider, with WatchJob streams open, each
server's RSS and open file descriptors read from /proc before and after.

Shared by bench/pressure.py (its `load` section) and tests/e2e/test_load.py.
The servers run the local backend (real pod_config, the algorithm in
bubblewrap, pod_publish) on a fresh PostgreSQL database; the jobs are the
demo's (a trusted algorithm averaging a small CSV), each with its own two
orders, signed by its consumer's key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import provider_pb2
from c2d_sdk import AsyncClient, ComputeRequest, PublishedAsset
from cli import demo
from plumbing.statuses import Status, is_terminal
from testkit.servers import free_ports, stop_process

REPO = Path(__file__).resolve().parents[1]
UP_TIMEOUT_S = 300.0  # each server imports for seconds on a loaded machine, and they start in turn
# A completed job's history on the local backend, as the operator-service records it.
LOCAL_PATH = [1, 10, 20, 30, 40, 60, 70]


@dataclass(frozen=True)
class Usage:
    """One server's resident memory and open file descriptors."""

    rss_kib: int
    fds: int


def usage(pid: int) -> Usage:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return Usage(rss, len(os.listdir(f"/proc/{pid}/fd")))


@dataclass
class UpStack:
    """`c2d up --processes` in a child process: the provider's address and each server's pid."""

    process: subprocess.Popen[bytes]
    provider_address: str
    pids: dict[str, int]
    log: Path

    def usage(self) -> dict[str, Usage]:
        return {name: usage(pid) for name, pid in self.pids.items()}


@contextlib.contextmanager
def up_processes(
    data_dir: Path, database_url: str, max_jobs: int, wrap: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> Iterator[UpStack]:
    """The stack, one process per server, local backend; stopped with SIGTERM (as Ctrl-C) at the end.
    Free ports are only free when picked (other test processes pick too): a start that
    finds one taken is tried again on others. ``wrap``: a command that execs the one it is
    given after it (e.g. into a mount namespace); ``env``: more of the servers' settings."""
    for attempt in range(PORT_ATTEMPTS):
        try:
            process, provider, log = _start_up(data_dir, database_url, max_jobs, wrap, env or {})
            break
        except PortTaken:
            if attempt == PORT_ATTEMPTS - 1:
                raise
    try:
        said = log.read_text(errors="replace")
        pids = {m[1]: int(m[3]) for m in re.finditer(r"^\s+(\S+)\s+(\S+)\s+\(pid (\d+)\)", said, re.M)}
        yield UpStack(process, f"127.0.0.1:{provider}", pids, log)
    finally:
        stop_process(process, grace=60.0)  # SIGTERM, as Ctrl-C: the engine's grace, then its siblings


PORT_ATTEMPTS = 3


class PortTaken(RuntimeError):
    pass


def _start_up(
    data_dir: Path, database_url: str, max_jobs: int, wrap: Sequence[str], more: Mapping[str, str]
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`c2d up --processes` started and serving: the process, the provider's port, its log."""
    provider, operator, engine = free_ports(3)
    env = {
        **os.environ,
        "C2D_DATA_DIR": str(data_dir),
        "C2D_PROVIDER_ADDRESS": f"127.0.0.1:{provider}",
        "C2D_OPERATOR_ADDRESS": f"127.0.0.1:{operator}",
        "C2D_ENGINE_ADDRESS": f"127.0.0.1:{engine}",
        "C2D_PROVIDER_DATABASE_URL": database_url,
        "C2D_OPERATOR_DATABASE_URL": database_url,
        "C2D_ENGINE_DATABASE_URL": database_url,
        "C2D_ENGINE_BACKEND": "local",
        "C2D_ENGINE_MAX_JOBS": str(max_jobs),
        "C2D_LOG_LEVEL": "WARNING",
        "XDG_CONFIG_HOME": str(data_dir / "config"),
        # no /metrics ports: their defaults are fixed, and other stacks may run beside this one
        "C2D_PROVIDER_METRICS_ADDRESS": "",
        "C2D_OPERATOR_METRICS_ADDRESS": "",
        "C2D_ENGINE_METRICS_ADDRESS": "",
        **more,
    }
    env.pop("C2D_SERVICE_TOKEN", None)  # the servers share the data dir's token
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "up.log"
    # A file, not a pipe: nobody reads a pipe during the load, and a full one would block the servers.
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*wrap, sys.executable, "-m", "cli.main", "up", "--processes"], cwd=REPO, env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + UP_TIMEOUT_S
    while "stops them" not in (said := log.read_text(errors="replace")):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process, grace=10.0)
            if "the port is in use" in said:
                raise PortTaken(said[-4000:])
            raise RuntimeError(f"c2d up --processes did not come up:\n{said[-4000:]}")
        time.sleep(0.1)
    return process, provider, log


@dataclass
class Watched:
    """What one WatchJob stream saw: (sequence, status) per update."""

    job_id: str
    updates: list[tuple[int, int]] = field(default_factory=list)
    error: str = ""


@dataclass
class LoadResult:
    submitted: int = 0
    completed: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # job id -> status and reason, of those not completed
    watched: list[Watched] = field(default_factory=list)
    before: dict[str, Usage] = field(default_factory=dict)
    after: dict[str, Usage] = field(default_factory=dict)
    seconds: float = 0.0
    warmup_jobs: int = 0
    server_errors: list[str] = field(default_factory=list)  # the servers' ERROR lines (their log goes with the run)

    def out_of_order(self, expected: list[int] = LOCAL_PATH) -> list[Watched]:
        """The watchers that missed a transition, saw one twice or out of order, or broke off."""
        bad = []
        for w in self.watched:
            sequences = [s for s, _ in w.updates]
            if w.error or sequences != sorted(set(sequences)) or [s for _, s in w.updates] != expected:
                bad.append(w)
        return bad

    def rss_growth_mib(self) -> float:
        return max((self.after[n].rss_kib - self.before[n].rss_kib) / 1024 for n in self.before)

    def fd_growth(self) -> int:
        return max(self.after[n].fds - self.before[n].fds for n in self.before)


class Consumer:
    """One consumer: its own key, its own channel, its orders bought ahead."""

    def __init__(self, address: str, index: int) -> None:
        self.client = AsyncClient(address, "0x" + f"{index + 0x1000:064x}")
        self.specs: list[provider_pb2.ComputeSpec] = []

    async def buy(self, spec: provider_pb2.ComputeSpec, jobs: int) -> None:
        """Orders both assets for each of ``jobs`` jobs."""
        for _ in range(jobs):
            own = provider_pb2.ComputeSpec()
            own.CopyFrom(spec)
            own.dataset.order_id = await self.client.order(spec.dataset.did, spec.dataset.service_id)
            own.algorithm_asset.order_id = await self.client.order(
                spec.algorithm_asset.did, spec.algorithm_asset.service_id
            )
            self.specs.append(own)


async def _watch(client: AsyncClient, job_id: str) -> Watched:
    watched = Watched(job_id)
    # after_sequence=1: replay the job's whole history (its creation included), then follow it live
    request = client.signed("WatchJob", provider_pb2.WatchJobRequest(job_id=job_id, after_sequence=1))
    try:
        async for update in client.compute.WatchJob(request):
            watched.updates.append((update.job.sequence, update.job.status))
    except grpc.aio.AioRpcError as exc:  # a broken stream is a finding, reported with the watcher
        watched.error = f"{exc.code().name}: {exc.details()}"[:300]
    return watched


async def _wait_all_ended(consumers: list[Consumer], job_ids: set[str], timeout_s: float) -> dict[str, common_pb2.Job]:
    """Each job's last state once all have ended (polled with ListJobs, one call per consumer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pages = await asyncio.gather(*(c.client.list_jobs() for c in consumers))
        jobs = {job.job_id: job for page in pages for job in page if job.job_id in job_ids}
        if len(jobs) == len(job_ids) and all(is_terminal(job.status) for job in jobs.values()):
            return dict(jobs)
        if time.monotonic() > deadline:
            open_jobs = len([j for j in jobs.values() if not is_terminal(j.status)]) + len(job_ids) - len(jobs)
            raise TimeoutError(f"{open_jobs} of {len(job_ids)} jobs had not ended after {timeout_s:.0f} s")
        await asyncio.sleep(1.0)


async def _settled(stack: UpStack, quiet_s: float = 3.0, timeout_s: float = 60.0) -> dict[str, Usage]:
    """Each server's usage once its fd counts held still for ``quiet_s`` (idle connections close, pods exit)."""
    last = stack.usage()
    still_since = time.monotonic()
    deadline = still_since + timeout_s
    while time.monotonic() - still_since < quiet_s and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = stack.usage()
        if {n: u.fds for n, u in now.items()} != {n: u.fds for n, u in last.items()}:
            still_since = time.monotonic()
        last = now
    return last


async def run_jobs(
    consumers: list[Consumer], spec: provider_pb2.ComputeSpec, jobs: int, watchers: int
) -> tuple[list[str], list[Watched]]:
    """Submits ``jobs`` jobs at once (each consumer its share, one after another, all
    consumers together); a WatchJob stream opens on each of the first ``watchers`` as it starts."""
    per_client = [jobs // len(consumers) + (1 if i < jobs % len(consumers) else 0) for i in range(len(consumers))]
    await asyncio.gather(*(c.buy(spec, n) for c, n in zip(consumers, per_client, strict=True)))
    watch_tasks: list[asyncio.Task[Watched]] = []
    job_ids: list[str] = []

    async def submit(consumer: Consumer) -> None:
        bought, consumer.specs = consumer.specs, []
        for own in bought:
            response = await consumer.client.start(own)
            job_ids.append(response.job_id)
            if len(watch_tasks) < watchers:
                watch_tasks.append(asyncio.create_task(_watch(consumer.client, response.job_id)))

    await asyncio.gather(*(submit(c) for c in consumers))
    return job_ids, list(await asyncio.gather(*watch_tasks))


async def publish_demo(
    publisher: AsyncClient, files: Path, algorithm_source: str = demo.ALGORITHM
) -> tuple[PublishedAsset, PublishedAsset]:
    """The demo's dataset and its trusted algorithm (``algorithm_source``), published once the
    engine's environment is available; their files are written to ``files``."""
    (files / "mean.py").write_text(algorithm_source)
    (files / "weather.csv").write_text(demo.CSV)
    for _ in range(600):  # the operator learns the environments from the engine's first heartbeat
        if any(e.available for e in await publisher.environments()):
            break
        await asyncio.sleep(0.2)
    described = demo.descriptions()
    algorithm = await publisher.publish_asset(described["algorithm"], files)
    described["dataset"]["compute"]["trusted_algorithms"] = [
        {"did": algorithm.did, "files_checksum": algorithm.files_checksum}
    ]
    return await publisher.publish_asset(described["dataset"], files), algorithm


async def run_load(
    data_dir: Path,
    database_url: str,
    jobs: int,
    clients: int,
    watchers: int,
    warmup: int,
    max_jobs: int = 4,
    timeout_s: float = 3600.0,
    say: Callable[[str], object] = lambda _: None,
) -> LoadResult:
    """The whole load: a warm-up batch (not measured: the allocator and the
    connection pools grow on the first jobs), the usage sample, the load, the
    wait until every job ended and the servers settled, the second sample."""
    result = LoadResult(warmup_jobs=warmup)
    with up_processes(data_dir, database_url, max_jobs) as stack, tempfile.TemporaryDirectory() as files:
        async with AsyncClient(stack.provider_address, "0x" + "41" * 32) as publisher:
            dataset, algorithm = await publish_demo(publisher, Path(files))
            consumers = [Consumer(stack.provider_address, i) for i in range(clients)]
            try:
                for consumer in consumers:
                    for asset in (dataset, algorithm):
                        await publisher.mint(asset.datatoken, consumer.client.address, jobs + warmup)
                spec = await consumers[0].client.compute_spec(
                    ComputeRequest(datasets=[dataset.did], algorithm=algorithm.did)
                )
                say(f"warm-up: {warmup} jobs ...")
                warm_ids, _ = await run_jobs(consumers, spec, warmup, 0)
                await _wait_all_ended(consumers, set(warm_ids), timeout_s)
                result.before = await _settled(stack)
                say(f"load: {jobs} jobs from {clients} clients, {watchers} watchers ...")
                started = time.monotonic()
                job_ids, result.watched = await run_jobs(consumers, spec, jobs, watchers)
                result.submitted = len(job_ids)
                ended = await _wait_all_ended(consumers, set(job_ids), timeout_s)
                result.seconds = time.monotonic() - started
                for job_id, job in ended.items():
                    if job.status == Status.FINISHED and job.end_reason == common_pb2.END_REASON_COMPLETED:
                        result.completed += 1
                    else:
                        result.failed[job_id] = f"{job.status} {job.error_message}"
                result.after = await _settled(stack)
            finally:
                await asyncio.gather(*(c.client.close() for c in consumers))
                result.server_errors = [
                    line[:2000] for line in stack.log.read_text(errors="replace").splitlines() if '"ERROR"' in line
                ]
    return result
