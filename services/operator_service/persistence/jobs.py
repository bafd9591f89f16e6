"""Queries and writes on jobs, their history and engines.

Functions take the caller's session (the caller owns the transaction) and are
named by what they do to the store. Every status change goes through
`apply_changes`, which consults the shared state machine.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, func, insert, inspect, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from plumbing import errors, storage, untrusted, workflows
from plumbing.statuses import EndReason, Status, can_transition, end_reason_for, is_terminal
from services.operator_service.domain.ports import IncomingChange, JobToSubmit, Refusal, SequenceGap, Settlement
from services.operator_service.persistence.models import Engine, Job, JobEvent, JobViewer, ResultPin

log = logging.getLogger("c2d.operator")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class JobFilter:
    owner: str = ""  # the jobs this address owns or was named a viewer of
    statuses: tuple[int, ...] = ()
    environment_id: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None


# -- jobs ---------------------------------------------------------------------


def create_jobs(session: Session, jobs: Sequence[Job]) -> list[tuple[Job, bool]]:
    """Inserts jobs with their first history rows; for each, the stored job
    and whether it is new (a request id seen before returns the earlier job).

    Whatever the number of jobs, the hot path is two statements: the history
    rows (their sequences become the jobs'), then INSERT ... ON CONFLICT
    (request_id) DO NOTHING RETURNING the jobs. A retry gets nothing back (a
    concurrent one first waits on the unique index for the winner's
    transaction) without aborting the transaction; it drops its history row
    and returns the winner's job."""
    sequences = _insert_events(
        session,
        [_event_row(job.job_id, Status.WARMING_UP, EndReason.NONE, "", "", "", 0, job.created_at) for job in jobs],
    )
    rows = []
    for job, sequence in zip(jobs, sequences, strict=False):
        job.sequence = sequence
        rows.append({key: value for key, value in inspect(job).dict.items() if key in Job.__table__.columns})
    # The rows go as parameters (one multi-row INSERT all the same): a statement
    # built with .values(rows) has no cache key, and compiling it anew for
    # every call was 8% of a busy service's time.
    statement = _dialect_insert(session)(Job).on_conflict_do_nothing(index_elements=[Job.request_id]).returning(Job)
    created = {job.job_id: job for job in session.scalars(statement, rows)}
    viewers = [
        {"address": address, "job_id": job_id} for job_id, job in created.items() for address in set(job.viewers or [])
    ]
    if viewers:
        session.execute(insert(JobViewer), viewers)
    lost = [(job, sequence) for job, sequence in zip(jobs, sequences, strict=False) if job.job_id not in created]
    winners: dict[str, Job] = {}
    if lost:
        session.execute(delete(JobEvent).where(JobEvent.sequence.in_([sequence for _, sequence in lost])))
        winners = {
            job.request_id: job
            for job in session.scalars(select(Job).where(Job.request_id.in_({job.request_id for job, _ in lost})))
        }
    results = []
    for job in jobs:
        if job.job_id in created:
            results.append((created[job.job_id], True))
        elif job.request_id in winners:
            results.append((winners[job.request_id], False))
        else:
            raise errors.Aborted("a concurrent request with this request_id failed; retry", "request_conflict")
    return results


def _dialect_insert(session: Session) -> Callable[[Any], postgresql.Insert | sqlite.Insert]:
    return postgresql.insert if _is_postgresql(session) else sqlite.insert


def _is_postgresql(session: Session) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


def read_job(session: Session, job_id: str, lock: bool = False) -> Job | None:
    query = select(Job).where(Job.job_id == job_id, Job.deleted_at.is_(None))
    if lock:
        query = query.with_for_update()
    return session.scalar(query)


def list_jobs(session: Session, filters: JobFilter, page_size: int, page_token: str) -> tuple[list[Job], str]:
    """Newest first, keyset-paged on (created_at, job_id) so deep pages stay fast.

    For an address, the jobs it owns and those it may view are two indexed
    queries merged here: one query with an OR of the two scans the table."""
    conditions: list[ColumnElement[bool]] = [Job.deleted_at.is_(None)]
    if filters.statuses:
        conditions.append(Job.status.in_(filters.statuses))
    if filters.environment_id:
        conditions.append(Job.environment_id == filters.environment_id)
    if filters.created_after:
        conditions.append(Job.created_at >= filters.created_after)
    if filters.created_before:
        conditions.append(Job.created_at < filters.created_before)
    if page_token:
        created, job_id = decode_page_token(page_token)
        conditions.append(or_(Job.created_at < created, (Job.created_at == created) & (Job.job_id < job_id)))

    def page(query: Any) -> list[Job]:
        ordered = query.where(*conditions).order_by(Job.created_at.desc(), Job.job_id.desc()).limit(page_size + 1)
        return list(session.scalars(ordered))

    if filters.owner:
        owned = page(select(Job).where(Job.owner == filters.owner))
        viewed = page(
            select(Job).join(JobViewer, JobViewer.job_id == Job.job_id).where(JobViewer.address == filters.owner)
        )
        merged = {job.job_id: job for job in owned + viewed}
        rows = sorted(merged.values(), key=lambda job: (job.created_at, job.job_id), reverse=True)[: page_size + 1]
    else:
        rows = page(select(Job))
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
        created, job_id = untrusted.parse_json(base64.urlsafe_b64decode(token.encode()), "page_token")
        return datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError):
        raise errors.InvalidArgument(
            "page_token is not one this service issued; pass next_page_token from the previous page",
            "page_token_invalid",
            field="page_token",
        ) from None


def count_by_status(session: Session) -> dict[int, int]:
    """How many jobs there are in each status (ix_jobs_status_created serves it)."""
    return {status: count for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status))}


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
    with session.no_autoflush:
        row = _transition(job, Status.FINISHED, end_reason, code, message, "", 0, utcnow())
        [job.sequence] = _insert_events(session, [row])
    job.workflow = workflows.redacted(job.workflow, frozenset())  # it will never be sent now


# -- storage expiry -------------------------------------------------------------


def results_to_expire(
    session: Session, engine_id: str, environment_id: str, finished_before: datetime, limit: int
) -> list[Job]:
    """Finished jobs of one environment whose results the sweeper has not removed yet."""
    return list(
        session.scalars(
            select(Job)
            .where(
                Job.environment_id == environment_id,
                Job.engine_id == engine_id,
                Job.results_expired_at.is_(None),
                Job.finished_at.is_not(None),
                Job.finished_at < finished_before,
                Job.deleted_at.is_(None),
            )
            .order_by(Job.finished_at)
            .limit(limit)
        )
    )


def mark_results_expired(session: Session, job_id: str, at: datetime) -> bool:
    """Records that the job's results are gone; False if another replica did first."""
    job = session.scalar(select(Job).where(Job.job_id == job_id).with_for_update())
    if job is None or job.results_expired_at is not None:
        return False
    job.results_expired_at = at
    if job.results:
        job.results = {**job.results, "expired": True}  # a new dict: JSON columns track assignment
    session.execute(delete(ResultPin).where(ResultPin.job_id == job_id))  # expired results name nothing
    return True


def _pin_keys(results: dict[str, Any] | None) -> set[str]:
    files = (results or {}).get("files") or []
    return {key for entry in files if (key := storage.pin_key(str(entry.get("location") or "")))}


def release_results(session: Session, job_id: str, locations: Sequence[str]) -> list[str]:
    """Ends the job's claims on the IPFS content its results name; returns
    the `locations` no other job's live results name, which may be deleted
    (one outside IPFS always may: it lies under its own job's prefix)."""
    keys = {location: storage.pin_key(location) for location in locations}
    shared = {key for key in keys.values() if key}
    if shared:
        # Every claim on this content is locked, in one order for all: of two
        # jobs released at once, the second waits for the first to commit,
        # then finds its claim gone and may unpin; the first found the
        # second's claim and kept the pin. Never both keep, never both drop.
        session.execute(
            select(ResultPin.pin_key)
            .where(ResultPin.pin_key.in_(shared))
            .order_by(ResultPin.pin_key, ResultPin.job_id)
            .with_for_update()
        )
    session.execute(delete(ResultPin).where(ResultPin.job_id == job_id))
    named = set(session.scalars(select(ResultPin.pin_key).where(ResultPin.pin_key.in_(shared)))) if shared else set()
    return [location for location, key in keys.items() if key not in named]


# -- dispatch -------------------------------------------------------------------


def _waiting(engine_id: str, stale_before: datetime, *conditions: Any) -> Any:
    """Jobs waiting for their engine that no fresh claim holds, oldest first."""
    return (
        select(Job)
        .where(
            Job.dispatched.is_(False),
            Job.engine_id == engine_id,
            Job.status == int(Status.WARMING_UP),
            or_(Job.dispatch_claimed_at.is_(None), Job.dispatch_claimed_at < stale_before),
            *conditions,
        )
        .order_by(Job.created_at)
    )


def claim_waiting(
    session: Session, engine_id: str, claim: str, now: datetime, stale_before: datetime, limit: int
) -> list[JobToSubmit]:
    """Marks up to `limit` waiting jobs as held by `claim` and returns them
    (see ports.LinkStore.claim_waiting). One UPDATE over a sub-select that
    skips rows another replica is claiming right now: the claim is atomic on
    both databases and waits on no lock."""
    chosen = _waiting(engine_id, stale_before).with_only_columns(Job.job_id).limit(limit)
    if _is_postgresql(session):
        chosen = chosen.with_for_update(skip_locked=True)
    claimed = session.execute(
        update(Job)
        .where(Job.job_id.in_(chosen.scalar_subquery()))
        .values(dispatch_claim=claim, dispatch_claimed_at=now)
        .returning(Job.job_id, Job.environment_id, Job.workflow, Job.created_at)
        .execution_options(synchronize_session=False)
    ).all()
    return [
        JobToSubmit(job_id, environment_id, workflow)
        for job_id, environment_id, workflow, _ in sorted(claimed, key=lambda row: (row.created_at, row.job_id))
    ]


def finish_dispatch(session: Session, claim: str, job_ids: Sequence[str], refusals: Sequence[Refusal]) -> Settlement:
    """Settles a dispatch round once the engine took its jobs (see
    ports.LinkStore.finish_dispatch). The rows still held by `claim` are
    locked first, in job-id order like every other locker of several jobs."""
    held = {
        job_id: (status, dispatched)
        for job_id, status, dispatched in session.execute(
            select(Job.job_id, Job.status, Job.dispatched)
            .where(Job.job_id.in_(job_ids), Job.dispatch_claim == claim)
            .order_by(Job.job_id)
            .with_for_update()
        )
    }
    refused_by_id = {refusal.job_id: refusal for refusal in refusals if refusal.job_id in held}
    refused = []
    if refused_by_id:
        for job in session.scalars(select(Job).where(Job.job_id.in_(refused_by_id))):
            job.dispatch_claim, job.dispatch_claimed_at = None, None
            if not is_terminal(job.status):
                refusal = refused_by_id[job.job_id]
                end_job(session, job, EndReason.FAILED, refusal.error_code, refusal.error_message)
                refused.append(job)
    # A job that ended here (StopJob, DeleteJob, queue expiry) while the engine
    # was being handed it, and that the engine has not reported on since.
    withdrawn = [
        job_id
        for job_id, (status, dispatched) in held.items()
        if job_id not in refused_by_id and is_terminal(status) and not dispatched
    ]
    settled_otherwise = refused_by_id.keys() | set(withdrawn)
    accepted = [job_id for job_id in held if job_id not in settled_otherwise]
    for ids, dispatched in ((accepted, True), (withdrawn, False)):
        if ids:
            session.execute(
                update(Job)
                .where(Job.job_id.in_(ids))
                .values(dispatched=dispatched, dispatch_claim=None, dispatch_claimed_at=None)
                .execution_options(synchronize_session=False)
            )
    _forget_secrets(session, accepted)
    return Settlement(refused=refused, withdrawn=withdrawn)


def _forget_secrets(session: Session, job_ids: Sequence[str]) -> None:
    """Keeps only what the record shows of the workflows of jobs their engine
    took: a job is never sent again once dispatched, and the engine keeps the
    secrets for as long as its stages need them."""
    if not job_ids:
        return
    rows = session.execute(select(Job.job_id, Job.workflow).where(Job.job_id.in_(job_ids))).all()
    session.connection().execute(
        update(Job).where(Job.job_id == bindparam("target_job_id")).values(workflow=bindparam("kept")),
        [{"target_job_id": job_id, "kept": workflows.redacted(workflow, frozenset())} for job_id, workflow in rows],
    )


def release_claim(session: Session, claim: str, job_ids: Sequence[str] | None = None) -> None:
    held = [Job.dispatch_claim == claim, Job.dispatched.is_(False)]
    if job_ids is not None:
        held.append(Job.job_id.in_(job_ids))
    session.execute(
        update(Job)
        .where(*held)
        .values(dispatch_claim=None, dispatch_claimed_at=None)
        .execution_options(synchronize_session=False)
    )


def expire_undispatched(
    session: Session,
    engine_id: str,
    created_before: datetime,
    stale_before: datetime,
    message: str,
    limit: int = 500,
) -> list[Job]:
    """Ends jobs still waiting for their engine since before `created_before`,
    skipping those a dispatch round holds; returns them."""
    query = _waiting(engine_id, stale_before, Job.created_at < created_before).limit(limit)
    if _is_postgresql(session):
        query = query.with_for_update(skip_locked=True)
    jobs = list(session.scalars(query))
    for job in jobs:
        end_job(session, job, EndReason.EXPIRED_IN_QUEUE, "expired_in_queue", message)
    return jobs


# -- engines ------------------------------------------------------------------------


def ensure_engine(session: Session, engine_id: str, address: str) -> int:
    """Registers the engine (replicas starting together: the first insert
    wins, the others do nothing) and returns its last applied sequence."""
    session.execute(
        _dialect_insert(session)(Engine)
        .values(engine_id=engine_id, address=address, last_applied_sequence=0, environments=[])
        .on_conflict_do_nothing(index_elements=[Engine.engine_id])
    )
    engine = session.get(Engine, engine_id)
    assert engine is not None
    if engine.address != address:
        engine.address = address
    return engine.last_applied_sequence


def record_heartbeat(session: Session, engine_id: str, environments: list[dict[str, Any]]) -> None:
    session.execute(
        update(Engine).where(Engine.engine_id == engine_id).values(last_seen=utcnow(), environments=environments)
    )


def read_engines(session: Session) -> list[Engine]:
    return list(session.scalars(select(Engine).order_by(Engine.engine_id)))


def apply_changes(session: Session, engine_id: str, changes: Sequence[IncomingChange]) -> list[Job]:
    """Applies an engine's changes and advances its last applied sequence, in
    the caller's transaction; returns the jobs as they now stand. Changes at
    or below the last applied sequence are duplicates and skipped; the engine
    row lock makes this exactly-once even with several service replicas
    following one engine.

    A batch costs five statements whatever its size (lock the engine, lock
    its jobs, insert their history, update the jobs, advance the engine), all
    Core: the ORM's unit of work was most of the time of an apply. One that
    records results on IPFS adds one: the content they name (ResultPin)."""
    last = session.execute(
        select(Engine.last_applied_sequence).where(Engine.engine_id == engine_id).with_for_update()
    ).scalar()
    if last is None:
        raise errors.NotFound(f"engine {engine_id} is not registered")
    fresh = [change for change in changes if change.sequence > last]
    for expected, change in enumerate(fresh, start=last + 1):
        if change.sequence != expected:
            raise SequenceGap(f"engine {engine_id}: expected sequence {expected}, got {change.sequence}")
    if not fresh:
        return []
    jobs = {
        job.job_id: job
        for job in session.scalars(
            select(Job)
            .where(Job.job_id.in_({change.job_id for change in fresh}), Job.deleted_at.is_(None))
            .order_by(Job.job_id)  # one lock order for every locker: no deadlock
            .with_for_update()
        )
    }
    # Detached, the rows are plain objects: the changes below are written by
    # the two statements that follow, never by an ORM flush.
    for row in jobs.values():
        session.expunge(row)
    applied: list[tuple[Job, dict[str, Any]]] = []
    recorded: dict[str, dict[str, Any]] = {}  # the results each job's changes set, the latest
    for change in fresh:
        job = jobs.get(change.job_id)
        if job is None:
            log.warning("engine %s: change %d for unknown job %s ignored", engine_id, change.sequence, change.job_id)
            continue
        if not can_transition(job.status, change.status):
            log.warning(
                "engine %s: change %d refused: job %s cannot move from %d to %d",
                engine_id,
                change.sequence,
                job.job_id,
                job.status,
                change.status,
            )
            continue
        if change.results is not None:
            job.results = change.results
            recorded[job.job_id] = change.results
        if change.outcome is not None:
            job.outcome = change.outcome
        if change.results_did:
            job.results_did = change.results_did
        applied.append(
            (
                job,
                _transition(
                    job,
                    Status(change.status),
                    EndReason(change.end_reason),
                    change.error_code,
                    change.error_message,
                    engine_id,
                    change.sequence,
                    change.time,
                ),
            )
        )
    sequences = _insert_events(session, [event for _, event in applied])
    touched: dict[str, Job] = {}
    for (job, _), sequence in zip(applied, sequences, strict=False):
        job.sequence = sequence  # in order: a job's latest change wins
        job.dispatched = True  # the engine holds it, whatever became of the dispatch
        touched[job.job_id] = job
    if touched:
        # One shape for every row: one executemany, one round trip.
        session.connection().execute(
            update(Job)
            .where(Job.job_id == bindparam("target_job_id"))
            .values({column: bindparam(column) for column in APPLIED_COLUMNS}),
            [
                {"target_job_id": job.job_id, **{column: getattr(job, column) for column in APPLIED_COLUMNS}}
                for job in touched.values()
            ],
        )
    pins = [{"pin_key": key, "job_id": job_id} for job_id, results in recorded.items() for key in _pin_keys(results)]
    if pins:  # a job's earlier claims stay: kept too long, a pin is only kept, never lost
        session.connection().execute(_dialect_insert(session)(ResultPin).on_conflict_do_nothing(), pins)
    session.execute(
        update(Engine)
        .where(Engine.engine_id == engine_id)
        .values(last_applied_sequence=fresh[-1].sequence, last_seen=utcnow())
    )
    return list(touched.values())


# What a change can set on its job.
APPLIED_COLUMNS = (
    "status",
    "started_at",
    "finished_at",
    "end_reason",
    "error_code",
    "error_message",
    "results",
    "outcome",
    "results_did",
    "dispatched",
    "sequence",
)


def _transition(
    job: Job,
    status: Status,
    end_reason: EndReason,
    code: str,
    message: str,
    engine_id: str,
    engine_sequence: int,
    at: datetime,
) -> dict[str, Any]:
    """Moves the job; returns its history row, for the caller to insert."""
    job.status = int(status)
    if status == Status.STARTED:
        job.started_at = at
    if is_terminal(status):
        job.finished_at = at
        job.end_reason = int(end_reason_for(status, end_reason))
        job.error_code, job.error_message = code, message
    return _event_row(job.job_id, status, EndReason(job.end_reason or 0), code, message, engine_id, engine_sequence, at)


def _event_row(
    job_id: str,
    status: Status,
    end_reason: EndReason,
    code: str,
    message: str,
    engine_id: str,
    engine_sequence: int,
    at: datetime,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": int(status),
        "end_reason": int(end_reason),
        "error_code": code,
        "error_message": message,
        "engine_id": engine_id,
        "engine_sequence": engine_sequence,
        "time": at,
    }


def _insert_events(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Inserts history rows in one statement; returns their sequences, in order."""
    if not rows:
        return []
    statement = insert(JobEvent).returning(JobEvent.sequence, sort_by_parameter_order=True)
    return list(session.connection().execute(statement, rows).scalars())
