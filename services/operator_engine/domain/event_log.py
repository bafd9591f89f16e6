"""The engine's durable, numbered event log.

Every state change is written to the store (with the job's new status, in
one transaction) before anyone can stream it. Sequences are assigned here, by
one writer, so they have no gaps and commit in order: a reader that saw N has
seen everything before N. Appends that arrive together are committed as one
transaction (group commit), which is what keeps a busy engine fast.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from plumbing.database import Database
from plumbing.statuses import TERMINAL
from services.operator_engine.domain.changes import StateChange, now
from services.operator_engine.persistence.models import EngineEvent, EngineJob


class EventLog:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._latest = 0
        self._pending: list[tuple[StateChange, str | None, asyncio.Future[int]]] = []
        self._wake = asyncio.Event()
        self._appended = asyncio.Condition()
        self._flusher: asyncio.Task[None] | None = None

    @property
    def latest(self) -> int:
        return self._latest

    async def start(self) -> None:
        self._latest = await self._db.run(
            lambda s: s.scalar(select(func.coalesce(func.max(EngineEvent.sequence), 0))) or 0
        )
        self._flusher = asyncio.create_task(self._flush_forever(), name="event-log-flusher")

    async def close(self) -> None:
        if self._flusher:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def append(self, change: StateChange, stage: str | None = None) -> int:
        """Records the change durably and returns its sequence.

        `stage` (the job's new stage, if it changes) is stored in the same
        transaction, so recovery never sees a status and a stage that disagree.
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((change, stage, future))
        self._wake.set()
        return await future

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            first = self._latest + 1
            try:
                await self._db.run(_writer(batch, first))
            except Exception as exc:  # noqa: BLE001 - each appender gets the failure
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self._latest = first + len(batch) - 1
            for offset, (_, _, future) in enumerate(batch):
                if not future.done():
                    future.set_result(first + offset)
            async with self._appended:
                self._appended.notify_all()

    async def read_after(self, sequence: int, limit: int = 500) -> list[StateChange]:
        def read(session: Session) -> list[StateChange]:
            rows = session.scalars(
                select(EngineEvent)
                .where(EngineEvent.sequence > sequence)
                .order_by(EngineEvent.sequence)
                .limit(limit)
            )
            return [StateChange.from_json(row.change, row.sequence) for row in rows]

        return await self._db.run(read)

    async def wait_beyond(self, sequence: int, timeout: float) -> bool:
        """Waits until an event after `sequence` exists, or the timeout."""
        async with self._appended:
            try:
                await asyncio.wait_for(
                    self._appended.wait_for(lambda: self._latest > sequence), timeout
                )
            except asyncio.TimeoutError:
                return False
        return True


def _writer(batch: list[tuple[StateChange, str | None, asyncio.Future[int]]], first: int) -> Callable[[Session], None]:
    """One multi-row INSERT for the events and one UPDATE per job touched:
    the ORM's unit of work per row was most of the engine's time."""

    def write(session: Session) -> None:
        recorded = now()
        events = []
        jobs: dict[str, dict[str, object]] = {}
        for offset, (change, stage, _) in enumerate(batch):
            events.append(
                {"sequence": first + offset, "job_id": change.job_id, "change": change.to_json(), "recorded_at": recorded}
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
        session.execute(insert(EngineEvent), events)
        # Jobs whose updates set the same columns share one executemany.
        table = EngineJob.__table__
        shapes: dict[tuple[str, ...], list[dict[str, object]]] = {}
        for job_id, values in jobs.items():
            shapes.setdefault(tuple(sorted(values)), []).append({"target_job_id": job_id, **values})
        for columns, rows in shapes.items():
            statement = (
                update(table)
                .where(table.c.job_id == bindparam("target_job_id"))
                .values({column: bindparam(column) for column in columns})
            )
            session.connection().execute(statement, rows)

    return write
