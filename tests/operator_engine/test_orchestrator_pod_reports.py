"""A pod stage ends when its pod reports how it ended, not when the pod's
process has finished exiting: the job moves on while the pod ends, and a pod
still ending when the engine closes is stopped with it."""

from __future__ import annotations

import asyncio

from plumbing.database import Database, sqlite_url
from plumbing.statuses import Status
from services.operator_engine.backends.base import StageExit
from services.operator_engine.backends.noop import NoopBackend
from services.operator_engine.domain.event_log import EventLog
from services.operator_engine.domain.orchestrator import Orchestrator
from services.operator_engine.persistence.models import Base
from tests.operator_engine.test_orchestrator_submit import ENVIRONMENT, spec


class LingeringPods(NoopBackend):
    """Pods that report, then take as long as they are let to exit."""

    def __init__(self, on_configured, on_published) -> None:  # type: ignore[no-untyped-def]
        super().__init__(on_configured, on_published)
        self.exit_now = asyncio.Event()
        self.still_ending: set[str] = set()
        self.cancelled: list[str] = []

    async def _linger(self, stage: str) -> StageExit:
        self.still_ending.add(stage)
        try:
            await self.exit_now.wait()
        except asyncio.CancelledError:
            self.cancelled.append(stage)
            raise
        finally:
            self.still_ending.discard(stage)
        return StageExit(0)

    async def configure(self, job, timeout_s):  # type: ignore[no-untyped-def]
        await super().configure(job, timeout_s)
        return await self._linger("configure")

    async def publish(self, job, timeout_s):  # type: ignore[no-untyped-def]
        await super().publish(job, timeout_s)
        return await self._linger("publish")


async def test_a_job_moves_on_when_its_pods_report_and_ending_pods_stop_with_the_engine(tmp_path):
    db = Database(sqlite_url(tmp_path / "engine.db"), Base.metadata)
    db.create_schema()
    events = EventLog(db)
    await events.start()
    orchestrator: Orchestrator

    async def configured(job_id: str) -> None:
        await orchestrator.report_progress(orchestrator._runs[job_id], Status.PROVISIONING_SUCCESS, "", "")

    async def published(job_id: str) -> None:
        orchestrator.record_results(orchestrator._runs[job_id], {"storage": "none"}, "")

    backend = LingeringPods(configured, published)
    orchestrator = Orchestrator(db, events, backend, ENVIRONMENT, tmp_path / "ws",
                                configure_timeout_s=10, publish_timeout_s=10, queue_timeout_s=60)
    await orchestrator.start()
    try:
        assert await orchestrator.submit(spec("quick"), b"workflow")
        for _ in range(500):
            if await orchestrator.status_of("quick") == Status.FINISHED:
                break
            await asyncio.sleep(0.01)
        assert await orchestrator.status_of("quick") == Status.FINISHED
        # Finished with both pods still ending: nothing waited for their exits.
        assert backend.still_ending == {"configure", "publish"}
    finally:
        await orchestrator.close()
        await events.close()
        db.close()
    assert sorted(backend.cancelled) == ["configure", "publish"]
