"""The pod_config program as the engine runs it (a real child process talking to
the real JobAgentService): workflows that try to escape the workspace are refused."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import uuid
from pathlib import Path

import grpc

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import engine_pb2, engine_pb2_grpc
from cli import demo
from plumbing import auth
from plumbing.storage import StorageConfig, open_store
from services.operator_engine import server as engine_server
from testkit.servers import SeaweedFS
from testkit.stacks import settings_for
from tests.pod_config.helpers import ALGO_DID, DATASET_DID, ddo

DEADLINE_S = 120
TERMINAL = {31, 32, 42, 70}


def _asset(did: str, url: str) -> common_pb2.WorkflowAsset:
    return common_pb2.WorkflowAsset(did=did, files=[common_pb2.FileLocation(type="url", url=url)], ddo_json=ddo(did))


async def _run_jobs(workflows: dict[str, common_pb2.Workflow]) -> dict[str, engine_pb2.StateChange]:
    """Submits each workflow to a real engine and returns each job's final state change."""
    engine = await engine_server.start(settings_for()[2])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{engine.port}") as channel:
            stub = engine_pb2_grpc.EngineServiceStub(channel)
            token = auth.bearer(auth.service_token())
            for job_id, workflow in workflows.items():
                request = engine_pb2.SubmitJobRequest(job_id=job_id, environment_id="local-cpu", workflow=workflow)
                await stub.SubmitJob(request, metadata=token)
            ended: dict[str, engine_pb2.StateChange] = {}

            async def follow() -> None:
                async for message in stub.StreamStateChanges(engine_pb2.StreamStateChangesRequest(), metadata=token):
                    for change in message.changes.changes:
                        if change.job_id in workflows and change.status in TERMINAL:
                            ended[change.job_id] = change
                    if len(ended) == len(workflows):
                        return

            await asyncio.wait_for(follow(), DEADLINE_S)
            return ended
    finally:
        await engine.stop(1)


def _workflow(dataset: common_pb2.WorkflowAsset, algorithm: common_pb2.WorkflowAsset) -> common_pb2.Workflow:
    container = common_pb2.AlgorithmContainer(entrypoint="python3 $ALGO", image="python", tag="3.11")
    return common_pb2.Workflow(datasets=[dataset], algorithm=algorithm, container=container)


async def test_dids_with_dot_dot_are_refused_and_nothing_escapes(data_dir: str) -> None:
    http_server, base = demo.serve_files({"/d": b"data", "/a": b"print(1)\n"})
    jobs = {f"trav-{uuid.uuid4().hex[:8]}-{i}": None for i in range(3)}
    data_job, algo_job, absolute_job = jobs
    workflows = {
        # inputs/<DID> would be workspaces/escaped-data, next to the job's own workspace
        data_job: _workflow(_asset("did:op:../../../escaped-data", f"{base}/d"), _asset(ALGO_DID, f"{base}/a")),
        # transformations' DDO under ddos/<DID> would be the job's workspace root
        algo_job: _workflow(_asset(DATASET_DID, f"{base}/d"), _asset("did:op:../../escaped-algo", f"{base}/a")),
        absolute_job: _workflow(_asset(f"did:op:{data_dir}/escaped-abs", f"{base}/d"), _asset(ALGO_DID, f"{base}/a")),
    }
    try:
        ended = await _run_jobs(workflows)
    finally:
        http_server.shutdown()

    data_end, algo_end, abs_end = ended[data_job], ended[algo_job], ended[absolute_job]
    assert (data_end.status, data_end.error_code) == (31, "path_traversal")
    assert data_end.error_message == (
        "data provisioning failed: the dataset DID 'did:op:../../../escaped-data' would escape the workspace"
    )
    assert (algo_end.status, algo_end.error_code) == (32, "path_traversal")
    assert algo_end.error_message == (
        "algorithm provisioning failed: the algorithm DID 'did:op:../../escaped-algo' would escape the workspace"
    )
    assert (abs_end.status, abs_end.error_code) == (31, "path_traversal")

    workspaces = Path(data_dir) / "workspaces"
    escaped = [p for p in Path(data_dir).rglob("escaped-*")]
    assert escaped == []
    for job_id in jobs:
        data = workspaces / job_id / "data"
        # refused while planning, before a directory was made or a byte fetched
        assert list(data.iterdir()) == []


COPY_INPUT = """\
import json, os, shutil
did = json.loads(os.environ["DIDS"])[0]
shutil.copy(os.path.join(os.environ["INPUTS"], did, "0"), os.path.join(os.environ["OUTPUTS"], "copy.bin"))
"""


async def test_s3_and_ipfs_sources_through_the_engines_storage_settings(
    data_dir: str, seaweedfs: SeaweedFS, ipfs_rpc: str, monkeypatch, tmp_path: Path
) -> None:
    bucket = seaweedfs.make_bucket("prog")
    body = os.urandom(300_000)
    seaweedfs.client().put_object(bucket, "inputs/data.bin", io.BytesIO(body), len(body))
    upload = tmp_path / "data.bin"
    upload.write_bytes(body)
    cid = open_store(StorageConfig(kind="ipfs", ipfs_api=ipfs_rpc)).put_file("data.bin", upload).location
    # What an operator sets for the engine; the engine hands C2D_STORAGE_* to its pods.
    for name, value in {
        "S3_ENDPOINT": seaweedfs.endpoint,
        "S3_ACCESS_KEY": seaweedfs.access_key,
        "S3_SECRET_KEY": seaweedfs.secret_key,
        "S3_REGION": "us-east-1",
        "IPFS_API": ipfs_rpc,
    }.items():
        monkeypatch.setenv(f"C2D_STORAGE_{name}", value)

    def raw_job(source: common_pb2.FileLocation) -> common_pb2.Workflow:
        container = common_pb2.AlgorithmContainer(entrypoint="python3 $ALGO", image="python", tag="3.11")
        dataset = common_pb2.WorkflowAsset(did=DATASET_DID, files=[source], ddo_json=ddo(DATASET_DID))
        return common_pb2.Workflow(datasets=[dataset], raw_algorithm=COPY_INPUT, container=container)

    sha = hashlib.sha256(body).hexdigest()
    from_s3, from_ipfs, missing = (f"src-{uuid.uuid4().hex[:8]}-{i}" for i in range(3))
    ended = await _run_jobs(
        {
            from_s3: raw_job(common_pb2.FileLocation(type="s3", url=f"s3://{bucket}/inputs/data.bin", checksum=sha)),
            from_ipfs: raw_job(common_pb2.FileLocation(type="ipfs", cid=cid, checksum=sha)),
            missing: raw_job(common_pb2.FileLocation(type="s3", url=f"s3://{bucket}/inputs/nothing-here.bin")),
        }
    )

    for job_id in (from_s3, from_ipfs):
        assert (ended[job_id].status, ended[job_id].error_message) == (70, "")
        # the algorithm read the staged file: its copy is the published result
        copy = next(f for f in ended[job_id].results.files if f.path == "copy.bin")
        assert (copy.size, copy.sha256) == (len(body), sha)
    assert (ended[missing].status, ended[missing].error_message) == (
        31,
        f"data provisioning failed: dataset {DATASET_DID} file 0: the S3 object does not exist",
    )
    log = (Path(data_dir) / "workspaces" / missing / "admin" / "configure.log").read_text()
    assert "nothing-here" not in log and bucket not in log
