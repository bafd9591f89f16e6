"""The engine's durable, numbered event log (the domain's EventLog port).

Every state change is written to the store (with the job's new status, in
one transaction) before anyone can stream it. Sequences are assigned here, by
one writer, so they have no gaps and commit in order: a reader that saw N has
seen everything before N. Appends that arrive together are committed as one
transaction (group commit), which is what keeps a busy engine fast.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import json
import logging
from collections.abc import Sequence

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from plumbing.database import Database, GroupCommit, lost_connection
from plumbing.statuses import TERMINAL
from services.operator_engine.domain.changes import StateChange, now
from services.operator_engine.persistence.models import EngineEvent, EngineJob

log = logging.getLogger("c2d.engine")
# Recent changes kept in memory: a follower that keeps up never reads the store.
TAIL = 20_000
# The pause between attempts at an append while the database is away, doubling from the first to the last.
APPEND_RETRY_S = (0.1, 2.0)


@dataclasses.dataclass(frozen=True)
class _Append:
    change: StateChange
    stage: str | None
    workflow: bytes | None


class EventLog:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._latest = 0
        self._tail: collections.deque[StateChange] = collections.deque(maxlen=TAIL)
        self._appends: GroupCommit[_Append, StateChange] = GroupCommit(db, self._write, committed=self._committed)
        self._appended = asyncio.Condition()
        # A write whose commit was not confirmed (the connection went away, maybe
        # after PostgreSQL committed and before its reply came) may have landed:
        # the next write reads what did land and adopts it (_write).
        self._uncertain = False
        # Adopted changes whose appenders have not come back yet: their retry gets this
        # sequence (one cancelled for good leaves its entry: a batch at most per lost reply).
        self._unclaimed: dict[tuple[str, str], int] = {}
        self._outcome: tuple[list[StateChange], dict[tuple[str, str], int]] = ([], {})

    @property
    def latest(self) -> int:
        return self._latest

    async def start(self) -> None:
        self._latest = await self._db.run(
            lambda s: s.scalar(select(func.coalesce(func.max(EngineEvent.sequence), 0))) or 0
        )

    async def close(self) -> None:
        await self._appends.close()

    async def append(self, change: StateChange, stage: str | None = None, workflow: bytes | None = None) -> int:
        """Records the change durably and returns its sequence.

        `stage` (the job's new stage, if it changes) is stored in the same
        transaction, so recovery never sees a status and a stage that disagree;
        so is `workflow` (what the job keeps of it, once a stage that read
        secrets is over), so no secret outlives the change that ends its use.

        A database that went away (a restart, a network cut) is waited for: the
        job cannot move on before its change is durable, and giving up would
        leave it in memory where no one resumes it. If only the reply to the
        commit was lost, the change did land: the retry gets the sequence it
        landed with, not a second one (_write).
        """
        pause = APPEND_RETRY_S[0]
        while True:
            try:
                return (await self._appends.submit(_Append(change, stage, workflow))).sequence
            except Exception as exc:
                if not lost_connection(exc):
                    raise
                log.warning("the event log's database is unreachable (%s); retrying in %g s", type(exc).__name__, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, APPEND_RETRY_S[1])

    def _write(self, session: Session, batch: Sequence[_Append]) -> list[StateChange]:
        # Runs in the database thread, one batch at a time: the state cannot move meanwhile
        # (_committed, on the loop, moves it between batches, once the commit is confirmed).
        latest, landed, unclaimed = self._latest, [], dict(self._unclaimed)
        if self._uncertain:
            # Retrying what landed would meet a duplicate key (same sequences) or double the
            # change (later ones): what landed is taken as written, and goes into the tail.
            landed = _events_after(session, latest)
            unclaimed.update((_identity(change), change.sequence) for change in landed)
            latest = landed[-1].sequence if landed else latest
        self._uncertain = True  # until _committed says otherwise
        results, written = [], []
        for append in batch:
            claimed = unclaimed.pop(_identity(append.change), None) if unclaimed else None
            change = dataclasses.replace(append.change, sequence=claimed or latest + 1)
            if claimed is None:
                latest += 1
                written.append(dataclasses.replace(append, change=change))
            results.append(change)
        if written:
            _write_batch(session, written)
        self._outcome = (landed + [append.change for append in written], unclaimed)
        return results

    def _committed(self, _changes: Sequence[StateChange]) -> None:
        logged, self._unclaimed = self._outcome
        self._uncertain = False
        if logged:
            self._tail.extend(logged)
            self._latest = logged[-1].sequence
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._appended:
            self._appended.notify_all()

    async def read_after(self, sequence: int, limit: int = 500) -> list[StateChange]:
        tail = self._tail
        if tail and tail[0].sequence <= sequence + 1:
            start = sequence + 1 - tail[0].sequence
            return list(itertools.islice(tail, start, start + limit))

        return await self._db.run(lambda s: _events_after(s, sequence, limit))

    async def wait_beyond(self, sequence: int, timeout: float) -> bool:
        """Waits until an event after `sequence` exists, or the timeout."""
        async with self._appended:
            try:
                # in this task, not wait_for's inner one: on 3.11 a stream cancelled
                # while that task re-took the lock raised "Lock is not acquired"
                async with asyncio.timeout(timeout):
                    await self._appended.wait_for(lambda: self._latest > sequence)
            except TimeoutError:
                return False
        return True


def _events_after(session: Session, sequence: int, limit: int | None = None) -> list[StateChange]:
    rows = session.scalars(
        select(EngineEvent).where(EngineEvent.sequence > sequence).order_by(EngineEvent.sequence).limit(limit)
    )
    return [StateChange.from_json(row.change, row.sequence) for row in rows]


def _identity(change: StateChange) -> tuple[str, str]:
    """A change as stored (its sequence aside): a retry of a landed change has the same."""
    return change.job_id, json.dumps(change.to_json(), sort_keys=True)


def _write_batch(session: Session, batch: list[_Append]) -> None:
    """One multi-row INSERT for the events and one UPDATE per job touched:
    the ORM's unit of work per row was most of the engine's time."""
    recorded = now()
    events = []
    jobs: dict[str, dict[str, object]] = {}
    for append in batch:
        change, stage = append.change, append.stage
        events.append(
            {"sequence": change.sequence, "job_id": change.job_id, "change": change.to_json(), "recorded_at": recorded}
        )
        values = jobs.setdefault(change.job_id, {})  # later changes of a job override earlier ones
        values["status"] = change.status
        if stage is not None:
            values["stage"] = stage
        if change.status in TERMINAL:
            values["stage"] = "done"
        if change.results is not None:
            values["results"] = change.results
        if change.results_did:
            values["results_did"] = change.results_did
        if append.workflow is not None:
            values["workflow"] = append.workflow
    session.connection().execute(insert(EngineEvent), events)
    # Jobs whose updates set the same columns share one executemany.
    shapes: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for job_id, values in jobs.items():
        shapes.setdefault(tuple(sorted(values)), []).append({"target_job_id": job_id, **values})
    for columns, rows in shapes.items():
        statement = (
            update(EngineJob)
            .where(EngineJob.job_id == bindparam("target_job_id"))
            .values({column: bindparam(column) for column in columns})
        )
        session.connection().execute(statement, rows)
