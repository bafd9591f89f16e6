"""Internal calls: calls to the operator-service, the engine and the job agent from outside.

The attack: anyone who reaches an internal port calls the operator-service
(GetJob shows every consumer's jobs and their result locations; CreateJob
runs work for nobody's payment), the engine (SubmitJob) or the engine's job
agent (GetWorkflow hands out a job's decrypted file locations and headers;
ReportResults records a job's results), without the service credential, with
a wrong one, or with a certificate of another CA; or a pod uses its own
job's token for another job, or the service token where only a job's token
opens.

The guarantee: the operator-service and the engine answer only the service
token, or with C2D_TLS_* configured only a client certificate of the
configured CA over TLS; the job agent answers a job's own token for that job
only, while it runs.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import engine_pb2, engine_pb2_grpc, job_agent_pb2
from c2d.operator.v1 import operator_pb2, operator_pb2_grpc
from plumbing import auth
from plumbing.grpc_errors import error_code
from testkit.control_plane import Operator, control_plane, query, wait_finished
from testkit.market import refused
from testkit.stacks import running_stack
from tests.operator_engine.engine_harness import engine_running, wait_until
from tests.operator_engine.orchestrator_harness import HeldPods, job_agent_on, orchestrator_on, spec

UNKNOWN = str(uuid.uuid4())


def issue(directory: Path, name: str, ca: str | None = None) -> tuple[Path, Path]:
    """A P-256 key and certificate for 127.0.0.1, signed by `ca` (else self-signed)."""
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key)]
    if ca is None:
        subprocess.run(
            ["openssl", "req", "-x509", *curve, "-out", str(cert), "-days", "1", "-subj", f"/CN={name}"],
            check=True,
            capture_output=True,
        )
        return key, cert
    request = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    subprocess.run(
        ["openssl", "req", *curve, "-out", str(request), "-subj", f"/CN={name}"], check=True, capture_output=True
    )
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(request),
            "-CA",
            str(directory / f"{ca}.pem"),
            "-CAkey",
            str(directory / f"{ca}.key"),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            "1",
            "-extfile",
            str(extensions),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


@pytest.fixture
def certificates(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    issue(tmp_path, "ca")
    key, cert = issue(tmp_path, "internal", ca="ca")
    issue(tmp_path, "other-ca")
    issue(tmp_path, "stranger", ca="other-ca")
    monkeypatch.setenv("C2D_TLS_CERT", str(cert))
    monkeypatch.setenv("C2D_TLS_KEY", str(key))
    monkeypatch.setenv("C2D_TLS_CA", str(tmp_path / "ca.pem"))
    return tmp_path


async def list_environments(channel: grpc.aio.Channel) -> None:
    stub = operator_pb2_grpc.OperatorServiceStub(channel)
    await stub.ListEnvironments(operator_pb2.ListEnvironmentsRequest(), timeout=5)


async def test_internal_services_speak_mutual_tls_and_refuse_everyone_else(data_dir, postgres_url, certificates):
    async with control_plane(postgres_url) as plane:  # every internal hop over mutual TLS
        job = await plane.operator.create()
        await wait_finished(plane.operator, [job.job_id])
        address = f"127.0.0.1:{plane.operator.port}"

        # The certificate is the credential: no token needed.
        async with auth.internal_channel(address) as channel:
            await list_environments(channel)

        ca = (certificates / "ca.pem").read_bytes()
        refused = {
            "plaintext": grpc.aio.insecure_channel(address),
            "no client certificate": grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca)),
            "a certificate of another CA": grpc.aio.secure_channel(
                address,
                grpc.ssl_channel_credentials(
                    ca, (certificates / "stranger.key").read_bytes(), (certificates / "stranger.pem").read_bytes()
                ),
            ),
        }
        for what, channel in refused.items():
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await list_environments(channel)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, what


def test_a_partial_tls_configuration_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("C2D_TLS_CERT", str(tmp_path / "internal.pem"))
    monkeypatch.delenv("C2D_TLS_KEY", raising=False)
    monkeypatch.delenv("C2D_TLS_CA", raising=False)
    with pytest.raises(ValueError, match="C2D_TLS_KEY, C2D_TLS_CA not set"):
        auth.mutual_tls()
    monkeypatch.setenv("C2D_TLS_KEY", str(tmp_path / "missing.key"))
    monkeypatch.setenv("C2D_TLS_CA", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="C2D_TLS_CERT=.*cannot read it"):
        auth.mutual_tls()


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_the_operator_service_refuses_calls_without_the_service_credential(data_dir, token):
    async with control_plane("") as plane:
        intruder = Operator(plane.operator.port, token="")
        if token:
            intruder.metadata = (("authorization", f"Bearer {token}"),)
        else:
            intruder.metadata = ()
        try:
            for call in (
                intruder.create(),
                intruder.get(UNKNOWN),
                intruder.environments(),
                intruder.watch([UNKNOWN]),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await call
                assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "C2D_SERVICE_TOKEN" in raised.value.details()
        finally:
            await intruder.close()
        assert query(f"sqlite:///{data_dir}/operator.db", "SELECT count(*) FROM jobs") == [(0,)]


async def test_the_engine_refuses_calls_without_the_service_token(data_dir, postgres_url, tmp_path):
    async with engine_running(postgres_url, tmp_path / "ws") as engine:
        stub = engine_pb2_grpc.EngineServiceStub(engine.channel)
        anonymous = await refused(stub.SubmitJob(engine_pb2.SubmitJobRequest(job_id="x", environment_id="local-cpu")))
        assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_running_stacks_operator_service_refuses_get_job_without_the_service_token(data_dir):
    async for stack in running_stack():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.operator.port}") as channel:
            stub = operator_pb2_grpc.OperatorServiceStub(channel)
            anonymous = await refused(stub.GetJob(operator_pb2.GetJobRequest(job_id="x")))
            assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED


# -- the job agent: a pod's own token, for its own job -------------------------------


async def drained(stream: Any) -> None:
    """A server stream read to its end (or its error)."""
    async for _ in stream:
        pass


async def test_a_pods_token_opens_its_own_job_only_and_the_service_token_opens_no_job(data_dir, tmp_path):
    """Job a's pod asks for job b's workflow (its decrypted file locations and
    headers) and reports for it; the operator's service token asks too."""
    workflow = common_pb2.Workflow(
        datasets=[
            common_pb2.WorkflowAsset(
                did="did:op:b",
                files=[common_pb2.FileLocation(type="url", url="https://files.example/b", headers={"X-Key": "secret"})],
            )
        ],
        raw_algorithm="print(1)",
    ).SerializeToString()
    async with orchestrator_on(tmp_path, HeldPods) as (orchestrator, _, pods), job_agent_on(orchestrator) as agent:
        for job_id in ("a", "b"):
            assert await orchestrator.submit(spec(job_id), workflow)
        await pods.reached("configure")
        await wait_until(lambda: {"a", "b"} <= set(pods.tokens), what="both jobs' pods holding their tokens")
        own, other = pods.tokens["a"], pods.tokens["b"]
        assert own != other

        for token in (own, auth.service_token()):
            as_b = auth.bearer(token)
            for call in (
                agent.GetWorkflow(job_agent_pb2.GetWorkflowRequest(job_id="b"), metadata=as_b),
                agent.ReportProgress(job_agent_pb2.ReportProgressRequest(job_id="b", status=30), metadata=as_b),
                agent.ReportResults(
                    job_agent_pb2.ReportResultsRequest(job_id="b", results=common_pb2.ResultsManifest()), metadata=as_b
                ),
                drained(agent.GetAlgorithmLog(job_agent_pb2.GetAlgorithmLogRequest(job_id="b"), metadata=as_b)),
            ):
                error = await refused(call)
                assert (error.code(), error_code(error)) == (grpc.StatusCode.PERMISSION_DENIED, "JOB_TOKEN_INVALID")
                assert "secret" not in error.details()
        # b's own token still opens b: the refusals above were about the token
        answer = await agent.GetWorkflow(job_agent_pb2.GetWorkflowRequest(job_id="b"), metadata=auth.bearer(other))
        assert answer.workflow.datasets[0].files[0].headers["X-Key"] == "secret"
