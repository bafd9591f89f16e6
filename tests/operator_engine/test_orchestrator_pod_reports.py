"""A pod stage ends when its pod reports how it ended, not when the pod's
process has finished exiting: the job moves on while the pod ends, and a pod
still ending when the engine closes is stopped with it."""

from __future__ import annotations

import asyncio

from plumbing.statuses import Status
from services.operator_engine.backends.noop import NoopBackend
from services.operator_engine.domain.jobs import StageExit
from tests.operator_engine.orchestrator_harness import WORKFLOW, orchestrator_on, reached, spec


class LingeringPods(NoopBackend):
    """Pods that report, then take as long as they are let to exit."""

    def __init__(self) -> None:
        super().__init__()
        self.exit_now = asyncio.Event()
        self.still_ending: set[str] = set()
        self.cancelled: list[str] = []

    async def _linger(self, stage: str) -> StageExit:
        self.still_ending.add(stage)
        try:
            await self.exit_now.wait()
        except asyncio.CancelledError:
            self.cancelled.append(stage)
            raise
        finally:
            self.still_ending.discard(stage)
        return StageExit(0)

    async def run_pod(self, stage, job):  # type: ignore[no-untyped-def]
        await super().run_pod(stage, job)
        return await self._linger(stage.name)


async def test_a_job_moves_on_when_its_pods_report_and_ending_pods_stop_with_the_engine(tmp_path):
    async with orchestrator_on(tmp_path, LingeringPods) as (orchestrator, _, backend):
        assert await orchestrator.submit(spec("quick"), WORKFLOW)
        await reached(orchestrator, "quick", Status.FINISHED)
        # Finished with both pods still ending: nothing waited for their exits.
        assert backend.still_ending == {"configure", "publish"}
    assert sorted(backend.cancelled) == ["configure", "publish"]
