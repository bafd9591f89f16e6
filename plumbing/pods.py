"""How a pod program (pod_config, pod_publish) starts, and how it talks to the engine.

A pod learns its job from its environment and talks to the engine's
JobAgentService over one channel (`JobAgent`: the calls both pods make). Run
as `python -m services.pod_...` it opens that channel itself; forked by the
local backend's launcher (services/operator_engine/backends/local/pod_launcher.py)
it may be handed a channel its process connected while it waited for a job,
so the connection is not on the job's clock.

A pod's log lines carry its job id, and it joins its job's trace: the engine
hands it the job's W3C trace context in TRACEPARENT (the OpenTelemetry
convention for a process's environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import job_agent_pb2, job_agent_pb2_grpc
from plumbing import auth, logs, tracing


@dataclass(frozen=True)
class Pod:
    job_id: str
    token: str
    agent_address: str
    data_root: Path
    trace_parent: str = ""  # the job's trace context (W3C traceparent), when it has one
    admin_dir: Path | None = None  # the engine's side of the job (algorithm.log), out of the algorithm's reach

    @classmethod
    def from_environment(cls) -> Pod:
        env = os.environ
        return cls(
            env["C2D_JOB_ID"],
            _token(env),
            env["C2D_AGENT_ADDRESS"],
            Path(env["C2D_DATA_ROOT"]),
            env.get("TRACEPARENT", ""),
            Path(env["C2D_ADMIN_DIR"]) if env.get("C2D_ADMIN_DIR") else None,
        )


# The token file a Kubernetes pod reads its token from (a Secret volume): never
# an environment variable there, which `kubectl describe` and /proc/*/environ show.
MAX_TOKEN_BYTES = 4096


def _token(env: os._Environ[str]) -> str:
    path = env.get("C2D_JOB_TOKEN_FILE")
    if path is None:
        return env["C2D_JOB_TOKEN"]
    with open(path, "rb") as f:
        return f.read(MAX_TOKEN_BYTES).decode().strip()


# A pod program: does the job's stage over the agent channel; its exit code.
Program = Callable[[Pod, Any], Awaitable[int]]


class JobAgent:
    """The pod's calls to the engine's JobAgentService, each for its job and with its token."""

    def __init__(self, pod: Pod, channel: Any) -> None:
        self._stub = job_agent_pb2_grpc.JobAgentServiceStub(channel)
        self._job_id = pod.job_id
        self._metadata = auth.bearer(pod.token)

    async def workflow(self) -> job_agent_pb2.GetWorkflowResponse:
        """The job's workflow and the environment it runs in."""
        request = job_agent_pb2.GetWorkflowRequest(job_id=self._job_id)
        return await self._stub.GetWorkflow(request, metadata=self._metadata)

    async def report_progress(
        self, status: int, error_code: str = "", message: str = "", staged_bytes: int = 0
    ) -> None:
        """The stage's status (an Ocean number), and why when it failed;
        with pod_config's success, the bytes it staged."""
        request = job_agent_pb2.ReportProgressRequest(
            job_id=self._job_id,
            status=common_pb2.JobStatus.ValueType(status),
            error_code=error_code,
            message=message,
            staged_bytes=staged_bytes,
        )
        await self._stub.ReportProgress(request, metadata=self._metadata)

    async def report_results(self, results: common_pb2.ResultsManifest, results_did: str = "") -> None:
        """The published results' manifest, and the results asset's DID when one was registered."""
        request = job_agent_pb2.ReportResultsRequest(job_id=self._job_id, results=results, results_did=results_did)
        await self._stub.ReportResults(request, metadata=self._metadata)

    async def fetch_algorithm_log(self, path: Path) -> int:
        """The algorithm's log as the engine holds it, written to `path` (replacing whatever
        is there, never through a link the algorithm left); the bytes written."""
        request = job_agent_pb2.GetAlgorithmLogRequest(job_id=self._job_id)
        written = 0
        with await asyncio.to_thread(_fresh_file, path) as f:
            async for chunk in self._stub.GetAlgorithmLog(request, metadata=self._metadata):
                f.write(chunk.data)
                written += len(chunk.data)
        return written


def _fresh_file(path: Path) -> BinaryIO:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # whatever the algorithm left under that name, a link included
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb")


def channel_key() -> tuple[str, ...]:
    """What the agent channel depends on: a channel made under another key is not this pod's."""
    return (os.environ.get("C2D_AGENT_ADDRESS", ""), *(os.environ.get(name, "") for name in auth.TLS_VARIABLES))


async def run(name: str, program: Program, channel: Any = None) -> int:
    """Runs the program for the job in the environment; 2 if the environment lacks it."""
    try:
        pod = Pod.from_environment()
    except KeyError as missing:
        print(f"{name}: environment variable {missing} is required", file=sys.stderr)
        return 2
    logs.bind(job_id=pod.job_id)
    try:
        with tracing.joined(pod.trace_parent), tracing.tracer.start_as_current_span(name):
            if channel is not None:
                return await program(pod, channel)
            async with auth.internal_channel(pod.agent_address) as fresh:
                return await program(pod, fresh)
    finally:
        tracing.flush()  # the process ends right after: its spans go now or never


def configure_logging(name: str) -> None:
    """The pod's logging (JSON in its admin log file, unless C2D_LOG_FORMAT
    says otherwise) and tracing; `name` is the component on its lines. Not
    plumbing.server's: a pod image has no Prometheus client."""
    logs.configure(name)
    tracing.configure(f"c2d-{name}")


def main(name: str, program: Program) -> None:
    """`python -m services.<name>`."""
    configure_logging(name)
    sys.exit(asyncio.run(run(name, program)))
