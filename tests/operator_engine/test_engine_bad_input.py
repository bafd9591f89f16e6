"""SubmitJob refuses bad input with the right status and an actionable message,
before anything runs: no event in the stream, no workspace on disk."""

from __future__ import annotations

import grpc
import pytest

from c2d.engine.v1 import engine_pb2
from plumbing.grpc_errors import bad_request_fields, error_code
from tests.operator_engine.engine_harness import engine_running, workflow


async def refused(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_bad_submissions_are_refused_before_anything_runs(data_dir, postgres_url, tmp_path):
    workspaces = tmp_path / "ws"
    async with engine_running(postgres_url, workspaces, max_job_duration_s=60) as engine:
        no_algo = await refused(engine.submit(workflow("print(1)", entrypoint="python3 main.py"), "no-algo"))
        assert no_algo.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "$ALGO" in no_algo.details()
        assert error_code(no_algo) == "ENTRYPOINT_INVALID"
        assert bad_request_fields(no_algo) == ["workflow.container.entrypoint"]

        unknown_env = await refused(engine.submit(workflow("print(1)"), "unknown-env", environment_id="gpu-a100"))
        assert unknown_env.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'gpu-a100' is not offered" in unknown_env.details() and "'local-cpu'" in unknown_env.details()
        assert error_code(unknown_env) == "ENVIRONMENT_UNKNOWN"

        too_long = await refused(engine.submit(workflow("print(1)", max_duration_s=61), "too-long"))
        assert too_long.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "requested duration 61 s exceeds the environment's maximum of 60 s" in too_long.details()
        assert error_code(too_long) == "DURATION_TOO_LONG"

        bad_image = await refused(
            engine.submit(workflow("print(1)", image="mcr.microsoft.com/dotnet/runtime"), "bad-image")
        )
        assert bad_image.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unsupported image" in bad_image.details() and "supported images are" in bad_image.details()
        assert (error_code(bad_image), bad_request_fields(bad_image)) == (
            "CONTAINER_INVALID",
            ["workflow.container.image"],
        )

        bad_command = await refused(engine.submit(workflow("print(1)", entrypoint="ruby $ALGO"), "bad-command"))
        assert bad_command.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'ruby' is not available for image 'python'" in bad_command.details()
        assert bad_request_fields(bad_command) == ["workflow.container.entrypoint"]

        bad_id = await refused(engine.submit(workflow("print(1)"), "../../etc"))
        assert bad_id.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "letters, digits" in bad_id.details()
        assert bad_request_fields(bad_id) == ["job_id"]

        no_environment = await refused(engine.submit(workflow("print(1)"), "no-environment", environment_id=""))
        assert no_environment.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error_code(no_environment), bad_request_fields(no_environment)) == (
            "ENVIRONMENT_MISSING",
            ["environment_id"],
        )

        no_dataset = workflow("print(1)")
        del no_dataset.datasets[:]
        empty = await refused(engine.submit(no_dataset, "no-dataset"))
        assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "names no dataset" in empty.details()

        # Nothing of the refused jobs exists anywhere.
        assert not workspaces.exists() or not any(workspaces.iterdir())
        call = engine.changes()
        first = await call.read()
        call.cancel()
        assert first.HasField("heartbeat") and first.heartbeat.latest_sequence == 0
        for job_id in (
            "no-algo",
            "unknown-env",
            "too-long",
            "bad-image",
            "bad-command",
            "no-environment",
            "no-dataset",
        ):
            unknown = await refused(engine.stop(job_id))
            assert unknown.code() == grpc.StatusCode.NOT_FOUND


async def test_the_same_job_id_twice(data_dir, postgres_url, tmp_path):
    async with engine_running(postgres_url, tmp_path / "ws") as engine:
        job_id = await engine.submit(workflow("print(1)"))
        again = await engine.stub.SubmitJob(
            engine_pb2.SubmitJobRequest(job_id=job_id, environment_id="local-cpu", workflow=workflow("print(1)")),
            metadata=engine.metadata,
        )
        assert again.created is False  # a retried submit is a no-op

        different = await refused(engine.submit(workflow("print(2)"), job_id))
        assert different.code() == grpc.StatusCode.ALREADY_EXISTS
        assert f"job {job_id} already exists here with a different workflow" in different.details()
        end = await engine.ended(job_id)
        assert end.status == 70
        history = await engine.history(job_id)
        assert len([c for c in history if c.status == 10]) == 1  # it ran once


async def test_without_bubblewrap_algorithms_are_refused_unless_configured_unsandboxed(
    data_dir, postgres_url, tmp_path, monkeypatch
):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bwrap-here"))  # the engine looks bwrap up on PATH
    async with engine_running(postgres_url, tmp_path / "ws") as engine:
        assert "no sandbox (bwrap not found)" in (await engine.environment()).description
        no_sandbox = await refused(engine.submit(workflow("print(1)")))
        assert no_sandbox.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (
            "cannot sandbox algorithms" in no_sandbox.details() and "C2D_ENGINE_SANDBOX=false" in no_sandbox.details()
        )
        assert error_code(no_sandbox) == "SANDBOX_UNAVAILABLE"
    async with engine_running(postgres_url, tmp_path / "ws2", sandbox=False) as engine:
        environment = await engine.environment()
        assert not environment.sandboxed and "WITHOUT a sandbox" in environment.description
        # Unsandboxed there is no /data: the variables point into the workspace.
        job_id = await engine.submit(workflow("import os\nopen(os.environ['OUTPUTS'] + '/ran', 'w').write('yes')\n"))
        assert (await engine.ended(job_id)).status == 70
        assert (engine.data(job_id) / "outputs" / "ran").read_text() == "yes"


async def test_submit_jobs_answers_each_job_on_its_own(data_dir, postgres_url, tmp_path):
    async with engine_running(postgres_url, tmp_path / "ws") as engine:

        def job(job_id: str, wf, environment_id: str = "local-cpu") -> engine_pb2.SubmitJobRequest:  # type: ignore[no-untyped-def]
            return engine_pb2.SubmitJobRequest(job_id=job_id, environment_id=environment_id, workflow=wf)

        response = await engine.stub.SubmitJobs(
            engine_pb2.SubmitJobsRequest(
                jobs=[
                    job("good", workflow("print(1)")),
                    job("no-algo", workflow("print(1)", entrypoint="python3 main.py")),
                    job("../x", workflow("print(1)")),
                    job("gpu", workflow("print(1)"), environment_id="gpu-a100"),
                    job("good", workflow("print(1)")),  # the same job twice in one call
                ]
            ),
            metadata=engine.metadata,
        )
        answers = [(r.job_id, r.created, r.error_code) for r in response.results]
        assert answers == [
            ("good", True, ""),
            ("no-algo", False, "entrypoint_invalid"),
            ("../x", False, "job_id_invalid"),
            ("gpu", False, "environment_unknown"),
            ("good", False, ""),
        ]
        assert "$ALGO" in response.results[1].error_message
        assert (await engine.ended("good")).status == 70
        history = await engine.history("good")
        assert len([c for c in history if c.status == 10]) == 1  # it ran once

        empty = await refused(engine.stub.SubmitJobs(engine_pb2.SubmitJobsRequest(), metadata=engine.metadata))
        assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(empty) == "JOBS_MISSING"
        assert bad_request_fields(empty) == ["jobs"]
        flood = engine_pb2.SubmitJobsRequest(jobs=[job(f"j{i}", workflow("print(1)")) for i in range(1001)])
        too_many = await refused(engine.stub.SubmitJobs(flood, metadata=engine.metadata))
        assert (
            too_many.code() == grpc.StatusCode.INVALID_ARGUMENT
            and "at most 1000; split the batch" in too_many.details()
        )
        assert (error_code(too_many), bad_request_fields(too_many)) == ("TOO_MANY_JOBS", ["jobs"])
