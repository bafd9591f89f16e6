"""What the domain needs from outside it, as small Protocols ("ports"), and
the data that crosses them.

The engine's gRPC client (`clients/engines.py`) and the job store
(`persistence/store.py`) implement these; `server.py` wires them in. The
domain never imports them, nor grpc or SQL: it drives them through these
ports. A failed call to an engine surfaces as a `plumbing.errors` error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from c2d.common.v1 import common_pb2

# -- data ------------------------------------------------------------------------


class JobRecord(Protocol):
    """A stored job, as far as the domain reads it."""

    @property
    def job_id(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def sequence(self) -> int: ...
    @property
    def results(self) -> dict[str, Any] | None: ...


class EngineRecord(Protocol):
    """A registered engine and the environments of its latest heartbeat (proto JSON)."""

    @property
    def engine_id(self) -> str: ...
    @property
    def environments(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class IncomingChange:
    """A state change as an engine streamed it."""

    sequence: int
    job_id: str
    status: int
    end_reason: int
    error_code: str
    error_message: str
    time: datetime
    results: dict[str, Any] | None
    outcome: dict[str, Any] | None
    results_did: str


@dataclass(frozen=True)
class Heartbeat:
    """The engine is alive and offers these environments."""

    environments: tuple[common_pb2.Environment, ...]
    latest_sequence: int = 0  # the last state change the engine has recorded


@dataclass(frozen=True)
class JobToSubmit:
    job_id: str
    environment_id: str
    workflow: bytes  # a serialized c2d.common.v1.Workflow


@dataclass(frozen=True)
class Refusal:
    """The engine refused a job of a SubmitJobs batch, for good."""

    job_id: str
    error_code: str
    error_message: str


@dataclass(frozen=True)
class Settlement:
    """What finishing a dispatch round did besides marking jobs dispatched."""

    refused: Sequence[JobRecord]  # ended with the engine's reason
    withdrawn: Sequence[str]  # ids of jobs that ended here while their submission was in flight


@dataclass(frozen=True)
class LogChunk:
    data: bytes
    offset: int


class SequenceGap(Exception):
    """The engine's stream skipped a sequence: reconnect from the last applied one."""


# -- the engine --------------------------------------------------------------------


class StateStream(Protocol):
    async def read(self) -> Heartbeat | list[IncomingChange] | None:
        """The next message; None once the engine ended the stream."""
        ...

    def cancel(self) -> None: ...


class EngineClient(Protocol):
    """One engine's EngineService."""

    def state_changes(self, after_sequence: int) -> StateStream: ...

    async def submit_jobs(self, jobs: Sequence[JobToSubmit], timeout: float) -> list[Refusal]:
        """Hands the jobs over in one call; returns those the engine refused.
        The engine takes a job it already holds again as a no-op."""
        ...

    async def stop_job(self, job_id: str) -> None: ...

    async def delete_job(self, job_id: str) -> None: ...

    def job_logs(self, job_id: str, follow: bool, offset: int) -> AsyncIterator[LogChunk]: ...

    async def close(self) -> None: ...


# -- the job store -------------------------------------------------------------------


class LinkStore(Protocol):
    """What an engine link reads and writes; each call is one transaction."""

    async def register_engine(self, engine_id: str, address: str) -> int:
        """Registers the engine if new; returns its last applied sequence."""
        ...

    async def apply_changes(self, engine_id: str, changes: Sequence[IncomingChange]) -> Sequence[JobRecord]:
        """Applies the changes exactly once; returns the jobs as they now stand.
        Raises SequenceGap if the changes skip a sequence."""
        ...

    async def record_heartbeat(self, engine_id: str, environments: Sequence[common_pb2.Environment]) -> None: ...

    async def claim_waiting(
        self, engine_id: str, claim: str, now: datetime, stale_before: datetime, limit: int
    ) -> list[JobToSubmit]:
        """Marks up to `limit` jobs waiting for this engine as claimed by `claim`
        at `now`, oldest first, and returns them. A job claimed before
        `stale_before` whose claim was never finished is claimed again; a
        fresher claim is skipped, so replicas never claim the same job at once."""
        ...

    async def finish_dispatch(self, claim: str, job_ids: Sequence[str], refusals: Sequence[Refusal]) -> Settlement:
        """After the engine took the claimed jobs: each still held by `claim` is
        marked dispatched, or ended with its refusal, or (if it ended
        here meanwhile) withdrawn. Jobs another claim took over are left alone."""
        ...

    async def release_claim(self, claim: str, job_ids: Sequence[str] | None = None) -> None:
        """Makes the jobs still held by `claim` (of `job_ids`, if given) claimable again at once."""
        ...

    async def expire_waiting(
        self, engine_id: str, created_before: datetime, stale_before: datetime, message: str
    ) -> Sequence[JobRecord]:
        """Ends the jobs waiting for this engine since before `created_before`
        (not those a fresh claim holds); returns them."""
        ...


class ExpiryStore(Protocol):
    """What the storage-expiry sweeper reads and writes."""

    async def read_engines(self) -> Sequence[EngineRecord]: ...

    async def results_to_expire(
        self, engine_id: str, environment_id: str, finished_before: datetime, limit: int
    ) -> Sequence[JobRecord]: ...

    async def mark_results_expired(self, job_id: str, at: datetime) -> bool:
        """Records that the job's results are gone; False if another replica did first."""
        ...


class ResultsStore(Protocol):
    """What the removal of a job's stored results reads and writes."""

    async def release_results(self, job_id: str, locations: Sequence[str]) -> list[str]:
        """Ends the job's claims on the content its results name; returns the
        `locations` no other job's live results name, which may be deleted.
        Content-addressed results (IPFS) of two jobs can be the same object."""
        ...
