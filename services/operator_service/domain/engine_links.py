"""The operator-service's link to each engine.

`follow()` consumes the engine's StreamStateChanges from the last applied
sequence, forever: changes are applied in batches, each batch and the new
last-applied sequence in one transaction; heartbeats record liveness and the
environments. On any disconnect it reconnects with exponential back-off and
resumes from the stored sequence, so nothing is lost or applied twice.

Dispatch hands waiting jobs to the engine in rounds, with no network call
under a row lock: a round claims its jobs (commit), calls SubmitJobs, then
settles them in a new transaction. A claim never settled (the call failed,
or the service died in between) is claimed again by a later round of any
replica once it is older than twice the call's timeout, when no call made
under it can still be running; resubmitting is harmless, since the engine
takes a job it already holds as a no-op. A job belongs to one engine from
CreateJob on, so it is only ever claimed for, and dispatched to, that one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from c2d.common.v1 import common_pb2
from plumbing import errors
from services.operator_service.domain.ports import (
    EngineClient,
    Heartbeat,
    IncomingChange,
    LinkStore,
    LogChunk,
    Refusal,
    SequenceGap,
)

log = logging.getLogger("c2d.operator")
BATCH = 500


class Publisher(Protocol):
    """Where applied changes go: the watch broker."""

    def publish(self, jobs: Iterable[Any]) -> None: ...


class StreamStalled(Exception):
    """The state stream carried nothing, not even a heartbeat, for too long."""


class EngineLink:
    def __init__(
        self,
        engine_id: str,
        address: str,
        client: EngineClient,
        store: LinkStore,
        broker: Publisher,
        liveness_s: float,
        reconnect_max_s: float,
        queue_timeout_s: float = 3600.0,
        dispatch_timeout_s: float = 30.0,
    ) -> None:
        self.engine_id = engine_id
        self.address = address
        self._client = client
        self._store = store
        self._broker = broker
        self._liveness_s = liveness_s
        self._reconnect_max_s = reconnect_max_s
        self._queue_timeout_s = queue_timeout_s
        self._dispatch_timeout_s = dispatch_timeout_s
        self.last_heartbeat = 0.0
        # The state stream's progress: the engine's last recorded change, and the last one applied here.
        self.last_emitted = 0
        self.last_applied = 0
        # The environments of the latest heartbeat: CreateJob checks them without a query.
        self.environments: list[common_pb2.Environment] = []
        self._dispatch_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def live(self) -> bool:
        return time.monotonic() - self.last_heartbeat < self._liveness_s

    @property
    def claim_stale_after(self) -> timedelta:
        """A claim this old was made by a call that has ended, one way or another."""
        return timedelta(seconds=2 * self._dispatch_timeout_s)

    async def start(self) -> None:
        await self._store.register_engine(self.engine_id, self.address)
        self._tasks = [
            asyncio.create_task(self._follow_forever(), name=f"follow-{self.engine_id}"),
            asyncio.create_task(self._dispatch_forever(), name=f"dispatch-{self.engine_id}"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self._client.close()  # before waiting: see EngineClient.close
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def live_environment(self, environment_id: str) -> common_pb2.Environment | None:
        if not self.live:
            return None
        return next((env for env in self.environments if env.id == environment_id), None)

    def wake_dispatcher(self) -> None:
        self._dispatch_wanted.set()

    # -- the state stream ------------------------------------------------------

    async def _follow_forever(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._follow_once()
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except errors.ServiceError as exc:
                log.info("engine %s: stream ended (%s); reconnecting in %.1f s", self.engine_id, exc.message, delay)
            except (SequenceGap, StreamStalled) as exc:
                log.warning("%s; reconnecting", exc)
            except Exception:
                log.exception("engine %s: error while following; reconnecting in %.1f s", self.engine_id, delay)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self._reconnect_max_s)

    async def _follow_once(self) -> None:
        after = await self._store.register_engine(self.engine_id, self.address)
        self.last_applied = after
        stream = self._client.state_changes(after)
        pending: asyncio.Queue[list[IncomingChange] | None] = asyncio.Queue()
        applier = asyncio.create_task(self._apply_from(pending))
        try:
            while True:
                # A stream silent for longer than the liveness window is dead
                # even if the connection looks open: reconnect.
                try:
                    async with asyncio.timeout(self._liveness_s):
                        message = await stream.read()
                except TimeoutError:
                    raise StreamStalled(f"engine {self.engine_id}: nothing for {self._liveness_s:g} s") from None
                if message is None:
                    return
                if applier.done():
                    applier.result()  # raises the applier's failure
                if isinstance(message, Heartbeat):
                    self.last_emitted = max(self.last_emitted, message.latest_sequence)
                    await self._heartbeat(message)
                else:
                    self.last_emitted = max(self.last_emitted, message[-1].sequence)
                    pending.put_nowait(message)
        finally:
            stream.cancel()
            pending.put_nowait(None)
            await asyncio.gather(applier, return_exceptions=True)

    async def _apply_from(self, pending: asyncio.Queue[list[IncomingChange] | None]) -> None:
        """Applies what arrived while the previous batch was being committed, all at once."""
        while True:
            batch = await pending.get()
            if batch is None:
                return
            while len(batch) < BATCH and not pending.empty():
                more = pending.get_nowait()
                if more is None:
                    pending.put_nowait(None)
                    break
                batch.extend(more)
            applied = await self._store.apply_changes(self.engine_id, batch)
            self.last_applied = batch[-1].sequence
            self.last_heartbeat = time.monotonic()
            self._broker.publish(applied)

    async def _heartbeat(self, heartbeat: Heartbeat) -> None:
        was_live = self.live
        self.last_heartbeat = time.monotonic()
        self.environments = list(heartbeat.environments)
        await self._store.record_heartbeat(self.engine_id, heartbeat.environments)
        if not was_live:
            log.info("engine %s is live", self.engine_id)
            self.wake_dispatcher()

    # -- dispatch ----------------------------------------------------------------

    async def _dispatch_forever(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
            # cancellation that arrives as the event is set, and close() then
            # waits for ever on a loop that goes on.
            try:
                async with asyncio.timeout(1.0):
                    await self._dispatch_wanted.wait()
            except TimeoutError:
                pass
            self._dispatch_wanted.clear()
            if not self.live:
                await self._expire_waiting()
                continue
            try:
                while await self.dispatch_round() == BATCH:
                    pass
            except errors.ServiceError as exc:
                log.info("engine %s: dispatch failed (%s); the jobs wait for a later round", self.engine_id, exc)
            except Exception:
                log.exception("engine %s: dispatch error", self.engine_id)

    async def dispatch_round(self) -> int:
        """Claims waiting jobs, hands them to the engine in one call, settles
        them; returns how many it claimed."""
        claim = uuid.uuid4().hex
        now = datetime.now(UTC)
        try:
            jobs = await self._store.claim_waiting(self.engine_id, claim, now, now - self.claim_stale_after, BATCH)
        except BaseException:
            # The claim may have committed with its reply lost: handed back at once, or its
            # jobs would wait for it to go stale (twice the dispatch timeout).
            await asyncio.shield(self._release(claim))
            raise
        if not jobs:
            return 0
        job_ids = [job.job_id for job in jobs]
        try:
            refusals = await self._client.submit_jobs(jobs, timeout=self._dispatch_timeout_s)
        except BaseException:
            # The jobs wait for the next round rather than for the claim to go stale.
            # Shielded: a service stopping mid-call still hands its claim back.
            await asyncio.shield(self._release(claim, job_ids))
            raise
        for refusal in refusals:
            log.warning("engine %s refused job %s: %s", self.engine_id, refusal.job_id, refusal.error_message)
        # A job the engine refuses ends here, with the engine's reason: retrying it could never succeed.
        settled = await self._store.finish_dispatch(
            claim,
            job_ids,
            [
                Refusal(refusal.job_id, refusal.error_code, f"the engine refused the job: {refusal.error_message}")
                for refusal in refusals
            ],
        )
        self._broker.publish(settled.refused)
        for job_id in settled.withdrawn:
            await self._withdraw(job_id)
        return len(jobs)

    async def _release(self, claim: str, job_ids: list[str] | None = None) -> None:
        try:
            await self._store.release_claim(claim, job_ids)
        except Exception:
            log.exception("engine %s: claim %s not released; it is retried once stale", self.engine_id, claim)

    async def _withdraw(self, job_id: str) -> None:
        """The job ended here (stopped, deleted, expired) while the engine was
        being handed it: the engine's copy has nothing left to do."""
        try:
            await self._client.delete_job(job_id)
        except errors.ServiceError as exc:
            log.warning(
                "engine %s: job %s ended before its dispatch was settled and could not be withdrawn (%s); "
                "its changes will be refused",
                self.engine_id,
                job_id,
                exc.message,
            )

    async def _expire_waiting(self) -> None:
        """Jobs that waited longer than the queue timeout for a dead engine end."""
        now = datetime.now(UTC)
        try:
            expired = await self._store.expire_waiting(
                self.engine_id,
                now - timedelta(seconds=self._queue_timeout_s),
                now - self.claim_stale_after,
                f"the job waited more than {self._queue_timeout_s:g} s for its engine {self.engine_id} to come back",
            )
        except Exception:
            log.exception("engine %s: queue expiry failed", self.engine_id)
            return
        if expired:
            log.warning("engine %s: %d job(s) expired in queue", self.engine_id, len(expired))
            self._broker.publish(expired)

    # -- commands --------------------------------------------------------------------

    async def stop(self, job_id: str) -> None:
        await self._client.stop_job(job_id)

    async def delete(self, job_id: str) -> None:
        await self._client.delete_job(job_id)

    def stream_logs(self, job_id: str, follow: bool, offset: int) -> AsyncIterator[LogChunk]:
        return self._client.job_logs(job_id, follow, offset)
