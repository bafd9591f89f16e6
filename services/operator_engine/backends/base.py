"""The backend interface the stage orchestrator drives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class JobSpec:
    """What the engine itself needs from a job's workflow."""

    job_id: str
    environment_id: str
    token: str
    workspace: Path  # holds data/ (the job's /data) and admin/ (operator logs)
    entrypoint: str
    image: str
    allow_network: bool
    algorithm_timeout_s: float
    dataset_dids: tuple[str, ...]
    algorithm_did: str

    @property
    def data_root(self) -> Path:
        return self.workspace / "data"

    @property
    def admin_dir(self) -> Path:
        return self.workspace / "admin"


@dataclass(frozen=True)
class StageExit:
    """How a pod stage's process ended."""

    exit_code: int | None
    timed_out: bool = False
    detail: str = ""


@dataclass(frozen=True)
class AlgorithmResult:
    exit_code: int | None
    signal: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    stopped: bool = False
    disk_quota_exceeded: bool = False
    duration_s: float = 0.0
    description: str = ""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not (
            self.oom_killed or self.timed_out or self.stopped or self.disk_quota_exceeded
        )

    def to_json(self) -> dict[str, object]:
        return {
            "exit_code": self.exit_code,
            "signal": self.signal,
            "oom_killed": self.oom_killed,
            "timed_out": self.timed_out,
            "stopped": self.stopped,
            "duration_seconds": self.duration_s,
        }


@dataclass(frozen=True)
class Capacity:
    cpu_cores: float
    memory_bytes: int
    disk_bytes: int
    log_max_bytes: int
    limits_in_force: tuple[str, ...] = field(default=())


class Backend(Protocol):
    name: str
    sandboxed: bool

    def describe(self) -> str:
        """Which limits are in force, for the environment's description."""

    def validate(self, entrypoint: str, image: str) -> None:
        """Refuses (plumbing.errors) an algorithm container this backend cannot run."""

    def reclaim(self, job: JobSpec) -> None:
        """At start-up: frees what a run of the job left when the previous engine died."""

    async def configure(self, job: JobSpec, timeout_s: float) -> StageExit:
        """Runs pod_config; it reports its status through JobAgentService."""

    async def algorithm(self, job: JobSpec, capacity: Capacity) -> AlgorithmResult:
        """Runs the algorithm; cancellation kills it at once."""

    async def publish(self, job: JobSpec, timeout_s: float) -> StageExit:
        """Runs pod_publish; it reports results through JobAgentService."""

    async def remove(self, job: JobSpec) -> None:
        """Deletes the job's workspace."""

    async def close(self) -> None:
        """Releases what the backend keeps between jobs (helper processes)."""
