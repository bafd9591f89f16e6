"""The operator-service, as the provider calls it (jobs and environments).

Every call carries the service credential; a status the operator-service
answers becomes the domain error `downstream_error` gives (same status and
reason), so the servicers never see grpc's exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc

from c2d.common.v1 import common_pb2
from c2d.operator.v1 import operator_pb2, operator_pb2_grpc
from plumbing import auth
from plumbing.grpc_errors import downstream_error

OPERATOR_SERVICE = "the operator-service"
CALL_TIMEOUT_S = 30

Response = TypeVar("Response")
Item = TypeVar("Item")


class OperatorClient:
    def __init__(self, address: str, token: str) -> None:
        self._channel = auth.internal_channel(address)
        self._stub = operator_pb2_grpc.OperatorServiceStub(self._channel)
        self._metadata = auth.bearer(token)

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Callable[..., Awaitable[Response]], request: object) -> Response:
        try:
            return await method(request, metadata=self._metadata, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise downstream_error(exc, OPERATOR_SERVICE) from None

    async def get_job(self, job_id: str) -> common_pb2.Job:
        """The operator-service's record of a job (no ownership check)."""
        return (await self._call(self._stub.GetJob, operator_pb2.GetJobRequest(job_id=job_id))).job

    async def list_environments(self) -> Sequence[common_pb2.Environment]:
        response = await self._call(self._stub.ListEnvironments, operator_pb2.ListEnvironmentsRequest())
        return response.environments

    async def create_job(
        self, request_id: str, owner: str, environment_id: str, workflow: common_pb2.Workflow, viewers: Iterable[str]
    ) -> common_pb2.Job:
        """The job for `request_id`: a new one, or the one an earlier call with it created."""
        request = operator_pb2.CreateJobRequest(
            request_id=request_id, owner=owner, environment_id=environment_id, workflow=workflow, viewers=viewers
        )
        return (await self._call(self._stub.CreateJob, request)).job

    async def list_jobs(
        self, owner: str, statuses: Iterable[common_pb2.JobStatus.ValueType], page_size: int, page_token: str
    ) -> operator_pb2.ListJobsResponse:
        request = operator_pb2.ListJobsRequest(
            owner=owner, statuses=statuses, page_size=page_size, page_token=page_token
        )
        return await self._call(self._stub.ListJobs, request)

    async def stop_job(self, job_id: str) -> common_pb2.Job:
        return (await self._call(self._stub.StopJob, operator_pb2.StopJobRequest(job_id=job_id))).job

    async def delete_job(self, job_id: str) -> None:
        await self._call(self._stub.DeleteJob, operator_pb2.DeleteJobRequest(job_id=job_id))

    def watch_job(self, job_id: str, after_sequence: int) -> AsyncGenerator[common_pb2.Job, None]:
        """The job as it changes, from after `after_sequence` (no deadline: it follows the job)."""
        request = operator_pb2.WatchJobsRequest(job_ids=[job_id], after_sequence=after_sequence)
        return self._stream(self._stub.WatchJobs(request, metadata=self._metadata), lambda update: update.job)

    def stream_job_logs(
        self, job_id: str, follow: bool, offset: int
    ) -> AsyncGenerator[operator_pb2.StreamJobLogsResponse, None]:
        request = operator_pb2.StreamJobLogsRequest(job_id=job_id, follow=follow, offset=offset)
        return self._stream(self._stub.StreamJobLogs(request, metadata=self._metadata), lambda chunk: chunk)

    @staticmethod
    async def _stream(call: Any, item: Callable[[Any], Item]) -> AsyncGenerator[Item, None]:
        try:
            async for message in call:
                yield item(message)
        except grpc.aio.AioRpcError as exc:
            raise downstream_error(exc, OPERATOR_SERVICE) from None
        finally:
            call.cancel()  # a consumer that went away ends the call at once
