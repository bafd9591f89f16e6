"""A submission whose caller gives up (a client deadline cancels the handler)
after the job was stored still runs, and so does one whose store's reply was
lost: a job is never left stored but unqueued."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from plumbing.database import lost_connection
from plumbing.statuses import Status
from services.operator_engine.persistence.models import EngineJob
from testkit.pg_proxy import commit_reply_cutter
from tests.operator_engine.engine_harness import wait_until
from tests.operator_engine.orchestrator_harness import WORKFLOW, orchestrator_on, spec


async def test_a_cancelled_submission_still_runs_its_stored_job(tmp_path):
    async with orchestrator_on(tmp_path) as (orchestrator, db, _):
        caller = asyncio.create_task(orchestrator.submit(spec("given-up"), WORKFLOW))
        await asyncio.sleep(0)  # the insert is queued
        caller.cancel()
        stored = lambda: db.transaction(  # noqa: E731
            lambda s: s.scalar(select(EngineJob.status).where(EngineJob.job_id == "given-up"))
        )
        await wait_until(lambda: stored() == Status.FINISHED, what="the stored job to finish")
        assert await orchestrator.submit(spec("given-up"), WORKFLOW) is False  # and it is known, once


async def test_a_resubmission_after_a_lost_commit_reply_runs_the_stored_job(tmp_path, postgres_url):
    """The submission's INSERT committed but its reply was lost: the submission
    failed (UNAVAILABLE to the operator-service, which submits again), and the
    retry, finding the job stored, used to leave it there unqueued until the
    engine's next restart."""
    with commit_reply_cutter(postgres_url) as proxy:
        async with orchestrator_on(tmp_path, database_url=proxy.url(postgres_url)) as (orchestrator, db, _):
            proxy.arm()
            with pytest.raises(OperationalError) as failed:
                await orchestrator.submit(spec("lost-reply"), WORKFLOW)
            assert lost_connection(failed.value) and proxy.cut == 1
            assert await orchestrator.submit(spec("lost-reply"), WORKFLOW) is False  # stored already
            for _ in range(1500):
                status = db.transaction(
                    lambda s: s.scalar(select(EngineJob.status).where(EngineJob.job_id == "lost-reply"))
                )
                if status == Status.FINISHED:
                    break
                await asyncio.sleep(0.02)
            assert status == Status.FINISHED
