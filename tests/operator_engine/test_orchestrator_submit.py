"""A submission whose caller gives up (a client deadline cancels the handler)
after the job was stored still runs: it is never left stored but unqueued."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from plumbing.database import Database, sqlite_url
from plumbing.statuses import Status
from services.operator_engine.backends.noop import NoopBackend
from services.operator_engine.domain.event_log import EventLog
from services.operator_engine.domain.orchestrator import EnvironmentSpec, Orchestrator
from services.operator_engine.persistence.models import Base, EngineJob

ENVIRONMENT = EnvironmentSpec(
    id="local-cpu", description="", cpu_cores=1, memory_bytes=1 << 30, disk_bytes=1 << 30, max_jobs=4,
    max_job_duration_s=60, storage_expiry_s=60, price_per_minute="0", log_max_bytes=1 << 20,
)


def spec(job_id: str) -> dict[str, object]:
    return {
        "job_id": job_id, "environment_id": "local-cpu", "entrypoint": "python3 $ALGO", "image": "python",
        "allow_network": False, "algorithm_timeout_s": 0.0, "dataset_dids": ["did:op:x"], "algorithm_did": "",
    }


async def test_a_cancelled_submission_still_runs_its_stored_job(tmp_path):
    db = Database(sqlite_url(tmp_path / "engine.db"), Base.metadata)
    db.create_schema()
    events = EventLog(db)
    await events.start()
    orchestrator: Orchestrator

    async def configured(job_id: str) -> None:
        await orchestrator.report_progress(orchestrator._runs[job_id], Status.PROVISIONING_SUCCESS, "", "")

    async def published(job_id: str) -> None:
        orchestrator.record_results(orchestrator._runs[job_id], {"storage": "none"}, "")

    orchestrator = Orchestrator(db, events, NoopBackend(configured, published), ENVIRONMENT, tmp_path / "ws",
                                configure_timeout_s=10, publish_timeout_s=10, queue_timeout_s=60)
    await orchestrator.start()
    try:
        caller = asyncio.create_task(orchestrator.submit(spec("given-up"), b"workflow"))
        await asyncio.sleep(0)  # the insert is queued
        caller.cancel()
        for _ in range(200):
            status = db.transaction(lambda s: s.scalar(select(EngineJob.status).where(EngineJob.job_id == "given-up")))
            if status == Status.FINISHED:
                break
            await asyncio.sleep(0.02)
        assert status == Status.FINISHED
        assert await orchestrator.submit(spec("given-up"), b"workflow") is False  # and it is known, once
    finally:
        await orchestrator.close()
        await events.close()
        db.close()
