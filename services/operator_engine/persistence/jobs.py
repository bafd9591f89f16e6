"""The engine's jobs table: the domain's JobStore port, in SQL."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from plumbing import errors
from plumbing.database import Database, GroupCommit
from plumbing.workflows import redacted
from services.operator_engine.domain.changes import now
from services.operator_engine.domain.ports import StoredJob
from services.operator_engine.persistence.models import EngineJob

# The spec key of the SHA-256 of the workflow as submitted, which resubmissions are compared with.
WORKFLOW_DIGEST = "workflow_sha256"


class JobTable:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Submissions that arrive together (a SubmitJobs batch) share one INSERT.
        self._inserts: GroupCommit[tuple[dict[str, Any], bytes], bool] = GroupCommit(db, _insert_jobs)

    async def insert(self, spec: dict[str, Any], workflow: bytes) -> bool:
        return await self._inserts.submit((spec, workflow))

    async def unfinished(self, job_id: str | None = None) -> list[StoredJob]:
        query = select(EngineJob).where(EngineJob.stage != "done", EngineJob.deleted.is_(False))
        if job_id is not None:
            query = query.where(EngineJob.job_id == job_id)
        return await self._db.run(
            lambda s: [
                StoredJob(r.job_id, r.workflow, r.spec, r.status, r.stage, r.stop_requested)
                for r in s.scalars(query.order_by(EngineJob.created_at))
            ]
        )

    async def status_of(self, job_id: str) -> int | None:
        return await self._db.run(lambda s: s.scalar(select(EngineJob.status).where(EngineJob.job_id == job_id)))

    async def mark_stop_requested(self, job_id: str) -> None:
        await self._update(job_id, stop_requested=True)

    async def mark_deleted(self, job_id: str) -> None:
        await self._update(job_id, deleted=True)

    async def _update(self, job_id: str, **values: object) -> None:
        statement = update(EngineJob).where(EngineJob.job_id == job_id).values(**values)
        await self._db.run(lambda s: s.execute(statement))

    async def close(self) -> None:
        await self._inserts.close()

    async def forget_secrets_stored_before(self, batch: int = 500) -> int:
        """Brings jobs stored before workflows were redacted (no submitted digest
        in their spec) in line, at start-up: each gets its digest, and an ended
        one loses its workflow's secrets. Returns how many it changed."""
        changed = 0
        while count := await self._db.run(lambda s: _forget_secrets_stored_before(s, batch)):
            changed += count
        return changed


def _insert_jobs(session: Session, jobs: Sequence[tuple[dict[str, Any], bytes]]) -> list[bool]:
    """Stores new jobs in one statement; says per job whether it was new.
    A job id already stored (or earlier in the batch) with the same workflow
    is a harmless resubmission; with another workflow it is refused. "The
    same" is judged by the digest of the workflow as submitted, kept in the
    spec: the stored workflow loses its secrets once no stage needs them."""
    known = {
        row.job_id: (_submitted_digest(row.spec, row.workflow), row.environment_id)
        for row in session.execute(
            select(EngineJob.job_id, EngineJob.workflow, EngineJob.spec, EngineJob.environment_id).where(
                EngineJob.job_id.in_([spec["job_id"] for spec, _ in jobs])
            )
        )
    }
    created, rows = [], []
    for spec, workflow in jobs:
        job_id = spec["job_id"]
        digest = hashlib.sha256(workflow).hexdigest()
        if job_id in known:
            if known[job_id] != (digest, spec["environment_id"]):
                raise errors.AlreadyExists(f"job {job_id} already exists here with a different workflow", "job_exists")
            created.append(False)
            continue
        known[job_id] = (digest, spec["environment_id"])
        rows.append(
            {
                "job_id": job_id,
                "environment_id": spec["environment_id"],
                "workflow": workflow,
                "spec": {**spec, WORKFLOW_DIGEST: digest},
                "created_at": now(),
            }
        )
        created.append(True)
    if rows:
        session.execute(insert(EngineJob), rows)
    return created


def _submitted_digest(spec: dict[str, Any], workflow: bytes) -> str:
    # Jobs stored before the digest was kept still hold their workflow as submitted.
    return spec.get(WORKFLOW_DIGEST) or hashlib.sha256(workflow).hexdigest()


def _forget_secrets_stored_before(session: Session, batch: int) -> int:
    rows = session.execute(
        select(EngineJob.job_id, EngineJob.workflow, EngineJob.spec, EngineJob.stage)
        .where(EngineJob.spec[WORKFLOW_DIGEST].as_string().is_(None))
        .order_by(EngineJob.job_id)
        .limit(batch)
    ).all()
    if rows:
        session.connection().execute(
            update(EngineJob)
            .where(EngineJob.job_id == bindparam("target_job_id"))
            .values(workflow=bindparam("kept"), spec=bindparam("with_digest")),
            [
                {
                    "target_job_id": row.job_id,
                    # Unredacted until now: the stored workflow is the one submitted.
                    "with_digest": {**row.spec, WORKFLOW_DIGEST: hashlib.sha256(row.workflow).hexdigest()},
                    "kept": redacted(row.workflow, frozenset()) if row.stage == "done" else row.workflow,
                }
                for row in rows
            ],
        )
    return len(rows)
