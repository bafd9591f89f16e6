"""A backend whose stages all succeed at once, with empty results.

For benchmarks and tests of the control plane: it exercises the orchestrator,
the event log and the state stream with no process or file in the way.
"""

from __future__ import annotations

from collections.abc import Callable

from services.operator_engine.backends.base import AlgorithmResult, Capacity, JobSpec, StageExit


class NoopBackend:
    name = "noop"
    sandboxed = False

    def __init__(self, on_configured: Callable[[str], object], on_published: Callable[[str], object]) -> None:
        # The orchestrator's callbacks stand in for the pods' reports.
        self._on_configured = on_configured
        self._on_published = on_published

    def describe(self) -> str:
        return "no-op backend: every stage succeeds at once (benchmarks and tests only)"

    def validate(self, entrypoint: str, image: str) -> None:
        return None

    def reclaim(self, job: JobSpec) -> None:
        return None

    async def configure(self, job: JobSpec, timeout_s: float) -> StageExit:
        await self._on_configured(job.job_id)  # type: ignore[misc]
        return StageExit(0)

    async def algorithm(self, job: JobSpec, capacity: Capacity) -> AlgorithmResult:
        return AlgorithmResult(exit_code=0, description="exit code 0")

    async def publish(self, job: JobSpec, timeout_s: float) -> StageExit:
        await self._on_published(job.job_id)  # type: ignore[misc]
        return StageExit(0)

    async def remove(self, job: JobSpec) -> None:
        return None

    async def close(self) -> None:
        return None
