"""Fault injection on a running stack (issue 19): real jobs through `c2d up
--processes`, one fault at a chosen or random moment, then the invariants.

A trial is a seed: `plan(seed)` (random.Random(seed)) picks the fault, the
moment it strikes and the number of jobs, so a failing trial replays with
`bench/pressure.py --only faults --seed S --trials 1`. The faults are real:

- kill -9 of the operator-engine, the operator-service or the provider (the
  `c2d up` parent starts them again, with its backoff), or of a job's "pod"
  (the process of the stage it is in: pod_config, the sandboxed algorithm,
  pod_publish);
- an immediate (crash) restart of PostgreSQL: a private server of the
  harness's own (`PrivatePostgres`), never the machine's shared one;
- the state stream cut: the operator-service's TCP connections to the engine
  reset by the kernel (`ss -K` on their exact four-tuples);
- the results storage full: the local results directory is a small tmpfs in
  a mount namespace of the stack's own, filled to the last byte;
- a commit's reply lost: the stack reaches PostgreSQL through a proxy
  (testkit.pg_proxy) which, armed, lets the next 1-3 COMMITs (of any server)
  land and closes their connections before the reply, so the server cannot
  tell whether its transaction committed.

Then, once the jobs settled, the invariants (each a pure function over rows
or observations, so a test can feed it a violating history):

- `check_progress`: every job is terminal, or still progressing;
  `check_endings`: one that failed says why (an error code and a message);
- `check_history`: the engine's event log against the operator-service's
  history: nothing lost, nothing applied twice, nothing out of order;
- `check_orders`: no order consumed without a job, no job without its orders;
- `check_results`: results readable by their owner (bytes as the manifest
  says) and by no one else.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from c2d.provider.v1 import provider_pb2
from c2d_sdk import AsyncClient, ComputeRequest
from c2d_sdk.errors import Refused, Unreachable
from cli import demo
from plumbing.statuses import EndReason, Status, can_transition, is_terminal, releases_orders
from testkit.load import UpStack, publish_demo, up_processes
from testkit.pg_proxy import CommitReplyCutter, commit_reply_cutter
from testkit.servers import free_ports

# -- what a trial does ------------------------------------------------------------------

FAULTS = (
    "kill_engine",
    "kill_operator",
    "kill_provider",
    "kill_pod",
    "restart_postgres",
    "cut_stream",
    "fill_storage",
    "lose_commit_reply",
)
SERVER_OF = {"kill_engine": "operator-engine", "kill_operator": "operator-service", "kill_provider": "provider"}
# The stage a job's process runs in each status (kill_pod's targets).
STAGE_AT = {20: "configure", 40: "algorithm", 60: "publish"}
# The trial's algorithm: the demo's, a little slower, so a fault can find a job mid-run.
RUNNING = "c2d-faults: the algorithm runs"
ALGORITHM = f"import time\nprint({RUNNING!r}, flush=True)\ntime.sleep(1.0)\n" + demo.ALGORITHM


@dataclass(frozen=True)
class Moment:
    """When the fault strikes: once `submitted` jobs were submitted, once job
    `job` reached `status` (in the engine), or `delay_s` after the first submission."""

    kind: str  # "submitted", "status" or "delay"
    submitted: int = 0
    job: int = 0
    status: int = 0
    delay_s: float = 0.0

    def describe(self) -> str:
        if self.kind == "submitted":
            return f"after {self.submitted} job(s) submitted"
        if self.kind == "status":
            return f"when job {self.job} reaches status {self.status}"
        return f"{self.delay_s:g} s after the first submission"


@dataclass(frozen=True)
class Plan:
    seed: int
    fault: str
    moment: Moment
    jobs: int
    commits: int = 0  # lose_commit_reply: how many COMMITs lose their replies

    def describe(self) -> str:
        fault = f"{self.fault} ({self.commits} commits)" if self.commits else self.fault
        return f"seed {self.seed}: {fault} {self.moment.describe()}, {self.jobs} jobs"


def plan(seed: int) -> Plan:
    """The trial of a seed. Every run of len(FAULTS) consecutive seeds covers each fault
    once (in an order the seeds shuffle); the rest is drawn from random.Random(seed)."""
    order = list(FAULTS)
    random.Random(seed // len(FAULTS)).shuffle(order)
    fault = order[seed % len(FAULTS)]
    rng = random.Random(seed)
    jobs = rng.randint(3, 5)
    if fault == "kill_pod":
        return Plan(seed, fault, Moment("status", job=rng.randrange(jobs), status=rng.choice(sorted(STAGE_AT))), jobs)
    kind = rng.choice(("submitted", "status", "delay"))
    if kind == "submitted":
        moment = Moment(kind, submitted=rng.randint(1, jobs - 1))
    elif kind == "status":
        moment = Moment(kind, job=rng.randrange(jobs), status=rng.choice((10, 20, 30, 40, 60)))
    else:
        moment = Moment(kind, delay_s=round(rng.uniform(0.0, 3.0), 2))
    return Plan(seed, fault, moment, jobs, rng.randint(1, 3) if fault == "lose_commit_reply" else 0)


def replay_command(seed: int) -> str:
    return f".venv/bin/python bench/pressure.py --only faults --seed {seed} --trials 1"


# -- the invariants -----------------------------------------------------------------------


@dataclass(frozen=True)
class JobState:
    """A job as the operator-service's row has it, for check_progress."""

    job_id: str
    status: int
    idle_s: float  # since its last recorded change


def check_progress(jobs: Iterable[JobState], stuck_after_s: float) -> list[str]:
    """Every job is terminal, or changed within the last `stuck_after_s`."""
    return [
        f"job {job.job_id} stuck in status {job.status}: no change for {job.idle_s:.0f} s"
        for job in jobs
        if not is_terminal(job.status) and job.idle_s >= stuck_after_s
    ]


@dataclass(frozen=True)
class Ending:
    """How a job ended, for check_endings."""

    job_id: str
    status: int
    end_reason: int
    error_code: str
    error_message: str


def check_endings(jobs: Iterable[Ending]) -> list[str]:
    """A job that did not complete says why: an error code and a message a consumer can read."""
    return [
        f"job {job.job_id} ended in {job.status} (end reason {job.end_reason}) without a reason"
        for job in jobs
        if is_terminal(job.status)
        and (job.status != Status.FINISHED or job.end_reason != EndReason.COMPLETED)
        and not (job.error_code and job.error_message)
    ]


@dataclass(frozen=True)
class EngineEvent:
    sequence: int
    job_id: str
    status: int


@dataclass(frozen=True)
class ServiceEvent:
    """One row of the operator-service's history (engine_sequence 0: the service's own change)."""

    sequence: int
    job_id: str
    status: int
    engine_sequence: int


def check_history(
    engine_log: Sequence[EngineEvent], history: Sequence[ServiceEvent], last_applied: int, jobs: Iterable[str]
) -> list[str]:
    """The engine's event log against the service's history, for `jobs`.

    Every engine change up to `last_applied` is in the history exactly once,
    in the engine's order, unless the service had ended the job itself before
    (then the engine's later changes are refused); no history row claims an
    engine change the engine never logged; the engine's log has no gap and
    moves each job only along the state machine (no status twice)."""
    found: list[str] = []
    wanted = set(jobs)
    sequences = sorted(e.sequence for e in engine_log)
    if sequences and sequences != list(range(sequences[0], sequences[0] + len(sequences))):
        missing = sorted(set(range(sequences[0], sequences[-1] + 1)) - set(sequences))
        found.append(f"the engine's log has gaps: sequences {missing[:10]} missing")
    logged = {e.sequence: e for e in engine_log}
    applied: dict[int, list[ServiceEvent]] = defaultdict(list)
    for row in history:
        if row.engine_sequence:
            applied[row.engine_sequence].append(row)
    for engine_sequence, rows in sorted(applied.items()):
        first = rows[0]
        if first.job_id not in wanted:
            continue
        if len(rows) > 1:
            found.append(
                f"engine change {engine_sequence} (job {first.job_id}, status {first.status}) applied {len(rows)} times"
            )
        event = logged.get(engine_sequence)
        if event is None:
            found.append(
                f"job {rows[0].job_id}: history row for engine change {engine_sequence}, which the engine never logged"
            )
        elif (event.job_id, event.status) != (rows[0].job_id, rows[0].status):
            found.append(
                f"engine change {engine_sequence} is job {event.job_id} status {event.status}; "
                f"the history applied it as job {rows[0].job_id} status {rows[0].status}"
            )
    by_job: dict[str, list[EngineEvent]] = defaultdict(list)
    for event in sorted(engine_log, key=lambda e: e.sequence):
        by_job[event.job_id].append(event)
    rows_by_job: dict[str, list[ServiceEvent]] = defaultdict(list)
    for row in sorted(history, key=lambda r: r.sequence):
        rows_by_job[row.job_id].append(row)
    for job_id in sorted(wanted):
        status = int(Status.WARMING_UP)
        for event in by_job.get(job_id, []):
            if not can_transition(status, event.status):
                found.append(f"job {job_id}: the engine logged {status} -> {event.status} (change {event.sequence})")
            status = event.status
        rows = rows_by_job.get(job_id, [])
        order = list(dict.fromkeys(r.engine_sequence for r in rows if r.engine_sequence))  # twice: reported above
        if order != sorted(order):
            found.append(f"job {job_id}: engine changes applied out of order: {order}")
        ended_by_service = next((r.sequence for r in rows if not r.engine_sequence and is_terminal(r.status)), None)
        for event in by_job.get(job_id, []):
            if event.sequence > last_applied or event.sequence in applied:
                continue
            if ended_by_service is not None:
                continue  # refused: the service had ended the job itself
            found.append(f"job {job_id}: engine change {event.sequence} (status {event.status}) lost")
    return found


@dataclass(frozen=True)
class OrderRow:
    order_id: str
    did: str
    claimed_by_request: str | None
    used_by_job_id: str | None


@dataclass(frozen=True)
class JobRow:
    """What check_orders needs of a job of the operator-service."""

    job_id: str
    request_id: str
    assets: frozenset[str]  # the datasets' and the algorithm's DIDs
    releases: bool  # it ended in a way that gives its orders back (plumbing.statuses.releases_orders)


def check_orders(orders: Iterable[OrderRow], jobs: Iterable[JobRow]) -> list[str]:
    """No order consumed without a job; no job without one order per asset."""
    found: list[str] = []
    jobs = list(jobs)
    by_id = {job.job_id: job for job in jobs}
    by_request = {job.request_id: job for job in jobs}
    used: dict[str, list[OrderRow]] = defaultdict(list)
    for order in orders:
        if order.used_by_job_id:
            used[order.used_by_job_id].append(order)
            if order.used_by_job_id not in by_id:
                found.append(f"order {order.order_id} consumed by job {order.used_by_job_id}, which does not exist")
        elif order.claimed_by_request:
            job = by_request.get(order.claimed_by_request)
            if job is None:
                found.append(f"order {order.order_id} claimed (request {order.claimed_by_request[:12]}) with no job")
            else:
                found.append(f"order {order.order_id} claimed for job {job.job_id} but not recorded as its order")
    for job in jobs:
        dids = sorted(order.did for order in used.get(job.job_id, []))
        if not dids and job.releases:
            continue  # its orders went back to the consumer
        if dids != sorted(job.assets):
            found.append(f"job {job.job_id} holds orders for {dids}, not one per asset {sorted(job.assets)}")
    return found


@dataclass(frozen=True)
class ResultRead:
    """One result file of a finished job, read by its owner and by a stranger."""

    job_id: str
    index: int
    owner_error: str  # "" when the owner read it
    sha256_expected: str
    sha256_read: str
    stranger_code: str  # the status a stranger got ("" if it read the file)


def check_results(reads: Iterable[ResultRead], finished_without_results: Iterable[str] = ()) -> list[str]:
    found = [f"job {job_id} finished without a result file" for job_id in finished_without_results]
    for read in reads:
        where = f"job {read.job_id} result {read.index}"
        if read.owner_error:
            found.append(f"{where}: its owner could not read it ({read.owner_error})")
        elif read.sha256_read != read.sha256_expected:
            found.append(
                f"{where}: its owner read {read.sha256_read[:12]}, the manifest says {read.sha256_expected[:12]}"
            )
        if read.stranger_code not in ("PERMISSION_DENIED", "NOT_FOUND"):
            found.append(f"{where}: a stranger got {read.stranger_code or 'the file'}")
    return found


# -- a private PostgreSQL ----------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return path


class PrivatePostgres:
    """A PostgreSQL server of the harness's own (initdb in a temp dir, a free
    port), so restarting it touches no one else's tests. initdb refuses root:
    as root it runs as the `postgres` user."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.port = 0
        self.restarts = 0

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        command = [_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"), "-w", "-t", "120"]
        subprocess.run(self._as_owner([*command, "-o", options, *args]), check=True, capture_output=True)

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
        initdb = [_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]
        subprocess.run(self._as_owner(initdb), check=True, capture_output=True)
        self.port = free_ports(1)[0]
        self._ctl("start")

    def crash(self) -> None:
        """Down, as a crash leaves it (until `serve`)."""
        self._ctl("-m", "immediate", "stop")

    def serve(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """A crash and a start: every connection drops, uncommitted work is lost."""
        self._ctl("-m", "immediate", "restart")
        self.restarts += 1

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("-m", "immediate", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    base = Path(tempfile.mkdtemp(prefix="c2d-faults-pg-"))
    server = PrivatePostgres(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


# -- the stack under faults --------------------------------------------------------------------

RESULTS_TMPFS_BYTES = 16 << 20
SERVER_MODULES = {
    "operator-engine": "services.operator_engine",
    "operator-service": "services.operator_service",
    "provider": "services.provider",
}


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@dataclass
class FaultStack:
    """`c2d up --processes` on a private PostgreSQL (through `proxy`), its results on a small tmpfs of its own."""

    up: UpStack
    postgres: PrivatePostgres
    proxy: CommitReplyCutter
    database_url: str  # the harness's own, straight to the server (the proxy cuts only the stack's commits)
    data_dir: Path
    results_dir: Path  # as the stack sees it (inside its mount namespace)
    publisher: AsyncClient | None = None
    spec: provider_pb2.ComputeSpec | None = None
    datatokens: tuple[str, ...] = ()
    trials: int = 0

    def server_pids(self) -> dict[str, int]:
        """Each server's current pid (a restarted one has a new one)."""
        found = {}
        for pid in _children(self.up.process.pid):
            line = _cmdline(pid)
            for name, module in SERVER_MODULES.items():
                if module in line:
                    found[name] = pid
        return found

    @property
    def results_seen_from_here(self) -> Path:
        # the stack's mount namespace, reached through its root
        return Path(f"/proc/{self.up.process.pid}/root") / self.results_dir.relative_to("/")

    @property
    def engine_port(self) -> int:
        for line in self.up.log.read_text(errors="replace").splitlines():
            parts = line.split()
            if parts[:1] == ["operator-engine"]:
                return int(parts[1].rsplit(":", 1)[1])
        raise RuntimeError("c2d up did not name the engine's address")

    def said(self, text: str) -> int:
        """How often `c2d up` said this."""
        return self.up.log.read_text(errors="replace").count(text)

    def sql(self, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        url = self.database_url.replace("postgresql+psycopg2://", "postgresql://", 1)
        with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
            cur.execute(query, tuple(args))
            return list(cur.fetchall())


@contextlib.asynccontextmanager
async def fault_stack(base: Path, max_jobs: int = 2) -> AsyncIterator[FaultStack]:
    """The stack, the publisher's dataset and algorithm published, ready for trials."""
    data_dir = base / "c2d"
    results = data_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    mount = f'mount -t tmpfs -o size={RESULTS_TMPFS_BYTES},mode=0755 c2d-faults-results {results} && exec "$@"'
    wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh"]
    env = {"C2D_STORAGE_LOCAL_ROOT": str(results)}
    with private_postgres() as postgres:
        url = postgres.create_database("c2d")
        with (
            commit_reply_cutter(url) as proxy,
            up_processes(data_dir, proxy.url(url), max_jobs, wrap=wrap, env=env) as up,
        ):
            stack = FaultStack(up, postgres, proxy, url, data_dir, results)
            files = base / "files"
            files.mkdir(exist_ok=True)
            async with AsyncClient(up.provider_address, "0x" + "41" * 32) as publisher:
                dataset, algorithm = await publish_demo(publisher, files, ALGORITHM)
                stack.publisher = publisher
                stack.datatokens = (dataset.datatoken, algorithm.datatoken)
                stack.spec = await publisher.compute_spec(
                    ComputeRequest(datasets=[dataset.did], algorithm=algorithm.did)
                )
                try:
                    yield stack
                finally:
                    _kill_runs(data_dir / "workspaces")


def _kill_runs(workspaces: Path) -> None:
    """Algorithms outlive their engine (under their monitors): none may outlive the stack."""
    needle = str(workspaces).encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(int(pid), signal.SIGKILL)


# -- the faults ----------------------------------------------------------------------------------


def stage_processes(workspace: Path, stage: str) -> list[int]:
    """The processes of a job's stage: a pod writes its admin log on its stdout; the
    algorithm's is the sandbox its monitor (whose pid its state directory keeps) runs."""
    admin = workspace / "admin"
    if stage == "algorithm":
        # Once the algorithm said it runs: before, the monitor's child may be its bwrap probe.
        try:
            if RUNNING not in (admin / "algorithm.log").read_text(errors="replace"):
                return []
            monitor = int((admin / "monitor" / "pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return _children(monitor)
    found = []
    log = str(admin / f"{stage}.log")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/1") == log:
                found.append(int(pid))
    return found


def _connections(pid: int, remote_port: int) -> list[tuple[str, int]]:
    """(address family, local port) of the process's TCP connections to port `remote_port` on 127.0.0.1."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table, family in (("tcp", "-4"), ("tcp6", "-6")):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if inode in inodes and state == "01" and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                found.append((family, int(local.rsplit(":", 1)[1], 16)))
    return found


def cut_connections(pid: int, remote_port: int) -> int:
    """Resets the process's TCP connections to remote_port (the kernel sends both
    ends an RST): only these four-tuples, never another process's sockets."""
    cut = 0
    for family, local in _connections(pid, remote_port):
        if not (0 < local < 65536 and 0 < remote_port < 65536):
            raise ValueError(f"not a connection: {local} -> {remote_port}")  # an empty filter would match all
        host = "127.0.0.1" if family == "-4" else "[::ffff:127.0.0.1]"
        filters = ["src", f"{host}:{local}", "dst", f"{host}:{remote_port}"]
        subprocess.run(["ss", "-K", "-t", "-n", family, *filters], check=True, capture_output=True)
        cut += 1
    return cut


def fill(directory: Path) -> int:
    """Fills the file system of `directory` to its last byte; returns the bytes written."""
    written = 0
    block = b"\0" * (1 << 20)
    fd = os.open(directory / ".fault-filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    written += os.write(fd, block[:size])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return written


def unfill(directory: Path) -> None:
    (directory / ".fault-filler").unlink(missing_ok=True)


# -- a trial ---------------------------------------------------------------------------------------

RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED")
JOB_TIMEOUT_S = 240.0  # a loaded machine: all of a trial's jobs end well within this
STUCK_AFTER_S = 120.0


@dataclass
class TrialResult:
    plan: Plan
    injected: str = ""  # what was done ("" when the moment never came)
    job_ids: list[str] = field(default_factory=list)
    statuses: dict[str, tuple[int, str]] = field(default_factory=dict)  # job -> status, error code
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def report(self) -> str:
        lines = [f"{self.plan.describe()}: {self.injected or 'fault not injected'}"]
        lines += [f"  VIOLATION {v}" for v in self.violations]
        if self.violations:
            lines.append(f"  replay: {replay_command(self.plan.seed)}")
        return "\n".join(lines)


async def _retrying(what: str, call: Callable[[], Any], deadline: float, result: TrialResult) -> Any:
    """A client's retry of a call that met a fault (the same signed request content, a new nonce)."""
    while True:
        try:
            return await call()
        except Unreachable:
            pass
        except Refused as exc:
            if exc.code not in RETRYABLE:
                result.violations.append(f"{what}: {exc.code} {exc}")
                return None
        if time.monotonic() > deadline:
            result.violations.append(f"{what}: no answer before the deadline")
            return None
        await asyncio.sleep(0.5)


def _engine_status(stack: FaultStack, job_id: str) -> int:
    rows = stack.sql("SELECT status FROM engine_jobs WHERE job_id = %s", [job_id])
    return int(rows[0][0]) if rows else 0


async def _moment_came(stack: FaultStack, plan_: Plan, submitted: list[str], first_at: list[float]) -> bool:
    """Waits for the plan's moment; False if it never came (the jobs all ended first)."""
    moment = plan_.moment
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        if moment.kind == "submitted" and len(submitted) >= moment.submitted:
            return True
        if moment.kind == "delay" and first_at and time.monotonic() - first_at[0] >= moment.delay_s:
            return True
        if moment.kind == "status" and len(submitted) > moment.job:
            with contextlib.suppress(psycopg2.Error):
                status = _engine_status(stack, submitted[moment.job])
                if plan_.fault == "kill_pod":
                    if stage_processes(_workspace(stack, submitted[moment.job]), STAGE_AT[moment.status]):
                        return True
                    if is_terminal(status) or status > moment.status:
                        return False
                elif status >= moment.status or is_terminal(status):
                    return True
        await asyncio.sleep(0.02)
    return False


def _workspace(stack: FaultStack, job_id: str) -> Path:
    return stack.data_dir / "workspaces" / job_id


async def _inject(stack: FaultStack, plan_: Plan, submitted: list[str]) -> str:
    fault = plan_.fault
    if fault in SERVER_OF:
        name = SERVER_OF[fault]
        pid = stack.server_pids()[name]
        os.kill(pid, signal.SIGKILL)
        return f"kill -9 {name} (pid {pid})"
    if fault == "kill_pod":
        job_id = submitted[plan_.moment.job]
        stage = STAGE_AT[plan_.moment.status]
        pids = stage_processes(_workspace(stack, job_id), stage)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return f"kill -9 the {stage} of job {job_id} (pid {', '.join(map(str, pids))})" if pids else ""
    if fault == "restart_postgres":
        await asyncio.to_thread(stack.postgres.restart)
        return "PostgreSQL crashed and restarted"
    if fault == "cut_stream":
        operator = stack.server_pids()["operator-service"]
        cut = await asyncio.to_thread(cut_connections, operator, stack.engine_port)
        return f"state stream cut ({cut} connection(s) of the operator-service to the engine reset)"
    if fault == "fill_storage":
        written = await asyncio.to_thread(fill, stack.results_seen_from_here)
        return f"results storage filled ({written >> 10} KiB more; none left)"
    if fault == "lose_commit_reply":
        return await _lose_commit_replies(stack.proxy, plan_.commits)
    raise ValueError(f"unknown fault {fault!r}")


CUT_WAIT_S = 30.0


async def _lose_commit_replies(proxy: CommitReplyCutter, commits: int) -> str:
    """Arms the proxy for the next `commits` COMMITs and waits (a while) for them to come."""
    before = len(proxy.cut_after)
    proxy.arm(commits)
    for _ in range(int(CUT_WAIT_S / 0.05)):
        if len(proxy.cut_after) >= before + commits:
            break
        await asyncio.sleep(0.05)
    proxy.disarm()
    cut = proxy.cut_after[before:]
    if not cut:
        return ""
    after = "; ".join(repr(query[:60]) for query in cut)
    return f"the replies to {len(cut)} of {commits} COMMIT(s) lost (each after {after})"


async def _recovered(stack: FaultStack, plan_: Plan, backs: int, result: TrialResult, deadline: float) -> None:
    """For a killed server: until `c2d up` says it serves again."""
    if plan_.fault not in SERVER_OF or not result.injected:
        return
    name = SERVER_OF[plan_.fault]
    while time.monotonic() < deadline:
        if stack.said(f"c2d: the {name} is back") > backs:
            return
        await asyncio.sleep(0.2)
    result.violations.append(f"the {name} was not serving again {JOB_TIMEOUT_S:g} s into the trial")


async def run_trial(stack: FaultStack, seed: int) -> TrialResult:
    """One trial on a shared stack: the jobs, the fault, the recovery, the invariants."""
    assert stack.publisher is not None and stack.spec is not None
    plan_ = plan(seed)
    result = TrialResult(plan_)
    started = time.monotonic()
    deadline = started + JOB_TIMEOUT_S
    stack.trials += 1
    key = hashlib.sha256(f"c2d-faults {seed} {stack.trials} {os.getpid()} {time.time_ns()}".encode()).hexdigest()
    consumer = AsyncClient(stack.up.provider_address, "0x" + key)
    stranger = AsyncClient(stack.up.provider_address, "0x" + hashlib.sha256(key.encode()).hexdigest())
    try:
        specs = []
        publisher = stack.publisher
        for token in stack.datatokens:  # the provider may still be coming back from the trial before
            await _retrying("Mint", lambda t=token: publisher.mint(t, consumer.address, plan_.jobs), deadline, result)
        for _ in range(plan_.jobs):
            own = provider_pb2.ComputeSpec()
            own.CopyFrom(stack.spec)
            own.dataset.order_id = await consumer.order(own.dataset.did, own.dataset.service_id)
            own.algorithm_asset.order_id = await consumer.order(own.algorithm_asset.did, own.algorithm_asset.service_id)
            specs.append(own)
        submitted: list[str] = []
        first_at: list[float] = []
        backs = stack.said(f"c2d: the {SERVER_OF.get(plan_.fault, '')} is back")

        async def submit() -> None:
            for own in specs:
                if not first_at:
                    first_at.append(time.monotonic())
                answer = await _retrying("StartCompute", lambda own=own: consumer.start(own), deadline, result)
                if answer is not None:
                    submitted.append(answer.job_id)
                await asyncio.sleep(0.05)

        async def strike() -> None:
            if await _moment_came(stack, plan_, submitted, first_at):
                result.injected = await _inject(stack, plan_, submitted)

        await asyncio.gather(submit(), strike())
        await _recovered(stack, plan_, backs, result, deadline)
        result.job_ids = list(submitted)
        await _settle(stack, result, deadline)
        for job_id, status, code in stack.sql(
            "SELECT job_id, status, error_code FROM jobs WHERE job_id = ANY(%s)", [result.job_ids]
        ):
            result.statuses[job_id] = (int(status), code)
        if plan_.fault == "fill_storage":
            await asyncio.to_thread(unfill, stack.results_seen_from_here)
        result.violations += await check_trial(stack, result, consumer, stranger, deadline)
    finally:
        await consumer.close()
        await stranger.close()
        if plan_.fault == "fill_storage":
            with contextlib.suppress(OSError):
                unfill(stack.results_seen_from_here)
    result.seconds = time.monotonic() - started
    return result


def _job_states(stack: FaultStack, job_ids: Sequence[str]) -> list[JobState]:
    rows = stack.sql(
        "SELECT j.job_id, j.status, EXTRACT(EPOCH FROM now() - max(e.time)) FROM jobs j "
        "JOIN job_events e ON e.job_id = j.job_id WHERE j.job_id = ANY(%s) GROUP BY j.job_id, j.status",
        [list(job_ids)],
    )
    return [JobState(job_id, int(status), float(idle)) for job_id, status, idle in rows]


async def _settle(stack: FaultStack, result: TrialResult, deadline: float) -> None:
    """Waits until every job ended (or one is stuck) and the engine's log is all applied."""
    while True:
        try:
            states = _job_states(stack, result.job_ids)
            ended = len(states) == len(result.job_ids) and all(is_terminal(s.status) for s in states)
            engine_done = stack.sql(
                "SELECT (SELECT coalesce(max(sequence), 0) FROM engine_events) <= "
                "(SELECT coalesce(max(last_applied_sequence), 0) FROM engines)"
            )[0][0]
            if ended and engine_done:
                return
            if check_progress(states, STUCK_AFTER_S) or time.monotonic() > deadline:
                return
        except psycopg2.Error:
            pass  # the server is restarting
        await asyncio.sleep(0.25)


async def check_trial(
    stack: FaultStack, result: TrialResult, owner: AsyncClient, stranger: AsyncClient, deadline: float
) -> list[str]:
    """All four invariants for the trial's jobs, from the databases and the public RPCs."""
    job_ids = result.job_ids
    found = check_progress(_job_states(stack, job_ids), STUCK_AFTER_S)
    found += check_endings(
        Ending(job_id, int(status), int(end_reason), code, message)
        for job_id, status, end_reason, code, message in stack.sql(
            "SELECT job_id, status, end_reason, error_code, error_message FROM jobs WHERE job_id = ANY(%s)",
            [list(job_ids)],
        )
    )
    if len(_job_states(stack, job_ids)) != len(job_ids):
        found.append("a job the provider started is not in the operator-service's table")
    engine_log = [
        EngineEvent(int(seq), job_id, int(change["status"]))
        for seq, job_id, change in stack.sql("SELECT sequence, job_id, change FROM engine_events ORDER BY sequence")
    ]
    history = [
        ServiceEvent(int(seq), job_id, int(status), int(engine_seq))
        for seq, job_id, status, engine_seq in stack.sql(
            "SELECT sequence, job_id, status, engine_sequence FROM job_events WHERE job_id = ANY(%s)", [list(job_ids)]
        )
    ]
    last_applied = int(stack.sql("SELECT coalesce(max(last_applied_sequence), 0) FROM engines")[0][0])
    found += check_history(engine_log, history, last_applied, job_ids)
    jobs = [
        JobRow(
            job_id,
            request_id,
            frozenset([*dataset_dids, algorithm_did]),
            releases_orders(status, end_reason, error_code, bool(outcome), not algorithm_did),
        )
        for job_id, request_id, dataset_dids, algorithm_did, status, end_reason, error_code, outcome in stack.sql(
            "SELECT job_id, request_id, dataset_dids, algorithm_did, status, end_reason, error_code, outcome "
            "FROM jobs WHERE lower(owner) = %s",
            [owner.address.lower()],
        )
    ]
    owner_jobs = {job.job_id for job in jobs} | set(job_ids)
    orders = [
        OrderRow(*row)
        for row in stack.sql(
            "SELECT order_id, did, claimed_by_request, used_by_job_id FROM orders WHERE lower(consumer) = %s",
            [owner.address.lower()],
        )
    ]
    found += check_orders(orders, [job for job in jobs if job.job_id in owner_jobs])
    reads, empty = await _read_results(result, owner, stranger, deadline)
    found += check_results(reads, empty)
    return found


async def _read_results(
    result: TrialResult, owner: AsyncClient, stranger: AsyncClient, deadline: float
) -> tuple[list[ResultRead], list[str]]:
    reads, empty = [], []
    for job_id in result.job_ids:
        job = await _retrying("GetJobDetails", lambda job_id=job_id: owner.job(job_id), deadline, result)
        if job is None or job.status != Status.FINISHED or job.end_reason != 1:
            continue
        files = list(job.results.files)
        if not any(f.path == "result.json" for f in files):
            empty.append(job_id)
        for entry in files:
            owner_error, digest = "", ""
            try:
                _, data = await owner.result(job_id, entry.index)
                digest = hashlib.sha256(data).hexdigest()
            except (Refused, Unreachable) as exc:  # the provider is back by now: no retry
                owner_error = str(exc)[:200]
            try:
                await stranger.result(job_id, entry.index)
                stranger_code = ""
            except Refused as exc:
                stranger_code = exc.code
            except Unreachable as exc:
                stranger_code = f"unreachable: {exc}"[:100]
            reads.append(ResultRead(job_id, entry.index, owner_error, entry.sha256, digest, stranger_code))
    return reads, empty


def tally(results: Iterable[TrialResult]) -> dict[str, Any]:
    """Figures of a run of trials (bench/pressure.py's faults section)."""
    results = list(results)
    by_kind: dict[str, int] = defaultdict(int)
    for r in results:
        if r.injected:
            by_kind[r.plan.fault] += 1
    return {
        "trials": len(results),
        "faults_injected": sum(by_kind.values()),
        "faults_by_kind": dict(sorted(by_kind.items())),
        "invariant_violations": sum(len(r.violations) for r in results),
        "jobs": sum(len(r.job_ids) for r in results),
    }
