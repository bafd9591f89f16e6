"""OperatorService: validates requests, calls the store and the engine links."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal

from google.protobuf import json_format
from sqlalchemy.orm import Session

from c2d.common.v1 import common_pb2
from c2d.operator.v1 import operator_pb2, operator_pb2_grpc
from plumbing import errors, untrusted
from plumbing.database import Database, GroupCommit
from plumbing.rpc_types import StreamContext, UnaryContext
from plumbing.statuses import TEXT, EndReason, Status, is_terminal
from plumbing.workflows import check_workflow
from services.operator_service.api import convert
from services.operator_service.domain.engine_links import EngineLink
from services.operator_service.domain.ports import JobRecord
from services.operator_service.domain.watching import Broker
from services.operator_service.persistence import jobs as store
from services.operator_service.persistence.models import Job, JobEvent

MAX_PAGE = 1000
DEFAULT_PAGE = 100
STOP_SETTLE_S = 2.0


def _job_id(value: str, field: str = "job_id") -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise errors.InvalidArgument(
            f"{field} {value!r} is not a job id (a UUID)", "job_id_invalid", field=field
        ) from None


def _time(request: operator_pb2.ListJobsRequest, name: Literal["created_after", "created_before"]) -> datetime | None:
    if not request.HasField(name):
        return None
    try:
        return getattr(request, name).ToDatetime(tzinfo=UTC)
    except ValueError:
        raise errors.InvalidArgument(f"{name} is not a valid timestamp", "time_range_invalid", field=name) from None


def _as_of(job: Job, event: JobEvent) -> common_pb2.Job:
    """The job as one of its history's events left it (its other fields as they stand now)."""
    snapshot = convert.job(job)
    snapshot.status = common_pb2.JobStatus.ValueType(event.status)
    snapshot.sequence = event.sequence
    snapshot.status_text = TEXT[Status(event.status)]
    snapshot.end_reason = common_pb2.EndReason.ValueType(event.end_reason)
    snapshot.error_code, snapshot.error_message = event.error_code, event.error_message
    return snapshot


class OperatorServicer(operator_pb2_grpc.OperatorServiceServicer):
    def __init__(
        self,
        db: Database,
        links: dict[str, EngineLink],
        broker: Broker[Job],
        remove_results: Callable[[JobRecord], Awaitable[None]] | None = None,
    ) -> None:
        self._db = db
        self._links = links
        self._broker = broker
        self._remove_results = remove_results
        self._creates: GroupCommit[Job, tuple[Job, bool]] = GroupCommit(db, store.create_jobs)

    async def close(self) -> None:
        await self._creates.close()

    async def _environments(self) -> list[common_pb2.Environment]:
        engines = await self._db.run(store.read_engines)
        result = []
        for engine in engines:
            link = self._links.get(engine.engine_id)
            for data in engine.environments or []:
                env = json_format.ParseDict(data, common_pb2.Environment(), ignore_unknown_fields=True)
                env.available = bool(link and link.live)
                result.append(env)
        return result

    def _live_environment(self, environment_id: str) -> common_pb2.Environment | None:
        for link in self._links.values():
            env = link.live_environment(environment_id)
            if env is not None:
                return env
        return None

    async def ListEnvironments(
        self,
        request: operator_pb2.ListEnvironmentsRequest,
        context: UnaryContext[operator_pb2.ListEnvironmentsRequest, operator_pb2.ListEnvironmentsResponse],
    ) -> operator_pb2.ListEnvironmentsResponse:
        return operator_pb2.ListEnvironmentsResponse(environments=await self._environments())

    async def CreateJob(
        self,
        request: operator_pb2.CreateJobRequest,
        context: UnaryContext[operator_pb2.CreateJobRequest, operator_pb2.CreateJobResponse],
    ) -> operator_pb2.CreateJobResponse:
        if not request.request_id:
            raise errors.InvalidArgument(
                "request_id is required (the idempotency key)", "request_id_missing", field="request_id"
            )
        if not request.owner:
            raise errors.InvalidArgument("owner is required", "owner_missing", field="owner")
        workflow = check_workflow(request.workflow)
        env = self._live_environment(request.environment_id)
        if env is None:
            # Unknown, or its engine is not live: the stored view says which.
            environments = {env.id: env for env in await self._environments()}
            env = environments.get(request.environment_id)
        if env is None:
            known = ", ".join(sorted(environments)) or "none yet"
            raise errors.NotFound(
                f"environment {request.environment_id!r} does not exist (known: {known})", "environment_unknown"
            )
        if not env.available:
            raise errors.FailedPrecondition(
                f"environment {env.id} is unavailable: its engine {env.engine_id} has not been seen recently",
                "environment_unavailable",
            )
        row = Job(
            job_id=str(uuid.uuid4()),
            request_id=request.request_id,
            owner=request.owner,
            environment_id=env.id,
            engine_id=env.engine_id,
            status=int(Status.WARMING_UP),
            created_at=store.utcnow(),
            workflow=workflow.SerializeToString(deterministic=True),
            dataset_dids=[d.did for d in workflow.datasets],
            algorithm_did=workflow.algorithm.did if workflow.HasField("algorithm") else "",
            viewers=list(request.viewers),
            dispatched=False,
        )
        job, created = await self._creates.submit(row)
        if created:
            self._links[env.engine_id].wake_dispatcher()
        return operator_pb2.CreateJobResponse(job=convert.job(job), created=created)

    async def _read(self, job_id: str) -> Job:
        job = await self._db.run(lambda s: store.read_job(s, job_id))
        if job is None:
            raise errors.NotFound(f"job {job_id} does not exist", "job_not_found")
        return job

    async def GetJob(
        self,
        request: operator_pb2.GetJobRequest,
        context: UnaryContext[operator_pb2.GetJobRequest, operator_pb2.GetJobResponse],
    ) -> operator_pb2.GetJobResponse:
        return operator_pb2.GetJobResponse(job=convert.job(await self._read(_job_id(request.job_id))))

    async def ListJobs(
        self,
        request: operator_pb2.ListJobsRequest,
        context: UnaryContext[operator_pb2.ListJobsRequest, operator_pb2.ListJobsResponse],
    ) -> operator_pb2.ListJobsResponse:
        page_size = request.page_size or DEFAULT_PAGE
        if page_size > MAX_PAGE:
            raise errors.InvalidArgument(
                f"page_size must be at most {MAX_PAGE}", "page_size_invalid", field="page_size"
            )
        statuses = []
        for status in request.statuses:
            if status not in TEXT:
                raise errors.InvalidArgument(f"status {status} is not a job status", "status_invalid", field="statuses")
            statuses.append(int(status))
        filters = store.JobFilter(
            owner=request.owner,
            statuses=tuple(statuses),
            environment_id=request.environment_id,
            created_after=_time(request, "created_after"),
            created_before=_time(request, "created_before"),
        )
        if filters.created_after and filters.created_before and filters.created_after >= filters.created_before:
            raise errors.InvalidArgument(
                "created_after must be before created_before", "time_range_invalid", field="created_after"
            )
        rows, token = await self._db.run(lambda s: store.list_jobs(s, filters, page_size, request.page_token))
        return operator_pb2.ListJobsResponse(jobs=[convert.job(r) for r in rows], next_page_token=token)

    async def WatchJobs(
        self,
        request: operator_pb2.WatchJobsRequest,
        context: StreamContext[operator_pb2.WatchJobsRequest, operator_pb2.WatchJobsResponse],
    ) -> AsyncIterator[operator_pb2.WatchJobsResponse]:
        if not request.job_ids:
            raise errors.InvalidArgument("name at least one job to watch", "job_ids_missing", field="job_ids")
        untrusted.int64(request.after_sequence, "after_sequence")
        job_ids = sorted({_job_id(j, "job_ids") for j in request.job_ids})
        queue = self._broker.subscribe(job_ids)  # before reading: no change slips between
        try:
            current = {}
            for job_id in job_ids:
                current[job_id] = await self._read(job_id)
            # Per job: a job's changes commit in sequence order (its row lock),
            # but two jobs' changes may commit out of order.
            sent = dict.fromkeys(job_ids, request.after_sequence)
            ended = {j for j, job in current.items() if is_terminal(job.status)}
            if request.after_sequence:
                # Resume: replay the history after the client's sequence.
                events = await self._db.run(lambda s: store.read_events(s, job_ids, request.after_sequence))
                for event in events:
                    yield operator_pb2.WatchJobsResponse(job=_as_of(current[event.job_id], event))
                    sent[event.job_id] = event.sequence
                    if is_terminal(event.status):
                        ended.add(event.job_id)  # it ended after the first read
            else:
                for job in sorted(current.values(), key=lambda j: j.sequence):
                    yield operator_pb2.WatchJobsResponse(job=convert.job(job))
                    sent[job.job_id] = job.sequence
            open_jobs = set(job_ids) - ended
            while open_jobs:
                try:
                    job = await asyncio.wait_for(queue.get(), timeout=5.0)
                except TimeoutError:
                    # Another replica may have applied the change: look again.
                    for job_id in list(open_jobs):
                        fresh = await self._read(job_id)
                        if fresh.sequence > sent[job_id]:
                            queue.put_nowait(fresh)
                    continue
                if job.sequence <= sent[job.job_id]:
                    continue
                # The engine's changes are applied in batches and the broker carries a
                # job as it stands after one: the changes it skipped come from history.
                missed = await self._db.run(
                    functools.partial(store.read_events, job_ids=[job.job_id], after_sequence=sent[job.job_id])
                )
                for event in missed:
                    if event.sequence < job.sequence:
                        yield operator_pb2.WatchJobsResponse(job=_as_of(job, event))
                sent[job.job_id] = job.sequence
                yield operator_pb2.WatchJobsResponse(job=convert.job(job))
                if is_terminal(job.status):
                    open_jobs.discard(job.job_id)
        finally:
            self._broker.unsubscribe(job_ids, queue)

    async def StopJob(
        self,
        request: operator_pb2.StopJobRequest,
        context: UnaryContext[operator_pb2.StopJobRequest, operator_pb2.StopJobResponse],
    ) -> operator_pb2.StopJobResponse:
        return await self._stop(_job_id(request.job_id))

    async def _stop(self, job_id: str) -> operator_pb2.StopJobResponse:
        job = await self._read(job_id)
        if is_terminal(job.status):
            raise errors.FailedPrecondition(
                f"job {job.job_id} already ended with status {job.status} ({TEXT[Status(job.status)]})",
                "job_ended",
            )
        if not job.dispatched:

            def end(session: Session) -> Job | None:
                locked = store.read_job(session, job.job_id, lock=True)
                if locked is not None and not locked.dispatched and not is_terminal(locked.status):
                    store.end_job(session, locked, EndReason.STOPPED, "stopped", "stopped by its owner")
                    return locked
                return None

            ended = await self._db.run(end)
            if ended is not None:
                self._broker.publish([ended])
                return operator_pb2.StopJobResponse(job=convert.job(ended))
        queue = self._broker.subscribe([job.job_id])
        try:
            await self._links[job.engine_id].stop(job.job_id)
            deadline = asyncio.get_running_loop().time() + STOP_SETTLE_S
            while not is_terminal(job.status):
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
        finally:
            self._broker.unsubscribe([job.job_id], queue)
        return operator_pb2.StopJobResponse(job=convert.job(await self._read(job.job_id)))

    async def DeleteJob(
        self,
        request: operator_pb2.DeleteJobRequest,
        context: UnaryContext[operator_pb2.DeleteJobRequest, operator_pb2.DeleteJobResponse],
    ) -> operator_pb2.DeleteJobResponse:
        job = await self._read(_job_id(request.job_id))
        link = self._links.get(job.engine_id)
        if job.dispatched and link is not None:
            await link.delete(job.job_id)
        elif not is_terminal(job.status):
            await self._stop(job.job_id)
        if self._remove_results is not None and job.results:
            await self._remove_results(job)

        def mark(session: Session) -> None:
            row = store.read_job(session, job.job_id, lock=True)
            if row is not None:
                if self._remove_results is not None:
                    store.mark_results_expired(session, row.job_id, store.utcnow())
                row.deleted_at = store.utcnow()  # the row stays as the audit record

        await self._db.run(mark)
        return operator_pb2.DeleteJobResponse()

    async def StreamJobLogs(
        self,
        request: operator_pb2.StreamJobLogsRequest,
        context: StreamContext[operator_pb2.StreamJobLogsRequest, operator_pb2.StreamJobLogsResponse],
    ) -> AsyncIterator[operator_pb2.StreamJobLogsResponse]:
        untrusted.int64(request.offset, "offset")
        job = await self._read(_job_id(request.job_id))
        if not job.dispatched:
            return
        async for chunk in self._links[job.engine_id].stream_logs(job.job_id, request.follow, request.offset):
            yield operator_pb2.StreamJobLogsResponse(data=chunk.data, offset=chunk.offset)
