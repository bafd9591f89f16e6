"""EngineService and JobAgentService."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import engine_pb2, engine_pb2_grpc, job_agent_pb2, job_agent_pb2_grpc
from plumbing import auth, errors, job_files, tracing, untrusted
from plumbing.rpc_types import StreamContext, UnaryContext
from plumbing.statuses import Status
from plumbing.workflows import check_workflow
from services.operator_engine.api import convert
from services.operator_engine.domain.jobs import ALGORITHM_LOG
from services.operator_engine.domain.orchestrator import Orchestrator, Run
from services.operator_engine.persistence.event_log import EventLog

# Job ids become directory names: only these characters, never "..".
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
LOG_CHUNK = 64 * 1024
MAX_SUBMIT_BATCH = 1000  # jobs per SubmitJobs call (the operator-service sends at most 500)
LOG_POLL_S = 0.1


def check_job_id(job_id: str) -> str:
    if not JOB_ID.match(job_id):
        raise errors.InvalidArgument(
            f"job_id {job_id!r} is not valid: use 1-64 letters, digits, '-' or '_'", "job_id_invalid", field="job_id"
        )
    return job_id


def _job_of(request: engine_pb2.SubmitJobRequest) -> tuple[dict[str, Any], bytes]:
    """A submitted job's spec fields and serialized workflow, once validated."""
    check_job_id(request.job_id)
    if not request.environment_id:
        raise errors.InvalidArgument("environment_id is required", "environment_missing", field="environment_id")
    workflow = check_workflow(request.workflow)
    fields = {
        "job_id": request.job_id,
        "environment_id": request.environment_id,
        "entrypoint": workflow.container.entrypoint,
        "image": workflow.container.image,
        "image_tag": workflow.container.tag,
        "image_checksum": workflow.container.checksum,
        "allow_network": workflow.allow_network,
        "algorithm_timeout_s": float(workflow.max_duration_seconds),
        "dataset_dids": [d.did for d in workflow.datasets],
        "algorithm_did": workflow.algorithm.did if workflow.HasField("algorithm") else "",
        "trace_parent": tracing.canonical(workflow.trace_parent),
    }
    return fields, workflow.SerializeToString(deterministic=True)


class EngineServicer(engine_pb2_grpc.EngineServiceServicer):
    def __init__(self, orchestrator: Orchestrator, events: EventLog, engine_id: str, heartbeat_s: float) -> None:
        self._orchestrator = orchestrator
        self._events = events
        self._engine_id = engine_id
        self._heartbeat_s = heartbeat_s

    def environments(self) -> list[common_pb2.Environment]:
        o = self._orchestrator
        return [convert.environment(o.environment, self._engine_id, o.running_jobs, o.queued_jobs, o.backend.sandboxed)]

    async def ListEnvironments(
        self,
        request: engine_pb2.ListEnvironmentsRequest,
        context: UnaryContext[engine_pb2.ListEnvironmentsRequest, engine_pb2.ListEnvironmentsResponse],
    ) -> engine_pb2.ListEnvironmentsResponse:
        return engine_pb2.ListEnvironmentsResponse(engine_id=self._engine_id, environments=self.environments())

    async def SubmitJob(
        self,
        request: engine_pb2.SubmitJobRequest,
        context: UnaryContext[engine_pb2.SubmitJobRequest, engine_pb2.SubmitJobResponse],
    ) -> engine_pb2.SubmitJobResponse:
        created = await self._orchestrator.submit(*_job_of(request))
        return engine_pb2.SubmitJobResponse(created=created)

    async def SubmitJobs(
        self,
        request: engine_pb2.SubmitJobsRequest,
        context: UnaryContext[engine_pb2.SubmitJobsRequest, engine_pb2.SubmitJobsResponse],
    ) -> engine_pb2.SubmitJobsResponse:
        if not request.jobs:
            raise errors.InvalidArgument("name at least one job to submit", "jobs_missing", field="jobs")
        if len(request.jobs) > MAX_SUBMIT_BATCH:
            raise errors.InvalidArgument(
                f"{len(request.jobs)} jobs in one call: at most {MAX_SUBMIT_BATCH}; split the batch",
                "too_many_jobs",
                field="jobs",
            )

        async def one(job: engine_pb2.SubmitJobRequest) -> engine_pb2.SubmitJobResult:
            try:
                created = await self._orchestrator.submit(*_job_of(job))
            except errors.ServiceError as exc:
                return engine_pb2.SubmitJobResult(
                    job_id=job.job_id, error_code=exc.code or exc.kind, error_message=exc.message
                )
            return engine_pb2.SubmitJobResult(job_id=job.job_id, created=created)

        # Concurrently, so the orchestrator stores them in one transaction.
        results = await asyncio.gather(*(one(job) for job in request.jobs))
        return engine_pb2.SubmitJobsResponse(results=results)

    async def StopJob(
        self,
        request: engine_pb2.StopJobRequest,
        context: UnaryContext[engine_pb2.StopJobRequest, engine_pb2.StopJobResponse],
    ) -> engine_pb2.StopJobResponse:
        status = await self._orchestrator.stop(check_job_id(request.job_id))
        return engine_pb2.StopJobResponse(status=common_pb2.JobStatus.ValueType(status))

    async def DeleteJob(
        self,
        request: engine_pb2.DeleteJobRequest,
        context: UnaryContext[engine_pb2.DeleteJobRequest, engine_pb2.DeleteJobResponse],
    ) -> engine_pb2.DeleteJobResponse:
        await self._orchestrator.delete(check_job_id(request.job_id))
        return engine_pb2.DeleteJobResponse()

    async def StreamStateChanges(
        self,
        request: engine_pb2.StreamStateChangesRequest,
        context: StreamContext[engine_pb2.StreamStateChangesRequest, engine_pb2.StreamStateChangesResponse],
    ) -> AsyncIterator[engine_pb2.StreamStateChangesResponse]:
        after = untrusted.int64(request.after_sequence, "after_sequence")
        if after > self._events.latest:
            raise errors.FailedPrecondition(
                f"after_sequence {after} is beyond this engine's latest sequence {self._events.latest}",
                "sequence_ahead",
            )
        heartbeat_s = request.heartbeat_seconds or self._heartbeat_s
        yield self._heartbeat()
        while True:
            changes = await self._events.read_after(after)
            if changes:
                batch = engine_pb2.StateChanges(changes=[convert.state_change(change) for change in changes])
                yield engine_pb2.StreamStateChangesResponse(changes=batch)
                after = changes[-1].sequence
            if not changes and not await self._events.wait_beyond(after, heartbeat_s):
                yield self._heartbeat()

    def _heartbeat(self) -> engine_pb2.StreamStateChangesResponse:
        return engine_pb2.StreamStateChangesResponse(
            heartbeat=engine_pb2.Heartbeat(
                engine_id=self._engine_id, latest_sequence=self._events.latest, environments=self.environments()
            )
        )

    async def StreamJobLogs(
        self,
        request: engine_pb2.StreamJobLogsRequest,
        context: StreamContext[engine_pb2.StreamJobLogsRequest, engine_pb2.StreamJobLogsResponse],
    ) -> AsyncIterator[engine_pb2.StreamJobLogsResponse]:
        job_id = check_job_id(request.job_id)
        if not self._orchestrator.is_active(job_id):
            await self._orchestrator.status_of(job_id)  # raises NOT_FOUND for unknown jobs
        # The engine's copy of the algorithm's output (admin/, out of the algorithm's reach),
        # still opened as a job file: no link is followed, only a regular file is read.
        workspace = self._orchestrator.workspace_of(job_id)
        offset = untrusted.int64(request.offset, "offset")
        while True:
            # Sampled before the read: once the job has ended, that read gets the log's last bytes.
            following = request.follow and self._orchestrator.is_active(job_id)
            data = await asyncio.to_thread(_read_from, workspace, offset)
            if data:
                yield engine_pb2.StreamJobLogsResponse(data=data, offset=offset)
                offset += len(data)
                continue
            if not following:
                return
            await asyncio.sleep(LOG_POLL_S)


def _read_from(workspace: Path, offset: int) -> bytes:
    try:
        # as an unprivileged user: whatever a mistake here opens, it is nothing root-only
        with job_files.open_file(workspace, ALGORITHM_LOG, unprivileged=True) as f:
            f.seek(offset)
            return f.read(LOG_CHUNK)
    except FileNotFoundError:
        return b""
    except job_files.NotAllowed as exc:
        raise errors.FailedPrecondition(f"the job's log cannot be served: {exc.strerror}", "log_unreadable") from None
    except PermissionError as exc:  # not the file the engine wrote, which its reader may read
        raise errors.FailedPrecondition(
            f"the job's log cannot be served: the unprivileged log reader may not open it ({exc.strerror})",
            "log_unreadable",
        ) from None


_AgentRequest = (
    job_agent_pb2.GetWorkflowRequest
    | job_agent_pb2.ReportProgressRequest
    | job_agent_pb2.ReportResultsRequest
    | job_agent_pb2.GetAlgorithmLogRequest
)


class JobAgentServicer(job_agent_pb2_grpc.JobAgentServiceServicer):
    """Pods authenticate with their own job's token, nothing else."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        environments: Callable[[], list[common_pb2.Environment]],
        count_staged_bytes: Callable[[int], object] = lambda n: None,
    ) -> None:
        self._orchestrator = orchestrator
        self._environments = environments
        self._count_staged_bytes = count_staged_bytes

    def _run(self, request: _AgentRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Run:
        # The credential first: a caller without one learns nothing, not even what a valid request is.
        token = auth.presented_token(context.invocation_metadata())
        if not token:
            raise errors.Unauthenticated("missing job token (authorization: Bearer <C2D_JOB_TOKEN>)")
        return self._orchestrator.authorize_pod(check_job_id(request.job_id), token)

    async def GetWorkflow(
        self,
        request: job_agent_pb2.GetWorkflowRequest,
        context: UnaryContext[job_agent_pb2.GetWorkflowRequest, job_agent_pb2.GetWorkflowResponse],
    ) -> job_agent_pb2.GetWorkflowResponse:
        run = self._run(request, context)
        workflow = common_pb2.Workflow.FromString(self._orchestrator.workflow_of(run))
        return job_agent_pb2.GetWorkflowResponse(
            job_id=request.job_id, workflow=workflow, environment=self._environments()[0]
        )

    async def ReportProgress(
        self,
        request: job_agent_pb2.ReportProgressRequest,
        context: UnaryContext[job_agent_pb2.ReportProgressRequest, job_agent_pb2.ReportProgressResponse],
    ) -> job_agent_pb2.ReportProgressResponse:
        run = self._run(request, context)
        try:
            status = Status(request.status)
        except ValueError:
            raise errors.InvalidArgument(
                f"status {request.status} is not a job status", "status_invalid", field="status"
            ) from None
        await self._orchestrator.report_progress(run, status, request.error_code, request.message)
        if status == Status.PROVISIONING_SUCCESS:
            self._count_staged_bytes(request.staged_bytes)
        return job_agent_pb2.ReportProgressResponse()

    async def ReportResults(
        self,
        request: job_agent_pb2.ReportResultsRequest,
        context: UnaryContext[job_agent_pb2.ReportResultsRequest, job_agent_pb2.ReportResultsResponse],
    ) -> job_agent_pb2.ReportResultsResponse:
        run = self._run(request, context)
        self._orchestrator.record_results(run, convert.manifest_to_json(request.results), request.results_did)
        return job_agent_pb2.ReportResultsResponse()

    async def GetAlgorithmLog(
        self,
        request: job_agent_pb2.GetAlgorithmLogRequest,
        context: StreamContext[job_agent_pb2.GetAlgorithmLogRequest, job_agent_pb2.GetAlgorithmLogResponse],
    ) -> AsyncIterator[job_agent_pb2.GetAlgorithmLogResponse]:
        self._run(request, context)
        workspace = self._orchestrator.workspace_of(request.job_id)
        offset = 0
        while data := await asyncio.to_thread(_read_from, workspace, offset):
            yield job_agent_pb2.GetAlgorithmLogResponse(data=data)
            offset += len(data)
