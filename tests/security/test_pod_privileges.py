"""The pod stages run as an unprivileged uid, for good (issue 13): a mistake in what
pod_config or pod_publish parses reads nothing secret.

Attacked as an attacker would: code in a pod's place (tests/security/pod_probe.py stands in
for a parsing bug a hostile dataset or DDO exploits) reports what it is and tries the
service token, the engine's database, the provider's keys, another job's workspace and
another job's results, by path, from its working directory and through its results
descriptor; and a stalled pod's /proc/<pid>/status is read from outside. The job still
runs end to end, its results published to local storage and to S3."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path

import grpc
import pytest

from c2d.engine.v1 import job_agent_pb2_grpc
from plumbing import job_files, settings
from services.operator_engine import server
from services.operator_engine.backends.local import pod_launcher, sandbox
from services.operator_engine.backends.local.pod_launcher import ForkServerLauncher, PodAccess, SubprocessLauncher
from testkit.jobs import job_bench, s3_env
from tests.operator_engine.engine_harness import WAIT_S, wait_until
from tests.security import pod_probe

ALGORITHM = 'open(__import__("os").environ["OUTPUTS"] + "/result.txt", "w").write("secret of job A")'
DROPPED_CAPS = "0000000000000000"


class _HangingAgent(job_agent_pb2_grpc.JobAgentServiceServicer):
    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def GetWorkflow(self, request, context):  # type: ignore[no-untyped-def]
        self.called.set()
        await asyncio.Event().wait()


def _status(pid: int) -> dict[str, list[str]]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.split() for k, v in (line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)}


def assert_unprivileged(status: dict[str, list[str]], uid: int) -> None:
    assert status["Uid"] == [str(uid)] * 4, status["Uid"]  # real, effective, saved, fs
    assert status["Gid"] == [str(uid)] * 4, status["Gid"]
    assert status["Groups"] == []
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[caps] == [DROPPED_CAPS], (caps, status[caps])
    assert status["NoNewPrivs"] == ["1"]


@pytest.mark.parametrize("launcher_kind", ["forkserver", "subprocess"])
async def test_a_running_pod_is_not_root_in_any_thread(tmp_path, launcher_kind):
    assert os.geteuid() == 0 and sandbox._drops_privileges(), "this attack needs a root engine"
    uid = sandbox.host_uid("job-1")
    workspace = tmp_path / "workspace"
    (workspace / "data").mkdir(parents=True)
    launcher = ForkServerLauncher() if launcher_kind == "forkserver" else SubprocessLauncher()
    agent = _HangingAgent()
    grpc_server = grpc.aio.server()
    job_agent_pb2_grpc.add_JobAgentServiceServicer_to_server(agent, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    if True:
        try:
            env = {
                "C2D_JOB_ID": "job-1",
                "C2D_JOB_TOKEN": "t",
                "C2D_AGENT_ADDRESS": f"127.0.0.1:{port}",
                "C2D_DATA_ROOT": "data",
                "PATH": "/usr/bin",
            }
            pod = await launcher.start("pod_publish", env, tmp_path / "publish.log", PodAccess(uid, workspace))
            # it asked for its workflow, which never comes: its process is what it is now
            await asyncio.wait_for(agent.called.wait(), WAIT_S)
            pid = pod.pid if isinstance(pod, pod_launcher._Forked) else pod._process.pid  # type: ignore[attr-defined]
            for task in os.listdir(f"/proc/{pid}/task"):  # gRPC's threads too
                assert_unprivileged(_status(int(task)), uid)
            assert os.readlink(f"/proc/{pid}/cwd") == str(workspace)
            await asyncio.wait_for(pod.kill(), WAIT_S)
        finally:
            await launcher.close()
            await grpc_server.stop(None)
    # the job's token reached the pod without staying on disk
    assert not list(tmp_path.glob("*.token"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _admin_logs(job_id: str) -> str:
    admin = settings.data_dir() / "workspaces" / job_id / "admin"
    return "\n".join(f"{log.name}: {log.read_text()}" for log in sorted(admin.glob("*.log")))


def _probes(log: Path) -> list[dict]:
    return [
        json.loads(line.split(pod_probe.MARK, 1)[1]) for line in log.read_text().splitlines() if pod_probe.MARK in line
    ]


@pytest.mark.parametrize(
    ("launcher_kind", "storage"), [("forkserver", "local"), ("subprocess", "local"), ("forkserver", "s3")]
)
async def test_a_pod_reads_nothing_of_the_engine_or_of_other_jobs(
    data_dir, monkeypatch, seaweedfs, launcher_kind, storage
):
    if storage == "s3":
        s3_env(monkeypatch, seaweedfs, seaweedfs.make_bucket(f"pods-{launcher_kind}"))
    # The engine's own secret in its environment: its pods' memory must not hold it either.
    secret = pod_probe.SECRET_PREFIX + os.urandom(8).hex().encode()
    monkeypatch.setenv("C2D_SERVICE_TOKEN", secret.decode())
    targets_dir = Path(tempfile.mkdtemp(prefix="c2d-probe-"))
    targets_dir.chmod(0o755)
    targets = targets_dir / "targets.json"
    targets.write_text("{}")
    targets.chmod(0o644)
    monkeypatch.setenv(pod_probe.TARGETS, str(targets))
    monkeypatch.setattr(server, "POD_ENV_PREFIXES", (*server.POD_ENV_PREFIXES, "C2D_PROBE_"))
    probes = {
        name: metadata.EntryPoint(name, f"tests.security.pod_probe:{function}", pod_launcher.POD_PROGRAMS)
        for name, function in (("pod_config", "configure"), ("pod_publish", "publish"))
    }
    monkeypatch.setattr(pod_launcher, "programs", lambda: probes)
    try:
        async with job_bench(pod_launcher=launcher_kind) as bench:
            first = await bench.run(ALGORITHM)
            assert first.status == 70, _admin_logs(first.job_id)
            data = settings.data_dir()
            paths = {
                "engine-db": data / "engine.db",
                "provider-keys": data / "provider-keys.json",
                "other-workspace": data / "workspaces" / first.job_id / "data",
                "other-output": data / "workspaces" / first.job_id / "data" / "outputs" / "result.txt",
                "other-configure-log": data / "workspaces" / first.job_id / "admin" / "configure.log",
            }
            if storage == "local":
                paths["other-results"] = data / "results" / first.job_id / "outputs" / "result.txt"
                paths["other-results-dir"] = data / "results" / first.job_id
            missing = [name for name, path in paths.items() if not path.exists()]
            assert not missing, f"nothing to steal at {missing}"
            targets.write_text(
                json.dumps({**{name: str(path) for name, path in paths.items()}, "secret-sha256": sha256(secret)})
            )

            second = await bench.run(ALGORITHM)
            assert second.status == 70, _admin_logs(second.job_id)
            assert second.results.storage == storage
            files = {f.path: f for f in second.results.files}
            _, data_bytes = await bench.consumer.result(second.job_id, files["result.txt"].index)
            assert data_bytes == b"secret of job A"  # its own, published

            admin = data / "workspaces" / second.job_id / "admin"
            uid = sandbox.host_uid(second.job_id)
            for stage in ("configure", "publish"):
                (found,) = _probes(admin / f"{stage}.log")
                for thread in found["threads"]:
                    assert_unprivileged(thread, uid)
                assert found["reached"], stage
                read = {name: how for name, how in found["reached"].items() if how == "READ"}
                assert not read, (stage, found["reached"])
                assert set(found["reached"].values()) == {"PermissionError"}, (stage, found["reached"])
                assert found["environ"] != "READ"  # a pod's /proc is closed even to itself (not dumpable)
                assert found["service_token_in_memory"] is False, stage
            # what the pod's uid was lent is taken back as the pod ends (after it reported):
            # its results are root's again, open to the unprivileged reader that serves them
            if storage == "local":
                mine = data / "results" / second.job_id
                await wait_until(lambda: mine.stat().st_uid == 0, what="the results directory was taken back")
                assert mine.stat().st_mode & 0o777 == 0o750  # the rest: the results' reader
                assert mine.stat().st_gid == job_files.READER_ID
            assert not list(admin.glob("*.token"))
    finally:
        targets.unlink()
        targets_dir.rmdir()
