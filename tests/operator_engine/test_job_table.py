"""The engine's job table on both databases: jobs stored before workflows were
redacted are brought in line at start-up, and stay resubmittable."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from c2d.common.v1 import common_pb2
from plumbing import errors
from plumbing.database import Database, sqlite_url
from services.operator_engine.persistence.jobs import WORKFLOW_DIGEST, JobTable
from services.operator_engine.persistence.models import Base, EngineJob
from tests.operator_engine.orchestrator_harness import spec


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    url = sqlite_url(tmp_path / "engine.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    database = Database(url, Base.metadata)
    database.create_schema()
    yield database
    database.close()


def _workflow(job_id: str) -> bytes:
    location = common_pb2.FileLocation(type="url", url=f"https://x/{job_id}?sig=s3cr3t", headers={"A": "t0ken"})
    return common_pb2.Workflow(
        datasets=[common_pb2.WorkflowAsset(did="did:op:x", files=[location])],
        raw_algorithm="print(1)",
        results_asset_grant="c2dgrant1.g",
    ).SerializeToString(deterministic=True)


async def test_jobs_stored_before_redaction_lose_their_secrets_once_ended_and_stay_resubmittable(db):
    # As an engine without redaction stored them: the workflow as submitted, no digest.
    legacy = {"ended": ("done", 70), "deleted": ("done", 70), "running": ("publish", 60)}
    db.transaction(
        lambda s: s.execute(
            insert(EngineJob),
            [
                {
                    "job_id": job_id,
                    "environment_id": "local-cpu",
                    "workflow": _workflow(job_id),
                    "status": status,
                    "stage": stage,
                    "deleted": job_id == "deleted",
                    "created_at": datetime(2026, 1, 1, tzinfo=UTC),
                    "spec": spec(job_id),
                }
                for job_id, (stage, status) in legacy.items()
            ],
        )
    )
    jobs = JobTable(db)
    try:
        assert await jobs.forget_secrets_stored_before(batch=2) == 3
        stored = dict(db.transaction(lambda s: s.execute(select(EngineJob.job_id, EngineJob.workflow)).all()))
        for job_id in ("ended", "deleted"):
            for secret in (b"https://x/", b"s3cr3t", b"t0ken", b"c2dgrant1"):
                assert secret not in stored[job_id], (job_id, secret)
            assert common_pb2.Workflow.FromString(stored[job_id]).datasets[0].did == "did:op:x"
        # Unfinished: the orchestrator redacts it with its next change, when its stages no longer need them.
        assert stored["running"] == _workflow("running")
        assert await jobs.forget_secrets_stored_before() == 0  # once only

        # A resubmission (a dispatch round that lost its answer) is still recognised as one...
        for job_id in legacy:
            assert await jobs.insert(spec(job_id), _workflow(job_id)) is False
        # ...and another workflow under the same id is still refused.
        with pytest.raises(errors.AlreadyExists):
            await jobs.insert(spec("ended"), _workflow("other"))
        specs = db.transaction(lambda s: s.execute(select(EngineJob.spec)).scalars().all())
        assert all(len(s[WORKFLOW_DIGEST]) == 64 for s in specs)
    finally:
        await jobs.close()
