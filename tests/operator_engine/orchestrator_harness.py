"""An Orchestrator on a SQLite store (or the database named) with the no-op
backend (or a variant of it), for tests of the orchestrator itself, with no
server around it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import job_agent_pb2_grpc
from plumbing.database import Database, sqlite_url
from plumbing.server import Registration, start_server
from plumbing.statuses import Status
from services.operator_engine.api.servicers import JobAgentServicer
from services.operator_engine.backends.noop import NoopBackend
from services.operator_engine.domain import stages
from services.operator_engine.domain.jobs import EnvironmentSpec, JobSpec, StageExit
from services.operator_engine.domain.orchestrator import Orchestrator
from services.operator_engine.persistence.event_log import EventLog
from services.operator_engine.persistence.jobs import JobTable
from services.operator_engine.persistence.models import Base
from services.operator_engine.server import JOB_AGENT_SERVICE
from tests.operator_engine.engine_harness import WAIT_S

ENVIRONMENT = EnvironmentSpec(
    id="local-cpu",
    description="",
    cpu_cores=1,
    memory_bytes=1 << 30,
    disk_bytes=1 << 30,
    max_jobs=4,
    max_job_duration_s=60,
    storage_expiry_s=60,
    price_per_minute="0",
    log_max_bytes=1 << 20,
)

# A job's serialized workflow: the orchestrator redacts it as its stages end.
WORKFLOW = common_pb2.Workflow(
    datasets=[common_pb2.WorkflowAsset(did="did:op:x", files=[common_pb2.FileLocation(type="url", url="http://x/")])],
    raw_algorithm="print(1)",
).SerializeToString(deterministic=True)


def spec(job_id: str) -> dict[str, object]:
    return {
        "job_id": job_id,
        "environment_id": "local-cpu",
        "entrypoint": "python3 $ALGO",
        "image": "python",
        "allow_network": False,
        "algorithm_timeout_s": 0.0,
        "dataset_dids": ["did:op:x"],
        "algorithm_did": "",
    }


@contextlib.asynccontextmanager
async def orchestrator_on(
    tmp_path: Path, backend: Callable[[], NoopBackend] = NoopBackend, database_url: str = ""
) -> AsyncIterator[tuple[Orchestrator, Database, NoopBackend]]:
    """The no-op backend's pods report to the orchestrator as real pods do."""
    db = Database(database_url or sqlite_url(tmp_path / "engine.db"), Base.metadata)
    db.create_schema()
    events = EventLog(db)
    await events.start()
    pods = backend()
    orchestrator = Orchestrator(
        JobTable(db),
        events,
        pods,
        ENVIRONMENT,
        tmp_path / "ws",
        pipeline=stages.pipeline(configure_timeout_s=10, publish_timeout_s=10),
        queue_timeout_s=60,
    )
    pods.agent = orchestrator
    await orchestrator.start()
    try:
        yield orchestrator, db, pods
    finally:
        await orchestrator.close()
        await events.close()
        db.close()


class HeldPods(NoopBackend):
    """Pods that start, report nothing and never exit: the test reports for them."""

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[str, asyncio.Future[JobSpec]] = {}
        self.tokens: dict[str, str] = {}  # job id -> the token its pods were handed

    def _started(self, stage: str) -> asyncio.Future[JobSpec]:
        return self.started.setdefault(stage, asyncio.get_running_loop().create_future())

    async def run_pod(self, stage, job):  # type: ignore[no-untyped-def]
        self.tokens[job.job_id] = job.token  # the backend is handed the job's token, as a pod is
        future = self._started(stage.name)
        if not future.done():  # the stage's first job
            future.set_result(job)
        await asyncio.Event().wait()
        return StageExit(0)

    async def reached(self, stage: str) -> JobSpec:
        return await asyncio.wait_for(self._started(stage), WAIT_S)


@contextlib.asynccontextmanager
async def job_agent_on(orchestrator: Orchestrator) -> AsyncIterator[job_agent_pb2_grpc.JobAgentServiceStub]:
    """The engine's JobAgentService in front of `orchestrator`, over a real channel."""
    servicer = JobAgentServicer(orchestrator, lambda: [common_pb2.Environment(id="local-cpu")])
    running = await start_server(
        "127.0.0.1:0",
        [Registration(JOB_AGENT_SERVICE, job_agent_pb2_grpc.add_JobAgentServiceServicer_to_server, servicer)],
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield job_agent_pb2_grpc.JobAgentServiceStub(channel)
    finally:
        await running.stop(0)


async def reached(orchestrator: Orchestrator, job_id: str, status: Status) -> None:
    """Until the job's recorded status is `status` (bounded by WAIT_S: the machine is shared)."""
    deadline = time.monotonic() + WAIT_S
    while (now := await orchestrator.status_of(job_id)) != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is in status {now}, not {status}, after {WAIT_S:g} s")
        await asyncio.sleep(0.01)
