"""Queries and writes on jobs, their history and engines.

Functions take the caller's session (the caller owns the transaction) and are
named by what they do to the store. Every status change goes through
`apply_changes`, which consults the shared state machine.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from plumbing import errors
from plumbing.statuses import EndReason, Status, can_transition, end_reason_for, is_terminal
from services.operator_service.persistence.models import Engine, Job, JobEvent

log = logging.getLogger("c2d.operator")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class IncomingChange:
    """A state change as an engine streamed it."""

    sequence: int
    job_id: str
    status: int
    end_reason: int
    error_code: str
    error_message: str
    time: datetime
    results: dict[str, Any] | None
    outcome: dict[str, Any] | None
    results_did: str


@dataclass(frozen=True)
class JobFilter:
    owner: str = ""
    statuses: tuple[int, ...] = ()
    environment_id: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None


# -- jobs ---------------------------------------------------------------------


def create_job(session: Session, job: Job) -> tuple[Job, bool]:
    """Inserts the job, or returns the one created earlier with its request id."""
    existing = session.scalar(select(Job).where(Job.request_id == job.request_id))
    if existing is not None:
        return existing, False
    session.add(job)
    session.flush()
    _record_event(session, job, Status.WARMING_UP, EndReason.NONE, "", "", "", 0, job.created_at)
    return job, True


def read_job(session: Session, job_id: str, lock: bool = False) -> Job | None:
    query = select(Job).where(Job.job_id == job_id, Job.deleted_at.is_(None))
    if lock:
        query = query.with_for_update()
    return session.scalar(query)


def list_jobs(session: Session, filters: JobFilter, page_size: int, page_token: str) -> tuple[list[Job], str]:
    """Newest first, keyset-paged on (created_at, job_id) so deep pages stay fast."""
    query = select(Job).where(Job.deleted_at.is_(None))
    if filters.owner:
        query = query.where(Job.owner == filters.owner)
    if filters.statuses:
        query = query.where(Job.status.in_(filters.statuses))
    if filters.environment_id:
        query = query.where(Job.environment_id == filters.environment_id)
    if filters.created_after:
        query = query.where(Job.created_at >= filters.created_after)
    if filters.created_before:
        query = query.where(Job.created_at < filters.created_before)
    if page_token:
        created, job_id = decode_page_token(page_token)
        query = query.where(or_(Job.created_at < created, (Job.created_at == created) & (Job.job_id < job_id)))
    rows = list(session.scalars(query.order_by(Job.created_at.desc(), Job.job_id.desc()).limit(page_size + 1)))
    next_token = ""
    if len(rows) > page_size:
        rows = rows[:page_size]
        next_token = encode_page_token(rows[-1].created_at, rows[-1].job_id)
    return rows, next_token


def encode_page_token(created: datetime, job_id: str) -> str:
    raw = json.dumps([created.isoformat(), job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_page_token(token: str) -> tuple[datetime, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        return datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError):
        raise errors.InvalidArgument(
            "page_token is not one this service issued; pass next_page_token from the previous page",
            "page_token_invalid",
        ) from None


def read_events(session: Session, job_ids: Sequence[str], after_sequence: int) -> list[JobEvent]:
    return list(
        session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id.in_(job_ids), JobEvent.sequence > after_sequence)
            .order_by(JobEvent.sequence)
        )
    )


def end_job(session: Session, job: Job, end_reason: EndReason, code: str, message: str) -> None:
    """Ends a job the engine never held (not dispatched yet)."""
    _transition(session, job, Status.FINISHED, end_reason, code, message, "", 0, utcnow())


# -- dispatch -------------------------------------------------------------------


def claim_undispatched(session: Session, engine_id: str, limit: int) -> list[Job]:
    """Locks jobs waiting for their engine; replicas skip each other's rows."""
    query = (
        select(Job)
        .where(Job.dispatched.is_(False), Job.engine_id == engine_id, Job.status == int(Status.WARMING_UP))
        .order_by(Job.created_at)
        .limit(limit)
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))


# -- engines ------------------------------------------------------------------------


def ensure_engine(session: Session, engine_id: str, address: str) -> int:
    engine = session.get(Engine, engine_id)
    if engine is None:
        engine = Engine(engine_id=engine_id, address=address, last_applied_sequence=0, environments=[])
        session.add(engine)
        session.flush()
    elif engine.address != address:
        engine.address = address
    return engine.last_applied_sequence


def record_heartbeat(session: Session, engine_id: str, environments: list[dict[str, Any]]) -> None:
    session.execute(
        update(Engine).where(Engine.engine_id == engine_id).values(last_seen=utcnow(), environments=environments)
    )


def read_engines(session: Session) -> list[Engine]:
    return list(session.scalars(select(Engine).order_by(Engine.engine_id)))


class SequenceGap(Exception):
    """The engine's stream skipped a sequence: reconnect from the last applied one."""


def apply_changes(session: Session, engine_id: str, changes: Sequence[IncomingChange]) -> list[Job]:
    """Applies an engine's changes and advances its last applied sequence, in
    the caller's transaction. Changes at or below the last applied sequence
    are duplicates and skipped; the engine row lock makes this exactly-once
    even with several service replicas following one engine."""
    engine = session.scalar(select(Engine).where(Engine.engine_id == engine_id).with_for_update())
    if engine is None:
        raise errors.NotFound(f"engine {engine_id} is not registered")
    last = engine.last_applied_sequence
    touched: dict[str, Job] = {}
    for change in changes:
        if change.sequence <= last:
            continue
        if change.sequence != last + 1:
            raise SequenceGap(f"engine {engine_id}: expected sequence {last + 1}, got {change.sequence}")
        last = change.sequence
        job = touched.get(change.job_id) or read_job(session, change.job_id, lock=True)
        if job is None:
            log.warning("engine %s: change %d for unknown job %s ignored", engine_id, change.sequence, change.job_id)
            continue
        if not can_transition(job.status, change.status):
            log.warning(
                "engine %s: change %d refused: job %s cannot move from %d to %d",
                engine_id, change.sequence, job.job_id, job.status, change.status,
            )
            continue
        if change.results is not None:
            job.results = change.results
        if change.outcome is not None:
            job.outcome = change.outcome
        if change.results_did:
            job.results_did = change.results_did
        _transition(
            session, job, Status(change.status), EndReason(change.end_reason), change.error_code,
            change.error_message, engine_id, change.sequence, change.time,
        )
        touched[job.job_id] = job
    engine.last_applied_sequence = last
    engine.last_seen = utcnow()
    return list(touched.values())


def _transition(
    session: Session, job: Job, status: Status, end_reason: EndReason, code: str, message: str,
    engine_id: str, engine_sequence: int, at: datetime,
) -> None:
    job.status = int(status)
    if status == Status.STARTED:
        job.started_at = at
    if is_terminal(status):
        job.finished_at = at
        job.end_reason = int(end_reason_for(status, end_reason))
        job.error_code, job.error_message = code, message
    _record_event(session, job, status, EndReason(job.end_reason), code, message, engine_id, engine_sequence, at)


def _record_event(
    session: Session, job: Job, status: Status, end_reason: EndReason, code: str, message: str,
    engine_id: str, engine_sequence: int, at: datetime,
) -> None:
    event = JobEvent(
        job_id=job.job_id, status=int(status), end_reason=int(end_reason), error_code=code,
        error_message=message, engine_id=engine_id, engine_sequence=engine_sequence, time=at,
    )
    session.add(event)
    session.flush()
    job.sequence = event.sequence
