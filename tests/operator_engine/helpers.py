"""Workspaces, adversarial algorithms and process-table checks for the sandbox tests."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.operator_engine.backends.local.sandbox import SandboxLimits, SandboxRun, SandboxSpec

PYTHON = "/usr/bin/python3"
ALGO = "/data/transformations/algorithm"
DATASET_DID = "0123abcd"


@dataclass(frozen=True)
class Job:
    job_id: str
    workspace: Path
    marker: str  # unique env value: finds the job's processes in the process table

    @property
    def outputs(self) -> Path:
        return self.workspace / "outputs"

    @property
    def log(self) -> Path:
        """Where the engine writes algorithm.log: outside the workspace (out of the algorithm's reach)."""
        return self.workspace.with_name(f"{self.job_id}-admin") / "algorithm.log"

    def report(self) -> dict:
        return json.loads((self.outputs / "report.json").read_text())

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "DIDS": json.dumps([DATASET_DID]),
            "TRANSFORMATION_DID": "algo0001",
            "VOLUME": "/data",
            "INPUTS": "/data/inputs",
            "OUTPUTS": "/data/outputs",
            "LOGS": "/data/logs",
            "C2D_TEST_MARKER": self.marker,
            **extra,
        }

    def spec(
        self, argv: tuple[str, ...] = (PYTHON, ALGO), *, limits: SandboxLimits | None = None, **kwargs
    ) -> SandboxSpec:
        return SandboxSpec(
            job_id=self.job_id,
            workspace=self.workspace,
            argv=argv,
            env=kwargs.pop("env", None) or self.env(),
            limits=limits or SandboxLimits(wall_timeout_s=20),
            log_path=kwargs.pop("log_path", self.log),
            **kwargs,
        )


def make_job(root: Path, algorithm: str) -> Job:
    """A /data layout as pod_config leaves it, with `algorithm` as transformations/algorithm."""
    job_id = f"test-{uuid.uuid4().hex[:12]}"
    ws = root / job_id
    for d in ("inputs", "transformations", "ddos", "outputs", "logs"):
        (ws / d).mkdir(parents=True)
    (ws / "inputs" / DATASET_DID).mkdir()
    (ws / "inputs" / DATASET_DID / "0").write_text("the dataset\n")
    (ws / "ddos" / DATASET_DID).write_text("{}")
    (ws / "transformations" / "algorithm").write_text(algorithm)
    return Job(job_id, ws, uuid.uuid4().hex)


async def engines_that_die(script: str, jobs: list[Job], delays: list[float]) -> list[int]:
    """Runs `script` (an engine that starts the job's run, then dies at a point the delay
    chooses) once per job, as `python -c script REPO job_id workspace env delay python algo`;
    the dead engines' pids, once each has exited 0."""
    repo = str(Path(__file__).resolve().parents[2])
    engines = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            repo,
            job.job_id,
            str(job.workspace),
            json.dumps(job.env()),
            str(delay),
            PYTHON,
            ALGO,
        )
        for job, delay in zip(jobs, delays, strict=True)
    ]
    assert [await e.wait() for e in engines] == [0] * len(engines)
    return [e.pid for e in engines]


def processes_of(job: Job, *, algorithm_only: bool = False) -> list[int]:
    """Live processes of the job: the marker in their environment (the algorithm and its
    children) or, unless algorithm_only, the workspace in their command line (the sandbox's
    own bwrap and watcher processes). Zombies have neither."""
    marker, workspace = job.marker.encode(), str(job.workspace).encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if marker in environ or (workspace in cmdline and not algorithm_only):
            found.append(int(name))
    return found


# Every Python algorithm below starts with this: report(**kw) merges into outputs/report.json.
REPORT = """
import json, os
def report(**kw):
    path = "/data/outputs/report.json" if os.path.isdir("/data/outputs") else os.environ["OUTPUTS"] + "/report.json"
    try:
        data = json.load(open(path))
    except FileNotFoundError:
        data = {}
    data.update(kw)
    with open(path, "w") as f:
        json.dump(data, f)
"""


def py(body: str) -> str:
    """A Python algorithm: the report() helper, then the body."""
    return REPORT + textwrap.dedent(body)


def sh(body: str) -> str:
    return textwrap.dedent(body).lstrip()


async def run_to_end(job: Job, **kwargs):  # type: ignore[no-untyped-def]
    """Runs `job`'s algorithm in the sandbox: the run and its outcome."""
    run = await SandboxRun.start(job.spec(**kwargs))
    return run, await run.wait()


async def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
