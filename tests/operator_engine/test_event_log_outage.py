"""The engine's event log waits out a database that went away (found by the
fault trials, issue 19: a PostgreSQL restart failed an append, the job's task
died with its status moved on in memory only, and the job stayed in 1 or 20
for good). The append now returns once the server is back, with the sequence
it would have had."""

from __future__ import annotations

import asyncio
import contextlib

from plumbing.database import Database, lost_connection
from services.operator_engine.domain.changes import StateChange
from services.operator_engine.persistence.event_log import EventLog
from services.operator_engine.persistence.models import Base
from testkit.faults import private_postgres
from testkit.raw_rows import tables_holding
from tests.operator_engine.engine_harness import wait_until


async def test_an_append_while_postgresql_is_down_lands_once_it_is_back(caplog):
    with private_postgres() as server:
        url = server.create_database("engine")
        db = Database(url, Base.metadata)
        db.create_schema()
        events = EventLog(db)
        await events.start()
        try:
            assert await events.append(StateChange(job_id="before", status=10)) == 1
            await asyncio.to_thread(server.crash)
            pending = asyncio.create_task(events.append(StateChange(job_id="during", status=10)))
            # it has tried, and failed (not: a second has passed, which says nothing on a loaded host)
            await wait_until(lambda: "database is unreachable" in caplog.text, what="a failed append")
            assert not pending.done()
            await asyncio.to_thread(server.serve)
            assert await asyncio.wait_for(pending, 60) == 2
            assert [(c.sequence, c.job_id) for c in await events.read_after(0)] == [(1, "before"), (2, "during")]
            assert tables_holding(url, {"during": "during"})["during"] == {"engine_events"}
        finally:
            await events.close()
            with contextlib.suppress(Exception):
                db.close()


def test_a_lost_connection_is_told_from_a_refusal():
    from sqlalchemy.exc import IntegrityError, OperationalError

    assert lost_connection(OperationalError("SELECT 1", {}, Exception("server closed the connection")))
    assert not lost_connection(IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not lost_connection(ValueError("no"))
