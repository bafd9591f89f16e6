"""A real operator-engine for tests: in-process (`engine_running`) or as a
`python -m services.operator_engine` subprocess (`EngineProcess`), a client
holding the service token, job workflows with inline algorithms, and a TCP
server that stalls the requests a stage makes (to hold a job in a stage)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import engine_pb2, engine_pb2_grpc
from plumbing import auth
from plumbing.statuses import EndReason, Status, is_terminal
from services.operator_engine import server
from services.operator_engine.settings import EngineSettings
from testkit.servers import free_ports

REPO = Path(__file__).resolve().parents[2]
DATASET_DID = "did:op:" + "ab" * 32
DATASET_DIR = DATASET_DID.removeprefix("did:op:")
ENVIRONMENT = "local-cpu"
WAIT_S = 120.0  # generous: other suites share these two cores


def workflow(
    code: str,
    *,
    entrypoint: str = "python3 $ALGO",
    image: str = "python",
    dataset: common_pb2.FileLocation | None = None,
    allow_network: bool = False,
    max_duration_s: int = 0,
) -> common_pb2.Workflow:
    return common_pb2.Workflow(
        datasets=[
            common_pb2.WorkflowAsset(
                did=DATASET_DID,
                files=[dataset or common_pb2.FileLocation(type="raw", content="the dataset\n")],
                ddo_json=f'{{"id": "{DATASET_DID}"}}',
            )
        ],
        raw_algorithm=code,
        container=common_pb2.AlgorithmContainer(entrypoint=entrypoint, image=image),
        allow_network=allow_network,
        max_duration_seconds=max_duration_s,
    )


@dataclass
class EngineClient:
    """EngineService over real gRPC with the service token; the engine's workspaces."""

    address: str
    workspaces: Path
    channel: grpc.aio.Channel = field(init=False)
    stub: engine_pb2_grpc.EngineServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.address)
        self.stub = engine_pb2_grpc.EngineServiceStub(self.channel)
        self.metadata = auth.bearer(auth.service_token())

    async def close(self) -> None:
        await self.channel.close()

    async def submit(
        self, wf: common_pb2.Workflow, job_id: str | None = None, environment_id: str = ENVIRONMENT
    ) -> str:
        job_id = job_id or str(uuid.uuid4())
        await self.stub.SubmitJob(
            engine_pb2.SubmitJobRequest(job_id=job_id, environment_id=environment_id, workflow=wf),
            metadata=self.metadata,
        )
        return job_id

    async def stop(self, job_id: str) -> engine_pb2.StopJobResponse:
        return await self.stub.StopJob(engine_pb2.StopJobRequest(job_id=job_id), metadata=self.metadata)

    async def environment(self) -> common_pb2.Environment:
        response = await self.stub.ListEnvironments(engine_pb2.ListEnvironmentsRequest(), metadata=self.metadata)
        return response.environments[0]

    def changes(self, after: int = 0) -> AsyncIterator[engine_pb2.StreamStateChangesResponse]:
        return self.stub.StreamStateChanges(
            engine_pb2.StreamStateChangesRequest(after_sequence=after), metadata=self.metadata
        )

    async def history(self, job_id: str, until=None, timeout: float = WAIT_S) -> list[engine_pb2.StateChange]:  # type: ignore[no-untyped-def]
        """The job's changes from the start of the log, until `until(change)` (default: the
        job ended) holds."""
        until = until or (lambda c: is_terminal(c.status))
        seen: list[engine_pb2.StateChange] = []

        async def follow() -> None:
            call = self.changes()
            try:
                async for event in call:
                    for change in event.changes.changes:
                        if change.job_id == job_id:
                            seen.append(change)
                            if until(change):
                                return
            finally:
                call.cancel()

        try:
            await asyncio.wait_for(follow(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"job {job_id}: condition not met in {timeout} s; saw {[c.status for c in seen]}"
            ) from None
        return seen

    async def logged_so_far(self) -> list[engine_pb2.StateChange]:
        """Every change in the engine's log now (up to the first heartbeat's latest sequence)."""
        call = self.changes()
        changes: list[engine_pb2.StateChange] = []
        try:
            first = await call.read()
            latest = first.heartbeat.latest_sequence
            while latest and (not changes or changes[-1].sequence < latest):
                event = await call.read()
                changes.extend(event.changes.changes)
        finally:
            call.cancel()
        return changes

    async def load(self) -> tuple[int, int]:
        env = await self.environment()
        return env.running_jobs, env.queued_jobs

    async def ended(self, job_id: str, timeout: float = WAIT_S) -> engine_pb2.StateChange:
        return (await self.history(job_id, timeout=timeout))[-1]

    async def reached(self, job_id: str, status: int, timeout: float = WAIT_S) -> None:
        changes = await self.history(job_id, lambda c: c.status == status or is_terminal(c.status), timeout)
        assert changes[-1].status == status, f"job {job_id} ended instead: {changes[-1]}"

    def data(self, job_id: str) -> Path:
        return self.workspaces / job_id / "data"

    def algorithm_log(self, job_id: str) -> Path:
        """The engine's algorithm.log of the job (in admin/, out of the algorithm's reach)."""
        return self.workspaces / job_id / "admin" / "algorithm.log"

    def admin_log(self, job_id: str, name: str) -> str:
        path = self.workspaces / job_id / "admin" / name
        return path.read_text() if path.exists() else ""


@contextlib.asynccontextmanager
async def engine_running(database_url: str, workspaces: Path, **settings: object) -> AsyncIterator[EngineClient]:
    """The engine in this process, on a free port, with the local backend."""
    config = EngineSettings(
        address="127.0.0.1:0",
        metrics_address="127.0.0.1:0",
        database_url=database_url,
        workspaces_dir=str(workspaces),
        heartbeat_s=0.5,
        **settings,  # type: ignore[arg-type]
    )
    running = await server.start(config)
    client = EngineClient(f"127.0.0.1:{running.port}", workspaces)
    try:
        yield client
    finally:
        await client.close()
        await running.stop(1)


async def wait_until(predicate, timeout: float = WAIT_S, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout} s")
        await asyncio.sleep(0.05)


async def wait_for_file_text(path: Path, text: str, timeout: float = WAIT_S) -> None:
    await wait_until(lambda: path.exists() and text in path.read_text(errors="replace"), timeout, f"{text!r} in {path}")


def release(job_data: Path, name: str = "go") -> None:
    """Opens a gate an algorithm waits on: a file in its (read-only to it) inputs."""
    (job_data / "inputs" / name).write_text("go")


def gate(name: str = "go") -> str:
    """Python lines that block the algorithm until the test calls release(). By listing the
    directory: /data's parts are overlay mounts, which keep a name looked up and missing as
    missing when the file then appears underneath (a listing reads afresh)."""
    return f"import os, time\nwhile {name!r} not in os.listdir('/data/inputs'):\n    time.sleep(0.05)\n"


class StallingServer:
    """Accepts TCP connections and answers nothing while stalling; once released it
    answers HTTP requests with `body`. Records who connected and when they left."""

    def __init__(self, body: bytes = b"the dataset\n") -> None:
        self.body = body
        self.connections = 0
        self.open_connections = 0
        self.stalling = True
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    async def __aenter__(self) -> StallingServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        try:
            if self.stalling:
                while await reader.read(65536):  # until the client goes away
                    pass
                return
            while await reader.readline() not in (b"\r\n", b""):
                pass
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(self.body) + self.body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.open_connections -= 1
            writer.close()


class EngineProcess:
    """The engine as its own process (`python -m services.operator_engine`), to kill -9."""

    def __init__(self, port: int, database_url: str, workspaces: Path, **env: str) -> None:
        self.address = f"127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "C2D_ENGINE_ADDRESS": self.address,
            "C2D_ENGINE_DATABASE_URL": database_url,
            "C2D_ENGINE_WORKSPACES_DIR": str(workspaces),
            "C2D_ENGINE_HEARTBEAT_S": "0.5",
            "C2D_SERVICE_TOKEN": auth.service_token(),
            **env,
        }
        self.workspaces = workspaces
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, log_path: Path, **env: str) -> EngineClient:
        with open(log_path, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.operator_engine"],
                cwd=REPO,
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        client = EngineClient(self.address, self.workspaces)
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                await client.environment()
                return client
            except grpc.aio.AioRpcError:
                if self.process.poll() is not None:
                    raise AssertionError(f"the engine exited with {self.process.returncode}: {log_path.read_text()}")
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()
        kill_runs_in(self.workspaces)


@contextlib.contextmanager
def engine_process(database_url: str, tmp_path: Path, **env: str) -> Iterator[EngineProcess]:
    """An engine process (not started yet) on a free port, its workspaces under
    tmp_path; terminated afterwards, with whatever it left running."""
    proc = EngineProcess(free_ports(1)[0], database_url, tmp_path / "ws", **env)
    try:
        yield proc
    finally:
        proc.terminate()


def processes_mentioning(path: Path) -> list[int]:
    needle, found = str(path).encode(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def kill_runs_in(workspaces: Path) -> None:
    """Algorithms outlive their engine (under their monitors): a test that failed halfway
    must not leave them running on a shared machine."""
    for pid in processes_mentioning(workspaces):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def report_of(engine, job_id: str) -> dict:  # type: ignore[no-untyped-def]
    """What the job's algorithm report()ed (tests/operator_engine/helpers.py's `py`)."""
    return json.loads((engine.data(job_id) / "outputs" / "report.json").read_text())


def assert_completed(change) -> None:  # type: ignore[no-untyped-def]
    assert change.status == Status.FINISHED, change
    assert change.end_reason == EndReason.COMPLETED, change
