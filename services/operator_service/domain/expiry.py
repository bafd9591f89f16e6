"""Removal of a job's stored results: on DeleteJob, and by the storage-expiry
sweeper once a finished job is older than its environment's storage expiry.

Both delete every location of the job's results manifest from the configured
storage and mark the manifest expired. The sweeper runs in every replica;
deletes are idempotent and the mark is taken under the job's row lock, so
two replicas sweeping the same job do no harm.

IPFS results are content-addressed: two jobs with an identical file name the
same CID, which the node holds under one pin. The job's claims end first
(`ResultsStore.release_results`) and only the CIDs no other live job names
are unpinned. A failed unpin leaves the job live but its claims ended: a
retry unpins the same CIDs, and meanwhile its results are protected no more
(it is being removed). Not covered: a job's pod adds its results (a no-op pin
when the CID is pinned already) before its record reaches this service, so a
removal in between can still unpin what that job is about to record.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from plumbing import errors, storage
from services.operator_service.domain.ports import ExpiryStore, JobRecord, ResultsStore

log = logging.getLogger("c2d.operator")
SWEEP_BATCH = 200


class ResultsRemover:
    """Deletes the files of results manifests from one storage configuration."""

    def __init__(self, config: storage.StorageConfig, jobs: ResultsStore) -> None:
        self._config = config
        self._jobs = jobs
        self._store: storage.ObjectStore | None = None

    def _opened(self) -> storage.ObjectStore:
        if self._store is None:
            self._store = storage.open_store(self._config)
        return self._store

    async def remove_files(self, job_id: str, results: dict[str, Any]) -> int:
        """Deletes each file of the job's manifest (missing ones count as
        deleted); never one outside the job's own prefix, whatever its record
        says (storage.held_by_job), nor an IPFS CID another live job's results
        name (a forged record may name one). Returns how many it deleted."""
        locations = [f["location"] for f in results.get("files", []) if f.get("location")]
        if not locations:
            return 0
        target = await asyncio.to_thread(self._opened)
        owned = []
        for location in locations:
            kind = storage.kind_of(location)
            if kind != target.kind:
                raise storage.StorageError(
                    f"{location} is in {kind} storage but this service is configured for {target.kind} "
                    "(C2D_STORAGE_KIND); it cannot remove it"
                )
            if kind != "ipfs" and not storage.held_by_job(location, job_id, self._config.s3_bucket):
                log.warning("job %s: its results name %s, not one of its own: left in place", job_id, location)
                continue
            owned.append(location)
        unshared = await self._jobs.release_results(job_id, owned)
        for location in owned:
            if location not in unshared:
                log.info("job %s: %s is named by another job's results too: kept", job_id, location)
        await asyncio.to_thread(_delete_all, target, unshared)
        return len(unshared)

    async def remove(self, job: JobRecord) -> None:
        """DeleteJob's removal: storage failures become UNAVAILABLE (the delete may be retried)."""
        if not job.results or job.results.get("expired"):
            return
        try:
            await self.remove_files(job.job_id, job.results)
        except storage.StorageError as exc:
            raise errors.Unavailable(
                f"the results of job {job.job_id} could not be removed from storage ({exc.message}); "
                "the job was not deleted, try again",
                "results_removal_failed",
            ) from None


def _delete_all(target: storage.ObjectStore, locations: list[str]) -> None:
    for location in locations:
        target.delete(location)


def expiry_seconds(environment: dict[str, Any]) -> int:
    # Proto JSON writes uint64 as a string and leaves out zero (= keep forever).
    return int(environment.get("storage_expiry_seconds") or 0)


class ExpirySweeper:
    def __init__(self, jobs: ExpiryStore, remover: ResultsRemover, interval_s: float) -> None:
        self._jobs = jobs
        self._remover = remover
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_forever(), name="results-expiry")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                expired = await self.sweep_once()
                if expired:
                    log.info("storage expiry: removed the results of %d job(s)", expired)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("storage expiry sweep failed")
            await asyncio.sleep(self._interval_s)

    async def sweep_once(self, now: datetime | None = None) -> int:
        """Expires the results of every finished job past its environment's
        storage expiry; returns how many jobs it expired."""
        now = now or datetime.now(UTC)
        engines = await self._jobs.read_engines()
        expired = 0
        for engine in engines:
            for environment in engine.environments or []:
                seconds = expiry_seconds(environment)
                if seconds <= 0:
                    continue
                expired += await self._sweep_environment(
                    engine.engine_id, environment["id"], now - timedelta(seconds=seconds), now
                )
        return expired

    async def _sweep_environment(
        self, engine_id: str, environment_id: str, finished_before: datetime, now: datetime
    ) -> int:
        expired = 0
        while True:
            due = await self._jobs.results_to_expire(engine_id, environment_id, finished_before, SWEEP_BATCH)
            failed = 0
            for job in due:
                try:
                    if job.results and not job.results.get("expired"):
                        await self._remover.remove_files(job.job_id, job.results)
                except storage.StorageError as exc:
                    failed += 1
                    log.warning(
                        "storage expiry: results of job %s not removed (%s); next sweep retries",
                        job.job_id,
                        exc.message,
                    )
                    continue
                if await self._jobs.mark_results_expired(job.job_id, now):
                    expired += 1
            if len(due) < SWEEP_BATCH or failed:
                return expired
