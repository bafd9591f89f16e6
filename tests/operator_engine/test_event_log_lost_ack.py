"""The engine's event log after a COMMIT whose reply was lost: PostgreSQL
committed the batch, the engine saw its connection die. The retry used to
write the same sequences again (a duplicate key, which is no lost connection:
the appends raised and their jobs were broken); now the log adopts what
landed: each change stored once, no gap, the appenders told the sequences
stored, the job rows as their last change left them.

The fault is real: a proxy between the engine's database engine and the
PostgreSQL server (testkit.pg_proxy) lets the COMMIT through and closes both
connections before the server's reply reaches the engine."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from plumbing.database import Database
from plumbing.statuses import EndReason, Status
from services.operator_engine.domain.changes import StateChange
from services.operator_engine.persistence.event_log import EventLog
from services.operator_engine.persistence.models import Base, EngineEvent, EngineJob
from testkit.pg_proxy import commit_reply_cutter

JOBS = [f"lostack-{i}" for i in range(4)]
LATE = [f"late-{i}" for i in range(2)]  # appended while the log sorts out what landed


def _store_jobs(db: Database, job_ids: list[str]) -> None:
    rows = [
        {"job_id": job_id, "environment_id": "env", "workflow": b"w", "created_at": datetime.now(UTC), "spec": {}}
        for job_id in job_ids
    ]
    db.transaction(lambda s: s.execute(insert(EngineJob), rows))


@pytest.mark.parametrize("cuts", [1, 3])
async def test_changes_whose_commit_reply_was_lost_are_adopted_once(postgres_url: str, cuts: int) -> None:
    direct = Database(postgres_url, Base.metadata)
    direct.create_schema()
    _store_jobs(direct, JOBS + LATE)
    appended: dict[tuple[str, int], int] = {}
    with commit_reply_cutter(postgres_url) as proxy:
        db = Database(proxy.url(postgres_url), Base.metadata)
        events = EventLog(db)
        await events.start()

        async def append(change: StateChange, stage: str | None = None) -> None:
            appended[(change.job_id, change.status)] = await events.append(change, stage)

        async def run(job_id: str) -> None:  # as a job's task does: one change after the other
            await append(StateChange(job_id, Status.RUNNING_ALGORITHM), "algorithm")
            finished = StateChange(job_id, Status.FINISHED, EndReason.COMPLETED, results={"files": [job_id]})
            await append(finished, "publish")

        try:
            await asyncio.gather(*(append(StateChange(job_id, Status.STARTED), "configure") for job_id in JOBS))
            # The next COMMIT is the batch of every job's RUNNING_ALGORITHM (they arrive together);
            # with cuts > 1, the COMMITs of the attempts after it lose their replies too.
            proxy.arm(cuts)
            runs = [asyncio.create_task(run(job_id)) for job_id in JOBS]
            assert await asyncio.to_thread(proxy.cut_happened.wait, 60)
            runs += [asyncio.create_task(append(StateChange(job_id, Status.STARTED), "configure")) for job_id in LATE]
            await asyncio.wait_for(asyncio.gather(*runs), 120)
            assert proxy.cut == cuts

            def stored_events(session):
                return [
                    (e.sequence, e.job_id, e.change["status"], e.recorded_at)
                    for e in session.scalars(select(EngineEvent).order_by(EngineEvent.sequence))
                ]

            stored = direct.transaction(stored_events)
            expected = {(job_id, status) for job_id in JOBS for status in (10, 40, 70)} | {(j, 10) for j in LATE}
            # Each change once, and nothing else; no gap.
            assert collections.Counter((job_id, status) for _, job_id, status, _ in stored) == dict.fromkeys(
                expected, 1
            )
            assert [sequence for sequence, *_ in stored] == list(range(1, len(expected) + 1))
            # Every appender was told the sequence its change is stored with.
            assert appended == {(job_id, status): sequence for sequence, job_id, status, _ in stored}
            # The cut batch did land, all in one transaction (one recorded_at): its changes were adopted.
            assert len({at for _, _, status, at in stored if status == Status.RUNNING_ALGORITHM}) == 1
            # Each job moved in order, and its row is as its last change left it.
            for job_id in JOBS:
                assert appended[(job_id, 10)] < appended[(job_id, 40)] < appended[(job_id, 70)]
            rows = direct.transaction(
                lambda s: {j.job_id: (j.status, j.stage, j.results) for j in s.scalars(select(EngineJob))}
            )
            assert rows == {
                **{job_id: (70, "done", {"files": [job_id]}) for job_id in JOBS},
                **{job_id: (10, "configure", None) for job_id in LATE},
            }
            # The in-memory tail has them all, in order, with no gap: a follower reads the store's log.
            assert events.latest == len(stored)
            for after in range(len(stored)):
                tail = [(c.sequence, c.job_id, c.status) for c in await events.read_after(after)]
                assert tail == [(sequence, job_id, status) for sequence, job_id, status, _ in stored[after:]]
        finally:
            await events.close()
            with contextlib.suppress(Exception):
                db.close()
            direct.close()
