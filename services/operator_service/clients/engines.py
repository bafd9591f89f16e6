"""The client of one engine's EngineService (the domain's `ports.EngineClient`).

Speaks protobuf and gRPC so that the domain does not: state changes and
heartbeats arrive as `ports.IncomingChange` and `ports.Heartbeat`, and every
failed call is raised as the domain error `downstream_error` makes of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import engine_pb2, engine_pb2_grpc
from plumbing import auth
from plumbing.grpc_errors import downstream_error
from services.operator_service.domain.ports import Heartbeat, IncomingChange, JobToSubmit, LogChunk, Refusal

STOP_TIMEOUT_S = 10.0
DELETE_TIMEOUT_S = 30.0


class EngineClient:
    def __init__(self, engine_id: str, address: str, token: str) -> None:
        self.engine_id = engine_id
        self._name = f"engine {engine_id}"
        self._metadata = auth.bearer(token)
        self._channel = auth.internal_channel(address)
        self._stub = engine_pb2_grpc.EngineServiceStub(self._channel)

    async def close(self) -> None:
        # Closing the channel ends the state stream's call: a read of it whose task
        # was cancelled can otherwise wait for the engine's next message, for ever
        # if the engine has stopped sending (seen in 1 of 5 test runs).
        await self._channel.close()

    def state_changes(self, after_sequence: int) -> StateStream:
        call = self._stub.StreamStateChanges(
            engine_pb2.StreamStateChangesRequest(after_sequence=after_sequence), metadata=self._metadata
        )
        return StateStream(call, self._name)

    async def submit_jobs(self, jobs: Sequence[JobToSubmit], timeout: float) -> list[Refusal]:
        request = engine_pb2.SubmitJobsRequest(
            jobs=[
                engine_pb2.SubmitJobRequest(
                    job_id=job.job_id,
                    environment_id=job.environment_id,
                    workflow=common_pb2.Workflow.FromString(job.workflow),
                )
                for job in jobs
            ]
        )
        response = await self._call(self._stub.SubmitJobs(request, metadata=self._metadata, timeout=timeout))
        return [
            Refusal(result.job_id, result.error_code, result.error_message)
            for result in response.results
            if result.error_code
        ]

    async def stop_job(self, job_id: str) -> None:
        await self._call(
            self._stub.StopJob(
                engine_pb2.StopJobRequest(job_id=job_id), metadata=self._metadata, timeout=STOP_TIMEOUT_S
            )
        )

    async def delete_job(self, job_id: str) -> None:
        request = engine_pb2.DeleteJobRequest(job_id=job_id)
        await self._call(self._stub.DeleteJob(request, metadata=self._metadata, timeout=DELETE_TIMEOUT_S))

    async def job_logs(self, job_id: str, follow: bool, offset: int) -> AsyncIterator[LogChunk]:
        call = self._stub.StreamJobLogs(
            engine_pb2.StreamJobLogsRequest(job_id=job_id, follow=follow, offset=offset), metadata=self._metadata
        )
        try:
            async for chunk in call:
                yield LogChunk(chunk.data, chunk.offset)
        except grpc.aio.AioRpcError as exc:
            raise downstream_error(exc, self._name) from None

    async def _call(self, call: Any) -> Any:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise downstream_error(exc, self._name) from None


class StateStream:
    """One StreamStateChanges call (the domain's `ports.StateStream`)."""

    def __init__(self, call: Any, name: str) -> None:
        self._call = call
        self._name = name

    async def read(self) -> Heartbeat | list[IncomingChange] | None:
        try:
            response = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise downstream_error(exc, self._name) from None
        if response is grpc.aio.EOF:
            return None
        if response.HasField("heartbeat"):
            return Heartbeat(tuple(response.heartbeat.environments), response.heartbeat.latest_sequence)
        return [incoming(change) for change in response.changes.changes]

    def cancel(self) -> None:
        self._call.cancel()


def incoming(change: engine_pb2.StateChange) -> IncomingChange:
    return IncomingChange(
        sequence=change.sequence,
        job_id=change.job_id,
        status=change.status,
        end_reason=change.end_reason,
        error_code=change.error_code,
        error_message=change.error_message,
        time=change.time.ToDatetime(tzinfo=UTC) if change.HasField("time") else datetime.now(UTC),
        results=json_format.MessageToDict(change.results, preserving_proto_field_name=True)
        if change.HasField("results")
        else None,
        outcome=json_format.MessageToDict(change.algorithm_outcome, preserving_proto_field_name=True)
        if change.HasField("algorithm_outcome")
        else None,
        results_did=change.results_did,
    )
