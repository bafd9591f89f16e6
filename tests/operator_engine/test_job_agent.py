"""JobAgentService over a real channel, in front of an orchestrator whose pods
hold their stage: a pod's mistakes get the right status, reason and field, and
its reports (the stage table's) move the job on to 70."""

from __future__ import annotations

import grpc
import pytest

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import job_agent_pb2
from plumbing import auth
from plumbing.grpc_errors import bad_request_fields, error_code
from plumbing.statuses import Status
from tests.operator_engine.orchestrator_harness import HeldPods, job_agent_on, orchestrator_on, reached, spec

WORKFLOW = common_pb2.Workflow(
    datasets=[common_pb2.WorkflowAsset(did="did:op:x")],
    raw_algorithm="print(1)",
    container=common_pb2.AlgorithmContainer(entrypoint="python3 $ALGO", image="python"),
)


async def refused(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_the_job_agent_refuses_a_pods_mistakes_and_takes_its_reports(tmp_path):
    async with orchestrator_on(tmp_path, HeldPods) as (orchestrator, _, pods), job_agent_on(orchestrator) as agent:
        assert await orchestrator.submit(spec("held"), WORKFLOW.SerializeToString())
        token = (await pods.reached("configure")).token

        def progress(status: int, job_id: str = "held", token: str = token):  # type: ignore[no-untyped-def]
            request = job_agent_pb2.ReportProgressRequest(job_id=job_id, status=status)  # type: ignore[arg-type]
            return agent.ReportProgress(request, metadata=auth.bearer(token))

        def results(job_id: str = "held"):  # type: ignore[no-untyped-def]
            manifest = common_pb2.ResultsManifest(storage="local")
            request = job_agent_pb2.ReportResultsRequest(job_id=job_id, results=manifest)
            return agent.ReportResults(request, metadata=auth.bearer(token))

        anonymous = await refused(agent.GetWorkflow(job_agent_pb2.GetWorkflowRequest(job_id="held")))
        assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
        stranger = await refused(progress(Status.PROVISIONING_SUCCESS, token="not-its-token"))
        assert (stranger.code(), error_code(stranger)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "JOB_TOKEN_INVALID",
        )
        for call, code, reason, fields in [
            (progress(30, job_id="../held"), grpc.StatusCode.INVALID_ARGUMENT, "JOB_ID_INVALID", ["job_id"]),
            (progress(99), grpc.StatusCode.INVALID_ARGUMENT, "STATUS_INVALID", ["status"]),
            (
                progress(Status.RUNNING_ALGORITHM),
                grpc.StatusCode.FAILED_PRECONDITION,
                "REPORT_OUT_OF_STAGE",
                [],
            ),
            (
                progress(Status.RESULTS_UPLOAD_FAILED),
                grpc.StatusCode.FAILED_PRECONDITION,
                "REPORT_OUT_OF_STAGE",
                [],
            ),
            (results(), grpc.StatusCode.FAILED_PRECONDITION, "REPORT_OUT_OF_STAGE", []),
        ]:
            error = await refused(call)
            assert (error.code(), error_code(error), bad_request_fields(error)) == (code, reason, fields)
        assert "results can only be reported during the publish stage, not configure" in error.details()

        # None of that moved the job; its own reports do.
        assert await orchestrator.status_of("held") == Status.CONFIGURING_VOLUMES
        workflow = await agent.GetWorkflow(job_agent_pb2.GetWorkflowRequest(job_id="held"), metadata=auth.bearer(token))
        assert workflow.workflow == WORKFLOW and workflow.environment.id == "local-cpu"
        await progress(Status.CONFIGURING_VOLUMES)  # the engine's own announcement, repeated: harmless
        await progress(Status.PROVISIONING_SUCCESS)
        assert (await pods.reached("publish")).token == token
        await results()
        await reached(orchestrator, "held", Status.FINISHED)
        ended = await refused(progress(Status.RESULTS_UPLOAD_FAILED))  # its token ended with it
        assert ended.code() == grpc.StatusCode.PERMISSION_DENIED
