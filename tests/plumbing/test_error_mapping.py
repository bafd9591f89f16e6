"""Every RPC of a registered servicer maps domain errors to their status with
the machine-readable code, and anything else to INTERNAL without internals."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy.exc import OperationalError

from c2d.engine.v1 import engine_pb2, engine_pb2_grpc
from plumbing import errors
from plumbing.grpc_errors import error_code, retry_delay_s
from plumbing.server import Registration, start_server

ENGINE_SERVICE = engine_pb2.DESCRIPTOR.services_by_name["EngineService"].full_name


class Failing(engine_pb2_grpc.EngineServiceServicer):
    async def ListEnvironments(self, request, context):  # type: ignore[override]
        raise errors.NotFound("engine e7 is not known", "engine_not_found")

    async def StopJob(self, request, context):  # type: ignore[override]
        raise RuntimeError("secret internals")

    async def StreamJobLogs(self, request, context):  # type: ignore[override]
        yield engine_pb2.StreamJobLogsResponse(data=b"first")
        raise errors.FailedPrecondition("the log is gone", "log_gone")


async def test_domain_errors_map_to_statuses_and_bugs_to_internal():
    running = await start_server(
        "127.0.0.1:0", [Registration(ENGINE_SERVICE, engine_pb2_grpc.add_EngineServiceServicer_to_server, Failing())]
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = engine_pb2_grpc.EngineServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as not_found:
                await stub.ListEnvironments(engine_pb2.ListEnvironmentsRequest())
            assert not_found.value.code() == grpc.StatusCode.NOT_FOUND
            assert not_found.value.details() == "engine e7 is not known"
            assert error_code(not_found.value) == "ENGINE_NOT_FOUND"

            with pytest.raises(grpc.aio.AioRpcError) as bug:
                await stub.StopJob(engine_pb2.StopJobRequest(job_id="j"))
            assert bug.value.code() == grpc.StatusCode.INTERNAL
            assert "secret" not in bug.value.details()

            received = []
            with pytest.raises(grpc.aio.AioRpcError) as mid_stream:
                async for chunk in stub.StreamJobLogs(engine_pb2.StreamJobLogsRequest(job_id="j")):
                    received.append(chunk.data)
            assert received == [b"first"]
            assert mid_stream.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert error_code(mid_stream.value) == "LOG_GONE"
    finally:
        await running.stop(0)


class DatabaseGone(engine_pb2_grpc.EngineServiceServicer):
    async def StopJob(self, request, context):  # type: ignore[override]
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


async def test_a_database_that_went_away_is_unavailable_not_internal():
    # Found by the fault trials (issue 19): during a PostgreSQL restart, GetJobDetails answered INTERNAL.
    running = await start_server(
        "127.0.0.1:0",
        [Registration(ENGINE_SERVICE, engine_pb2_grpc.add_EngineServiceServicer_to_server, DatabaseGone())],
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = engine_pb2_grpc.EngineServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as outage:
                await stub.StopJob(engine_pb2.StopJobRequest(job_id="j"))
            assert outage.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_code(outage.value) == "DATABASE_UNAVAILABLE"
            assert retry_delay_s(outage.value) == 2.0
            assert "server closed" not in outage.value.details()
    finally:
        await running.stop(0)
