"""A backend whose stages all succeed at once, with empty results.

For benchmarks and tests of the control plane: it exercises the orchestrator,
the event log and the state stream with no process or file in the way.
"""

from __future__ import annotations

from pathlib import Path

from services.operator_engine.domain.jobs import Capacity, JobSpec, StageExit
from services.operator_engine.domain.orchestrator import Orchestrator
from services.operator_engine.domain.stages import Stage


class NoopBackend:
    name = "noop"
    sandboxed = False

    def __init__(self) -> None:
        # Its "pods" report to the orchestrator as real ones do, with the job's token.
        self.agent: Orchestrator | None = None  # set by the wiring, once the orchestrator exists

    def describe(self) -> str:
        return "no-op backend: every stage succeeds at once (benchmarks and tests only)"

    def validate(self, entrypoint: str, image: str, allow_network: bool, tag: str = "", checksum: str = "") -> None:
        return None

    def detach(self) -> None:
        pass

    async def abandon(self, job: JobSpec) -> None:
        pass

    def reclaim(self, job: JobSpec) -> None:
        return None

    def outlived_restart(self, job: JobSpec, stage: Stage) -> bool:
        return False  # its processes die with the engine

    async def prepare(self, job: JobSpec) -> None:
        return None  # no stage writes anything

    async def run_pod(self, stage: Stage, job: JobSpec) -> StageExit:
        """The pod reports its stage's success at once: its status, or empty results."""
        agent = self._agent()
        run = agent.authorize_pod(job.job_id, job.token)
        if stage.succeeded is not None:
            await agent.report_progress(run, stage.succeeded, "", "")
        if stage.reports_results:
            agent.record_results(run, {"storage": "none"}, "")
        return StageExit(0)

    async def run_algorithm(self, job: JobSpec, capacity: Capacity) -> StageExit:
        return StageExit(0, detail="exit code 0")

    def release(self, job: JobSpec) -> None:
        return None  # nothing outlives its stage here

    async def remove(self, job_id: str, workspace: Path) -> None:
        return None

    async def close(self) -> None:
        return None

    def _agent(self) -> Orchestrator:
        if self.agent is None:
            raise RuntimeError("NoopBackend.agent is not set: the wiring attaches the orchestrator")
        return self.agent
