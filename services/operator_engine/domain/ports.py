"""What the orchestrator needs from the outside, as small Protocols.

The domain never imports SQL, gRPC or a backend: persistence/ implements the
job store and the event log, backends/ implement the Backend, and server.py
wires them into the orchestrator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from services.operator_engine.domain.changes import StateChange
from services.operator_engine.domain.jobs import Capacity, JobSpec, StageExit
from services.operator_engine.domain.stages import Stage


@dataclass(frozen=True)
class StoredJob:
    """An unfinished job as the store holds it: what recovery resumes from."""

    job_id: str
    workflow: bytes
    spec: dict[str, Any]  # the JobSpec fields the store keeps (no token, no workspace)
    status: int
    stage: str
    stop_requested: bool


class JobStore(Protocol):
    """Every job the engine holds, durably. Statuses and stages are written
    by the event log, in the transaction of the change that sets them."""

    async def insert(self, spec: dict[str, Any], workflow: bytes) -> bool:
        """Stores a new job; False when it is already stored with the same workflow
        (a resubmission). Another workflow under the same id is refused (AlreadyExists)."""

    async def unfinished(self, job_id: str | None = None) -> Sequence[StoredJob]:
        """Jobs not done and not deleted, oldest first (only `job_id`, if given)."""

    async def status_of(self, job_id: str) -> int | None:
        """The job's last recorded status; None if it is not known here."""

    async def mark_stop_requested(self, job_id: str) -> None: ...

    async def mark_deleted(self, job_id: str) -> None: ...

    async def close(self) -> None: ...


class EventLog(Protocol):
    """The engine's numbered log of state changes (what the state stream serves)."""

    async def append(self, change: StateChange, stage: str | None = None, workflow: bytes | None = None) -> int:
        """Records the change durably, with the job's new stage and what it keeps
        of its workflow if they change, in the same transaction; its sequence."""


class Backend(Protocol):
    """Where a job's stages run (processes on this host, or pods). The stage
    table (stages.py) says what each runs: a pod program, or the algorithm."""

    name: str
    sandboxed: bool

    def describe(self) -> str:
        """Which limits are in force, for the environment's description."""

    def validate(self, entrypoint: str, image: str, allow_network: bool, tag: str = "", checksum: str = "") -> None:
        """Refuses (plumbing.errors) an algorithm container this backend cannot run, or
        network access it cannot give without exposing the host (DESIGN: who may see what)."""

    def detach(self) -> None:
        """The engine is stopping: a cancelled algorithm is left running (where the
        backend can keep it beyond the engine) for the next engine process to re-attach."""

    async def abandon(self, job: JobSpec) -> None:
        """At start-up: stops the job's algorithm a previous engine process left running
        (its stop was asked for before that process could kill it)."""

    def reclaim(self, job: JobSpec) -> None:
        """At start-up: frees what a run of the job left when the previous engine died."""

    def outlived_restart(self, job: JobSpec, stage: Stage) -> bool:
        """At start-up: the stage's run survived the previous engine (a pod, or an
        algorithm under its monitor, still running or with its outcome kept), so it
        is followed to its end (run_algorithm attaches to it) instead of failing the job."""

    async def prepare(self, job: JobSpec) -> None:
        """Gives the job an empty workspace (for a stage that starts clean)."""

    async def run_pod(self, stage: Stage, job: JobSpec) -> StageExit:
        """Runs the stage's pod program (stage.program) until it exits or
        stage.timeout_s passes (then it is killed: timed_out). The pod reports
        through JobAgentService as it goes. Cancellation kills it at once."""

    async def run_algorithm(self, job: JobSpec, capacity: Capacity) -> StageExit:
        """Runs the algorithm within the capacity and its own timeout
        (job.algorithm_timeout_s); cancellation kills it at once."""

    def release(self, job: JobSpec) -> None:
        """The job ended: frees what it holds while it runs (pods, volumes), in the
        background; its results and workspace stay until remove()."""

    async def remove(self, job_id: str, workspace: Path) -> None:
        """Deletes what the job left (its workspace)."""

    async def close(self) -> None:
        """Releases what the backend keeps between jobs (helper processes)."""
