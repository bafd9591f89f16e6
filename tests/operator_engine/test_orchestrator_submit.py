"""A submission whose caller gives up (a client deadline cancels the handler)
after the job was stored still runs: it is never left stored but unqueued."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from plumbing.statuses import Status
from services.operator_engine.persistence.models import EngineJob
from tests.operator_engine.orchestrator_harness import WORKFLOW, orchestrator_on, spec


async def test_a_cancelled_submission_still_runs_its_stored_job(tmp_path):
    async with orchestrator_on(tmp_path) as (orchestrator, db, _):
        caller = asyncio.create_task(orchestrator.submit(spec("given-up"), WORKFLOW))
        await asyncio.sleep(0)  # the insert is queued
        caller.cancel()
        for _ in range(200):
            status = db.transaction(lambda s: s.scalar(select(EngineJob.status).where(EngineJob.job_id == "given-up")))
            if status == Status.FINISHED:
                break
            await asyncio.sleep(0.02)
        assert status == Status.FINISHED
        assert await orchestrator.submit(spec("given-up"), WORKFLOW) is False  # and it is known, once
