"""The operator-service's engine client against the real engine (no-op
backend): resubmitting is a no-op, which dispatch claims rely on, and a
failed call becomes the domain error of the engine's status and reason."""

from __future__ import annotations

import uuid

import pytest

from plumbing import auth, errors
from services.operator_engine import server as engine_server
from services.operator_service.clients.engines import EngineClient
from services.operator_service.domain.ports import JobToSubmit
from testkit.control_plane import ENVIRONMENT, NOOP_PATH, engine_settings, eventually, query, workflow


def _job(job_id: str, raw_algorithm: str = "print('hello')") -> JobToSubmit:
    flow = workflow()
    flow.raw_algorithm = raw_algorithm
    # A location with a header, which the engine forgets once staging ends.
    flow.datasets[0].files.add(type="url", url="https://files.example/data.csv", headers={"Authorization": "Bearer x"})
    return JobToSubmit(job_id, ENVIRONMENT, flow.SerializeToString(deterministic=True))


async def test_the_engine_takes_a_resubmitted_batch_as_a_no_op(data_dir, postgres_url):
    engine = await engine_server.start(engine_settings(postgres_url))
    client = EngineClient("local", f"127.0.0.1:{engine.port}", auth.service_token())
    jobs = [_job(str(uuid.uuid4())) for _ in range(3)]
    try:
        assert await client.submit_jobs(jobs, timeout=30) == []
        assert await client.submit_jobs(jobs, timeout=30) == []  # as a round that lost its answer would

        # The same id with another workflow is no resubmission: refused, and the first one stands.
        [refusal] = await client.submit_jobs([_job(jobs[0].job_id, "print('other')")], timeout=30)
        assert (refusal.job_id, refusal.error_code) == (jobs[0].job_id, "job_exists")

        async def finished() -> bool:
            return query(postgres_url, "SELECT count(*) FROM engine_jobs WHERE status = 70") == [(3,)]

        await eventually(finished, "the three jobs to finish", timeout=60)
        # Their stored workflows lost the location since: a round that lost its answer
        # may still resubmit them, and that is still a no-op, and another workflow still refused.
        assert query(
            postgres_url,
            "SELECT count(*) FROM engine_jobs WHERE position('files.example' in encode(workflow, 'escape')) > 0",
        ) == [(0,)]
        assert await client.submit_jobs(jobs, timeout=30) == []
        [refusal] = await client.submit_jobs([_job(jobs[1].job_id, "print('other')")], timeout=30)
        assert (refusal.job_id, refusal.error_code) == (jobs[1].job_id, "job_exists")
    finally:
        await client.close()
        await engine.stop(1)

    assert query(postgres_url, "SELECT count(*) FROM engine_jobs") == [(3,)]
    emitted = query(postgres_url, "SELECT job_id, count(*) FROM engine_events GROUP BY job_id")
    assert sorted(emitted) == sorted((job.job_id, len(NOOP_PATH) - 1) for job in jobs)  # each ran once


async def test_failed_calls_become_domain_errors_with_the_engines_reason(data_dir, postgres_url):
    engine = await engine_server.start(engine_settings(postgres_url))
    client = EngineClient("local", f"127.0.0.1:{engine.port}", auth.service_token())
    wrong = EngineClient("local", f"127.0.0.1:{engine.port}", "not-the-token")
    unknown = str(uuid.uuid4())
    try:
        with pytest.raises(errors.NotFound) as not_found:
            await client.delete_job(unknown)
        assert (not_found.value.code, not_found.value.metadata["service"]) == ("JOB_NOT_FOUND", "engine local")

        finished = _job(str(uuid.uuid4()))
        assert await client.submit_jobs([finished], timeout=30) == []

        async def ended() -> bool:
            rows = query(postgres_url, "SELECT status FROM engine_jobs WHERE job_id = :j", j=finished.job_id)
            return rows == [(70,)]

        await eventually(ended, "the job to finish", timeout=60)
        with pytest.raises(errors.FailedPrecondition) as too_late:
            await client.stop_job(finished.job_id)
        assert too_late.value.code == "JOB_ENDED"

        with pytest.raises(errors.Internal) as refused:  # a deployment fault, not the caller's
            await wrong.delete_job(unknown)
        assert "C2D_SERVICE_TOKEN" in refused.value.message

        await engine.stop(0)
        with pytest.raises(errors.Unavailable) as down:
            await client.submit_jobs([_job(unknown)], timeout=5)
        assert down.value.retry_after_s > 0
        with pytest.raises(errors.Unavailable):
            await client.state_changes(0).read()
    finally:
        await client.close()
        await wrong.close()
        await engine.stop(0)
