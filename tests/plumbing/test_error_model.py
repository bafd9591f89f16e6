"""The error model (AIP-193) on the wire, and errors kept across a hop.

A downstream service (an engine) refuses; an upstream one (an operator-style
servicer calling it over a real channel) passes the refusal on with
`downstream_error`; the client must see the downstream's status and reason.
"""

from __future__ import annotations

import grpc
import pytest

from c2d.engine.v1 import engine_pb2, engine_pb2_grpc
from c2d.operator.v1 import operator_pb2, operator_pb2_grpc
from plumbing import errors
from plumbing.grpc_errors import (
    bad_request_fields,
    downstream_error,
    error_code,
    error_info,
    reason_of,
    retry_delay_s,
)
from plumbing.server import Registration, start_server

ENGINE_SERVICE = engine_pb2.DESCRIPTOR.services_by_name["EngineService"].full_name
OPERATOR_SERVICE = operator_pb2.DESCRIPTOR.services_by_name["OperatorService"].full_name

# What the downstream engine answers, by job id.
REFUSALS = {
    "denied": errors.PermissionDenied("not your job", "job_not_yours", metadata={"job_id": "denied"}),
    "unauthenticated": errors.Unauthenticated("bad token", "token_invalid"),
    "deadline": errors.DeadlineExceeded("took too long", "stop_timed_out"),
    "busy": errors.Unavailable("restarting", "engine_restarting", retry_after_s=2.5),
    "bad": errors.InvalidArgument("job_id is malformed", "job_id_invalid", field="job_id"),
}


class Engine(engine_pb2_grpc.EngineServiceServicer):
    async def StopJob(self, request, context):  # type: ignore[override]
        if request.job_id == "bug":
            raise RuntimeError("secret internals")
        raise REFUSALS[request.job_id]


class Operator(operator_pb2_grpc.OperatorServiceServicer):
    def __init__(self, engine: engine_pb2_grpc.EngineServiceStub) -> None:
        self.engine = engine

    async def StopJob(self, request, context):  # type: ignore[override]
        try:
            await self.engine.StopJob(engine_pb2.StopJobRequest(job_id=request.job_id))
        except grpc.aio.AioRpcError as exc:
            raise downstream_error(exc, "engine e1") from None
        return operator_pb2.StopJobResponse()


@pytest.fixture
async def two_hops():
    engine = await start_server(
        "127.0.0.1:0", [Registration(ENGINE_SERVICE, engine_pb2_grpc.add_EngineServiceServicer_to_server, Engine())]
    )
    engine_channel = grpc.aio.insecure_channel(f"127.0.0.1:{engine.port}")
    operator = await start_server(
        "127.0.0.1:0",
        [
            Registration(
                OPERATOR_SERVICE,
                operator_pb2_grpc.add_OperatorServiceServicer_to_server,
                Operator(engine_pb2_grpc.EngineServiceStub(engine_channel)),
            )
        ],
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{operator.port}")
    try:
        yield operator_pb2_grpc.OperatorServiceStub(channel), engine_pb2_grpc.EngineServiceStub(engine_channel)
    finally:
        await channel.close()
        await engine_channel.close()
        await operator.stop(0)
        await engine.stop(0)


async def _refusal(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def test_reasons_are_upper_snake_case():
    assert reason_of("job_not_found") == "JOB_NOT_FOUND"
    assert reason_of("results-asset.failed") == "RESULTS_ASSET_FAILED"


async def test_error_info_names_the_reason_and_the_service_domain(two_hops):
    _, engine = two_hops
    refused = await _refusal(engine.StopJob(engine_pb2.StopJobRequest(job_id="denied")))
    info = error_info(refused)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (info.reason, info.domain, dict(info.metadata)) == ("JOB_NOT_YOURS", "c2d.engine", {"job_id": "denied"})


async def test_invalid_argument_names_the_field_in_a_bad_request(two_hops):
    _, engine = two_hops
    refused = await _refusal(engine.StopJob(engine_pb2.StopJobRequest(job_id="bad")))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(refused) == ["job_id"]


async def test_unavailable_carries_retry_info(two_hops):
    _, engine = two_hops
    refused = await _refusal(engine.StopJob(engine_pb2.StopJobRequest(job_id="busy")))
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert retry_delay_s(refused) == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("job_id", "status", "reason"),
    [
        ("denied", grpc.StatusCode.PERMISSION_DENIED, "JOB_NOT_YOURS"),
        ("deadline", grpc.StatusCode.DEADLINE_EXCEEDED, "STOP_TIMED_OUT"),
        ("busy", grpc.StatusCode.UNAVAILABLE, "ENGINE_RESTARTING"),
        ("bad", grpc.StatusCode.INVALID_ARGUMENT, "JOB_ID_INVALID"),
    ],
)
async def test_a_refusal_keeps_its_status_and_reason_across_a_hop(two_hops, job_id, status, reason):
    operator, _ = two_hops
    refused = await _refusal(operator.StopJob(operator_pb2.StopJobRequest(job_id=job_id)))
    info = error_info(refused)
    assert (refused.code(), info.reason, info.domain) == (status, reason, "c2d.operator")
    assert info.metadata["service"] == "engine e1"
    assert REFUSALS[job_id].message in refused.details()
    if job_id == "busy":
        assert retry_delay_s(refused) == pytest.approx(2.5)
    if job_id == "bad":
        assert bad_request_fields(refused) == ["job_id"]


async def test_downstream_credentials_refused_or_bugs_become_internal_naming_the_service(two_hops):
    operator, _ = two_hops
    refused = await _refusal(operator.StopJob(operator_pb2.StopJobRequest(job_id="unauthenticated")))
    assert refused.code() == grpc.StatusCode.INTERNAL
    assert "engine e1" in refused.details() and "C2D_SERVICE_TOKEN" in refused.details()
    assert error_code(refused) == "TOKEN_INVALID"
    bug = await _refusal(operator.StopJob(operator_pb2.StopJobRequest(job_id="bug")))
    assert bug.code() == grpc.StatusCode.INTERNAL
    assert "engine e1" in bug.details() and "secret" not in bug.details()
