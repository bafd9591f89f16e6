"""An Orchestrator on a SQLite store with the no-op backend (or a variant of
it), for tests of the orchestrator itself, with no server around it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from c2d.common.v1 import common_pb2
from plumbing.database import Database, sqlite_url
from services.operator_engine.backends.noop import NoopBackend
from services.operator_engine.domain import stages
from services.operator_engine.domain.jobs import EnvironmentSpec
from services.operator_engine.domain.orchestrator import Orchestrator
from services.operator_engine.persistence.event_log import EventLog
from services.operator_engine.persistence.jobs import JobTable
from services.operator_engine.persistence.models import Base

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
    tmp_path: Path, backend: Callable[[], NoopBackend] = NoopBackend
) -> AsyncIterator[tuple[Orchestrator, Database, NoopBackend]]:
    """The no-op backend's pods report to the orchestrator as real pods do."""
    db = Database(sqlite_url(tmp_path / "engine.db"), Base.metadata)
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
