"""A control plane for the operator-service's tests and benchmark: the real
engine with its no-op backend, one or more operator-services (in-process or
as a subprocess), all over real gRPC on free ports and one database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy

from c2d.common.v1 import common_pb2
from c2d.operator.v1 import operator_pb2, operator_pb2_grpc
from plumbing import auth
from plumbing.server import RunningServer
from services.operator_engine import server as engine_server
from services.operator_engine.settings import EngineSettings
from services.operator_service import server as operator_server
from services.operator_service.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENT = "local-cpu"  # the engine's default environment id
NOOP_PATH = [1, 10, 20, 30, 40, 60, 70]  # a job's history on the no-op backend


def workflow() -> common_pb2.Workflow:
    return common_pb2.Workflow(
        datasets=[common_pb2.WorkflowAsset(did="did:op:" + "ab" * 32)],
        raw_algorithm="print('hello')",
        container=common_pb2.AlgorithmContainer(entrypoint="python3 $ALGO", image="python", tag="3"),
    )


def create_request(
    request_id: str | None = None, owner: str = "0xowner", environment_id: str = ENVIRONMENT
) -> operator_pb2.CreateJobRequest:
    return operator_pb2.CreateJobRequest(
        request_id=uuid.uuid4().hex if request_id is None else request_id,
        owner=owner,
        environment_id=environment_id,
        workflow=workflow(),
    )


def engine_settings(database_url: str, address: str = "127.0.0.1:0", **overrides: object) -> EngineSettings:
    values: dict[str, object] = {"max_jobs": 1000, "heartbeat_s": 0.2, "metrics_address": "127.0.0.1:0"}
    values.update(overrides)
    return EngineSettings(address=address, database_url=database_url, backend="noop", **values)  # type: ignore[arg-type]


def operator_settings(database_url: str, engine_port: int, **overrides: object) -> OperatorSettings:
    values: dict[str, object] = {"engine_liveness_s": 5.0, "reconnect_max_s": 0.5, "metrics_address": "127.0.0.1:0"}
    values.update(overrides)
    return OperatorSettings(
        address="127.0.0.1:0",
        database_url=database_url,
        engines=(f"local=127.0.0.1:{engine_port}",),
        **values,  # type: ignore[arg-type]
    )


class Operator:
    """An OperatorService stub that presents the service credential."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.channel = auth.internal_channel(f"127.0.0.1:{port}")
        self.stub = operator_pb2_grpc.OperatorServiceStub(self.channel)
        self.metadata = auth.bearer(token if token is not None else auth.service_token())

    async def close(self) -> None:
        await self.channel.close()

    async def create(self, request: operator_pb2.CreateJobRequest | None = None) -> common_pb2.Job:
        return (await self.stub.CreateJob(request or create_request(), metadata=self.metadata, timeout=30)).job

    async def get(self, job_id: str) -> common_pb2.Job:
        return (
            await self.stub.GetJob(operator_pb2.GetJobRequest(job_id=job_id), metadata=self.metadata, timeout=30)
        ).job

    async def environments(self) -> list[common_pb2.Environment]:
        response = await self.stub.ListEnvironments(
            operator_pb2.ListEnvironmentsRequest(), metadata=self.metadata, timeout=30
        )
        return list(response.environments)

    async def watch(self, job_ids: list[str], after_sequence: int = 0) -> list[common_pb2.Job]:
        call = self.stub.WatchJobs(
            operator_pb2.WatchJobsRequest(job_ids=job_ids, after_sequence=after_sequence),
            metadata=self.metadata,
            timeout=120,
        )
        return [response.job async for response in call]


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0, every: float = 0.05
) -> None:
    """Polls until `check` holds; generous timeouts, the machine is shared."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


async def wait_available(operator: Operator, timeout: float = 60.0) -> None:
    async def available() -> bool:
        return any(env.available for env in await operator.environments())

    await eventually(available, "the engine's environment to be available", timeout)


async def wait_finished(operator: Operator, job_ids: list[str], timeout: float = 120.0) -> None:
    async def finished() -> bool:
        for job_id in job_ids:
            if (await operator.get(job_id)).status != 70:
                return False
        return True

    await eventually(finished, f"{len(job_ids)} job(s) to reach 70", timeout, every=0.2)


@dataclass
class ControlPlane:
    database_url: str
    engine: RunningServer
    operators: list[RunningServer]
    clients: list[Operator] = field(default_factory=list)

    @property
    def operator(self) -> Operator:
        return self.clients[0]


@contextlib.asynccontextmanager
async def control_plane(
    database_url: str, replicas: int = 1, engine: dict | None = None, **operator_overrides: object
) -> AsyncIterator[ControlPlane]:
    """The real engine (no-op backend) and `replicas` operator-services on one database."""
    engine_running = await engine_server.start(engine_settings(database_url, **(engine or {})))
    operators: list[RunningServer] = []
    clients: list[Operator] = []
    try:
        for _ in range(replicas):
            operators.append(
                await operator_server.start(operator_settings(database_url, engine_running.port, **operator_overrides))
            )
            clients.append(Operator(operators[-1].port))
        plane = ControlPlane(database_url, engine_running, operators, clients)
        await wait_available(plane.operator)
        yield plane
    finally:
        for client in clients:
            await client.close()
        for running in operators:
            await running.stop(1)
        await engine_running.stop(1)


class OperatorProcess:
    """`python -m services.operator_service` as a real process (to kill -9)."""

    def __init__(self, database_url: str, engine_port: int, log_path: Path, **env: str) -> None:
        self.log_path = log_path
        self.env = {
            **os.environ,
            "C2D_OPERATOR_ADDRESS": "127.0.0.1:0",
            "C2D_OPERATOR_DATABASE_URL": database_url,
            "C2D_OPERATOR_ENGINES": f"local=127.0.0.1:{engine_port}",
            "C2D_OPERATOR_RECONNECT_MAX_S": "0.5",
            "C2D_SERVICE_TOKEN": auth.service_token(),
            "C2D_LOG_LEVEL": "INFO",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    async def start(self, timeout: float = 60.0) -> int:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        offset = log.tell()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.operator_service"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                found = re.search(rb"operator-service listening on port (\d+)", f.read())
            if found:
                self.port = int(found.group(1))
                return self.port
            if self.process.poll() is not None:
                raise AssertionError(f"the operator-service exited with {self.process.returncode}: see {self.log_path}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"the operator-service did not start within {timeout:g} s: see {self.log_path}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def query(database_url: str, sql: str, **params: object) -> list[tuple]:
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sqlalchemy.text(sql), params)]
    finally:
        engine.dispose()
