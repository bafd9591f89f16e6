"""OperatorService over real gRPC against the real engine (no-op backend):
idempotent CreateJob, WatchJobs resume, ListJobs paging, bad input, auth."""

from __future__ import annotations

import asyncio
import base64
import uuid

import grpc
import pytest
from google.protobuf import timestamp_pb2

from c2d.operator.v1 import operator_pb2
from plumbing.grpc_errors import bad_request_fields, error_code, reason_of
from testkit.control_plane import (
    NOOP_PATH,
    control_plane,
    create_request,
    query,
    wait_finished,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, data_dir):
    return "" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def _operator_db(database_url: str, data_dir: str) -> str:
    return database_url or f"sqlite:///{data_dir}/operator.db"


def _engine_db(database_url: str, data_dir: str) -> str:
    return database_url or f"sqlite:///{data_dir}/engine.db"


async def test_a_job_runs_to_70_with_its_full_history(data_dir, database_url):
    async with control_plane(database_url) as plane:
        job = await plane.operator.create()
        assert job.status == 1 and job.owner == "0xowner" and job.environment_id == "local-cpu"

        updates = await plane.operator.watch([job.job_id])

        assert updates[-1].status == 70 and updates[-1].end_reason == 1  # COMPLETED
        history = query(
            _operator_db(database_url, data_dir),
            "SELECT status FROM job_events WHERE job_id = :j ORDER BY sequence",
            j=job.job_id,
        )
        assert [status for (status,) in history] == NOOP_PATH
        final = await plane.operator.get(job.job_id)
        assert final.started_at.seconds and final.finished_at.seconds and final.results.storage == "none"


async def test_concurrent_retries_with_one_request_id_create_one_job(data_dir, database_url):
    async with control_plane(database_url) as plane:
        request = create_request(request_id="retried-" + uuid.uuid4().hex)
        responses = await asyncio.gather(
            *(plane.operator.stub.CreateJob(request, metadata=plane.operator.metadata, timeout=60) for _ in range(20))
        )

        assert len({r.job.job_id for r in responses}) == 1
        assert sum(r.created for r in responses) == 1
        job_id = responses[0].job.job_id
        await wait_finished(plane.operator, [job_id])
        operator_db = _operator_db(database_url, data_dir)
        assert query(operator_db, "SELECT count(*) FROM jobs WHERE request_id = :r", r=request.request_id) == [(1,)]
        history = query(operator_db, "SELECT status FROM job_events WHERE job_id = :j ORDER BY sequence", j=job_id)
        assert [status for (status,) in history] == NOOP_PATH
        assert query(_engine_db(database_url, data_dir), "SELECT count(*) FROM engine_jobs") == [(1,)]


async def test_a_job_the_engine_refuses_ends_with_its_reason_and_the_rest_run(data_dir, database_url):
    async with control_plane(database_url) as plane:
        refused = create_request()
        refused.workflow.container.entrypoint = "python3 main.py"  # the engine needs $ALGO
        jobs = await asyncio.gather(plane.operator.create(refused), *(plane.operator.create() for _ in range(5)))

        await wait_finished(plane.operator, [job.job_id for job in jobs[1:]])
        ended = (await plane.operator.watch([jobs[0].job_id]))[-1]
        assert ended.status == 70 and ended.end_reason == 4  # FAILED, not left waiting for a dispatch
        assert ended.error_code == "entrypoint_invalid"
        assert ended.error_message.startswith("the engine refused the job:") and "$ALGO" in ended.error_message


async def test_watch_resumes_after_a_sequence_with_exactly_the_later_changes(data_dir, postgres_url):
    async with control_plane(postgres_url) as plane:
        first, second = await plane.operator.create(), await plane.operator.create()
        await wait_finished(plane.operator, [first.job_id, second.job_id])
        events = query(postgres_url, "SELECT sequence, job_id, status FROM job_events ORDER BY sequence")
        assert len(events) == 2 * len(NOOP_PATH)

        for cut in (0, 3, len(events) // 2, len(events) - 1):
            after = events[cut][0]
            updates = await plane.operator.watch([first.job_id, second.job_id], after_sequence=after)
            assert [(u.sequence, u.job_id, u.status) for u in updates] == [e for e in events if e[0] > after]

        # Without a sequence: each job's current state, then the stream ends (both are finished).
        current = await plane.operator.watch([first.job_id, second.job_id])
        assert sorted((u.job_id, u.status) for u in current) == sorted([(first.job_id, 70), (second.job_id, 70)])


async def test_a_live_watcher_sees_every_change_even_when_the_engine_reports_them_in_one_batch(data_dir, postgres_url):
    # Many fast jobs: the engine's changes arrive, and are applied, several per batch,
    # and the broker carries each job once per batch, as it stands after it.
    async with control_plane(postgres_url) as plane:
        jobs = await asyncio.gather(*(plane.operator.create() for _ in range(40)))
        seen = await asyncio.gather(*(plane.operator.watch([job.job_id]) for job in jobs))

        for job, updates in zip(jobs, seen, strict=True):
            statuses = [u.status for u in updates]
            first = NOOP_PATH.index(statuses[0])  # the stream starts with the job as it stands
            assert statuses == NOOP_PATH[first:], f"job {job.job_id} was seen as {statuses}"
            sequences = [u.sequence for u in updates]
            assert sequences == sorted(set(sequences))


async def test_list_jobs_pages_newest_first_and_filters(data_dir, postgres_url):
    async with control_plane(postgres_url) as plane:
        mine = [await plane.operator.create(create_request(owner="0xmine")) for _ in range(7)]
        theirs = [await plane.operator.create(create_request(owner="0xtheirs")) for _ in range(3)]
        await wait_finished(plane.operator, [j.job_id for j in mine + theirs])
        stub, metadata = plane.operator.stub, plane.operator.metadata

        pages, token = [], ""
        while True:
            page = await stub.ListJobs(operator_pb2.ListJobsRequest(page_size=3, page_token=token), metadata=metadata)
            pages.append([j.job_id for j in page.jobs])
            token = page.next_page_token
            if not token:
                break
        listed = [job_id for page in pages for job_id in page]
        assert [len(p) for p in pages] == [3, 3, 3, 1]
        assert listed == [j.job_id for j in reversed(mine + theirs)]

        owned = await stub.ListJobs(operator_pb2.ListJobsRequest(owner="0xmine", statuses=[70]), metadata=metadata)
        assert [j.job_id for j in owned.jobs] == [j.job_id for j in reversed(mine)]
        running = await stub.ListJobs(operator_pb2.ListJobsRequest(statuses=[40]), metadata=metadata)
        assert list(running.jobs) == []
        other_env = await stub.ListJobs(operator_pb2.ListJobsRequest(environment_id="gpu"), metadata=metadata)
        assert list(other_env.jobs) == []
        window = operator_pb2.ListJobsRequest(created_after=mine[2].created_at, created_before=mine[5].created_at)
        assert [j.job_id for j in (await stub.ListJobs(window, metadata=metadata)).jobs] == [
            j.job_id for j in reversed(mine[2:5])
        ]


async def test_list_jobs_for_an_address_includes_the_jobs_it_may_view(data_dir, database_url):
    async with control_plane(database_url) as plane:
        shared = create_request(owner="0xowner")
        shared.viewers.extend(["0xviewer", "0xviewer"])
        shown = await plane.operator.create(shared)
        own = await plane.operator.create(create_request(owner="0xviewer"))
        await plane.operator.create(create_request(owner="0xowner"))  # not shared
        stub, metadata = plane.operator.stub, plane.operator.metadata

        listed = await stub.ListJobs(operator_pb2.ListJobsRequest(owner="0xviewer"), metadata=metadata)
        assert [j.job_id for j in listed.jobs] == [own.job_id, shown.job_id]
        stranger = await stub.ListJobs(operator_pb2.ListJobsRequest(owner="0xstranger"), metadata=metadata)
        assert list(stranger.jobs) == []


def _token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


UNKNOWN = str(uuid.uuid4())
FAR = timestamp_pb2.Timestamp(seconds=10**13)


def _bad_unary_calls():
    return [
        ("GetJob", operator_pb2.GetJobRequest(job_id=UNKNOWN), grpc.StatusCode.NOT_FOUND, "job_not_found"),
        ("GetJob", operator_pb2.GetJobRequest(job_id="../etc"), grpc.StatusCode.INVALID_ARGUMENT, "job_id_invalid"),
        ("StopJob", operator_pb2.StopJobRequest(job_id=UNKNOWN), grpc.StatusCode.NOT_FOUND, "job_not_found"),
        ("DeleteJob", operator_pb2.DeleteJobRequest(job_id=UNKNOWN), grpc.StatusCode.NOT_FOUND, "job_not_found"),
        ("ListJobs", operator_pb2.ListJobsRequest(statuses=[99]), grpc.StatusCode.INVALID_ARGUMENT, "status_invalid"),
        (
            "ListJobs",
            operator_pb2.ListJobsRequest(page_size=5000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_size_invalid",
        ),
        (
            "ListJobs",
            operator_pb2.ListJobsRequest(page_token="not a token"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token_invalid",
        ),
        (
            "ListJobs",
            operator_pb2.ListJobsRequest(page_token=_token(b'{"a": 1}')),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token_invalid",
        ),
        (
            "ListJobs",
            operator_pb2.ListJobsRequest(page_token=_token(b'["yesterday", "x"]')),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token_invalid",
        ),
        (
            "ListJobs",
            operator_pb2.ListJobsRequest(page_token=_token(b"\xff\xfe")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token_invalid",
        ),
        (
            "ListJobs",
            operator_pb2.ListJobsRequest(created_after=FAR),
            grpc.StatusCode.INVALID_ARGUMENT,
            "time_range_invalid",
        ),
        (
            "ListJobs",
            operator_pb2.ListJobsRequest(
                created_after=timestamp_pb2.Timestamp(seconds=2000),
                created_before=timestamp_pb2.Timestamp(seconds=1000),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "time_range_invalid",
        ),
        ("CreateJob", create_request(request_id=""), grpc.StatusCode.INVALID_ARGUMENT, "request_id_missing"),
        ("CreateJob", create_request(owner=""), grpc.StatusCode.INVALID_ARGUMENT, "owner_missing"),
        (
            "CreateJob",
            operator_pb2.CreateJobRequest(request_id="r", owner="o", environment_id="local-cpu"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "workflow_invalid",
        ),
        ("CreateJob", create_request(environment_id="gpu-xl"), grpc.StatusCode.NOT_FOUND, "environment_unknown"),
    ]


# The request field each INVALID_ARGUMENT names in its BadRequest detail.
FIELD_OF = {
    "job_id_invalid": "job_id",
    "status_invalid": "statuses",
    "page_size_invalid": "page_size",
    "page_token_invalid": "page_token",
    "time_range_invalid": "created_after",
    "request_id_missing": "request_id",
    "owner_missing": "owner",
}


async def test_bad_input_gets_the_right_status_never_internal(data_dir, postgres_url):
    async with control_plane(postgres_url) as plane:
        stub, metadata = plane.operator.stub, plane.operator.metadata
        for method, request, status, code in _bad_unary_calls():
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await getattr(stub, method)(request, metadata=metadata, timeout=30)
            assert (raised.value.code(), error_code(raised.value)) == (status, reason_of(code)), (
                method,
                raised.value.details(),
            )
            assert len(raised.value.details()) > 15, raised.value.details()
            if code in FIELD_OF:
                assert bad_request_fields(raised.value) == [FIELD_OF[code]], (method, code)

        for request, status, field in [
            (operator_pb2.WatchJobsRequest(job_ids=[UNKNOWN]), grpc.StatusCode.NOT_FOUND, None),
            (operator_pb2.WatchJobsRequest(job_ids=["not-a-uuid"]), grpc.StatusCode.INVALID_ARGUMENT, "job_ids"),
            (operator_pb2.WatchJobsRequest(), grpc.StatusCode.INVALID_ARGUMENT, "job_ids"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                [r async for r in stub.WatchJobs(request, metadata=metadata, timeout=30)]
            assert raised.value.code() == status, raised.value.details()
            assert bad_request_fields(raised.value) == ([field] if field else [])
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            [r async for r in stub.StreamJobLogs(operator_pb2.StreamJobLogsRequest(job_id=UNKNOWN), metadata=metadata)]
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stopping_a_finished_job_names_its_status(data_dir, postgres_url):
    async with control_plane(postgres_url) as plane:
        job = await plane.operator.create()
        await wait_finished(plane.operator, [job.job_id])

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await plane.operator.stub.StopJob(
                operator_pb2.StopJobRequest(job_id=job.job_id), metadata=plane.operator.metadata
            )

        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "status 70 (Job finished)" in raised.value.details()
        assert error_code(raised.value) == "JOB_ENDED"


async def test_deleting_a_job_keeps_an_audit_row_and_hides_it(data_dir, postgres_url):
    async with control_plane(postgres_url) as plane:
        job = await plane.operator.create()
        await wait_finished(plane.operator, [job.job_id])

        await plane.operator.stub.DeleteJob(
            operator_pb2.DeleteJobRequest(job_id=job.job_id), metadata=plane.operator.metadata
        )

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await plane.operator.get(job.job_id)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        [(deleted_at, expired_at)] = query(
            postgres_url, "SELECT deleted_at, results_expired_at FROM jobs WHERE job_id = :j", j=job.job_id
        )
        assert deleted_at is not None and expired_at is not None
        assert query(postgres_url, "SELECT deleted FROM engine_jobs WHERE job_id = :j", j=job.job_id) == [(True,)]
