"""The operator-service's link to each engine.

`follow()` consumes the engine's StreamStateChanges from the last applied
sequence, forever: changes are applied in batches, each batch and the new
last-applied sequence in one transaction; heartbeats record liveness and the
environments. On any disconnect it reconnects with exponential back-off and
resumes from the stored sequence, so nothing is lost or applied twice.
`dispatch()` hands waiting jobs to the engine.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import json_format

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import engine_pb2, engine_pb2_grpc
from plumbing import auth
from plumbing.database import Database
from plumbing.grpc_errors import downstream_error
from plumbing.statuses import EndReason
from services.operator_service.domain.watching import Broker
from services.operator_service.persistence import jobs as store
from services.operator_service.persistence.models import Job

log = logging.getLogger("c2d.operator")
BATCH = 500


class StreamStalled(Exception):
    """The state stream carried nothing, not even a heartbeat, for too long."""


class EngineLink:
    def __init__(
        self,
        engine_id: str,
        address: str,
        db: Database,
        broker: Broker,
        token: str,
        liveness_s: float,
        reconnect_max_s: float,
        queue_timeout_s: float = 3600.0,
    ) -> None:
        self.engine_id = engine_id
        self.address = address
        self._db = db
        self._broker = broker
        self._metadata = auth.bearer(token)
        self._liveness_s = liveness_s
        self._reconnect_max_s = reconnect_max_s
        self._queue_timeout_s = queue_timeout_s
        self._channel = auth.internal_channel(address)
        self._stub = engine_pb2_grpc.EngineServiceStub(self._channel)
        # The dispatcher calls SubmitJobs while holding the job rows' locks, in
        # a database thread, so it uses a blocking channel.
        self._sync_channel = auth.internal_channel(address, blocking=True)
        self._sync_stub = engine_pb2_grpc.EngineServiceStub(self._sync_channel)
        self.last_heartbeat = 0.0
        # The environments of the latest heartbeat: CreateJob checks them without a query.
        self.environments: list[common_pb2.Environment] = []
        self._dispatch_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def live(self) -> bool:
        return time.monotonic() - self.last_heartbeat < self._liveness_s

    async def start(self) -> None:
        await self._db.run(lambda s: store.ensure_engine(s, self.engine_id, self.address))
        self._tasks = [
            asyncio.create_task(self._follow_forever(), name=f"follow-{self.engine_id}"),
            asyncio.create_task(self._dispatch_forever(), name=f"dispatch-{self.engine_id}"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        # Closing the channel ends the state stream's call: a read of it whose task
        # was cancelled can otherwise wait for the engine's next message, for ever
        # if the engine has stopped sending (seen in 1 of 5 test runs).
        await self._channel.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._sync_channel.close()

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
            except grpc.aio.AioRpcError as exc:
                log.info("engine %s: stream ended (%s); reconnecting in %.1f s", self.engine_id, exc.code().name, delay)
            except (store.SequenceGap, StreamStalled) as exc:
                log.warning("%s; reconnecting", exc)
            except Exception:
                log.exception("engine %s: error while following; reconnecting in %.1f s", self.engine_id, delay)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self._reconnect_max_s)

    async def _follow_once(self) -> None:
        after = await self._db.run(lambda s: store.ensure_engine(s, self.engine_id, self.address))
        call = self._stub.StreamStateChanges(
            engine_pb2.StreamStateChangesRequest(after_sequence=after), metadata=self._metadata
        )
        pending: asyncio.Queue[list[engine_pb2.StateChange] | None] = asyncio.Queue()
        applier = asyncio.create_task(self._apply_from(pending))
        try:
            while True:
                # A stream silent for longer than the liveness window is dead
                # even if the connection looks open: reconnect.
                try:
                    response = await asyncio.wait_for(call.read(), self._liveness_s)
                except TimeoutError:
                    raise StreamStalled(f"engine {self.engine_id}: nothing for {self._liveness_s:g} s") from None
                if response is grpc.aio.EOF:
                    return
                if applier.done():
                    applier.result()  # raises the applier's failure
                if response.HasField("heartbeat"):
                    await self._heartbeat(response.heartbeat)
                else:
                    pending.put_nowait(list(response.changes.changes))
        finally:
            call.cancel()
            pending.put_nowait(None)
            await asyncio.gather(applier, return_exceptions=True)

    async def _apply_from(self, pending: asyncio.Queue[list[engine_pb2.StateChange] | None]) -> None:
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
            changes = [_incoming(change) for change in batch]
            applied = await self._db.run(lambda s, changes=changes: store.apply_changes(s, self.engine_id, changes))
            self.last_heartbeat = time.monotonic()
            self._broker.publish(applied)

    async def _heartbeat(self, heartbeat: engine_pb2.Heartbeat) -> None:
        was_live = self.live
        self.last_heartbeat = time.monotonic()
        self.environments = list(heartbeat.environments)
        environments = [
            json_format.MessageToDict(env, preserving_proto_field_name=True) for env in heartbeat.environments
        ]
        await self._db.run(lambda s: store.record_heartbeat(s, self.engine_id, environments))
        if not was_live:
            log.info("engine %s is live", self.engine_id)
            self.wake_dispatcher()

    # -- dispatch ----------------------------------------------------------------

    async def _dispatch_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._dispatch_wanted.wait(), timeout=1.0)
            except TimeoutError:
                pass
            self._dispatch_wanted.clear()
            if not self.live:
                await self._expire_waiting()
                continue
            try:
                while True:
                    claimed, refused = await self._db.run(self._dispatch_batch)
                    self._broker.publish(refused)
                    if claimed < BATCH:
                        break
            except grpc.RpcError as exc:
                log.info("engine %s: dispatch failed (%s); jobs wait", self.engine_id, exc.code().name)  # type: ignore[attr-defined]
            except Exception:
                log.exception("engine %s: dispatch error", self.engine_id)

    def _dispatch_batch(self, session) -> tuple[int, list[Job]]:  # type: ignore[no-untyped-def]
        """Hands waiting jobs to the engine; returns how many, and those it refused."""
        jobs = store.claim_undispatched(session, self.engine_id, BATCH)
        if not jobs:
            return 0, []
        # One call for the batch. If it fails the transaction rolls back and
        # the jobs wait; the engine ignores a job it already holds, so the
        # retry resubmits harmlessly. A job the engine refuses ends here,
        # with the engine's reason: retrying it could never succeed.
        request = engine_pb2.SubmitJobsRequest(
            jobs=[
                engine_pb2.SubmitJobRequest(
                    job_id=job.job_id,
                    environment_id=job.environment_id,
                    workflow=common_pb2.Workflow.FromString(job.workflow),
                )
                for job in jobs
            ]
        )
        response = self._sync_stub.SubmitJobs(request, metadata=self._metadata, timeout=30)
        by_id = {job.job_id: job for job in jobs}
        refused = []
        for result in response.results:
            if result.error_code:
                log.warning("engine %s refused job %s: %s", self.engine_id, result.job_id, result.error_message)
                refused.append(by_id[result.job_id])
                store.end_job(
                    session,
                    refused[-1],
                    EndReason.FAILED,
                    result.error_code,
                    f"the engine refused the job: {result.error_message}",
                )
        store.mark_dispatched(session, list(by_id))
        return len(jobs), refused

    async def _expire_waiting(self) -> None:
        """Jobs that waited longer than the queue timeout for a dead engine end."""
        cutoff = store.utcnow() - timedelta(seconds=self._queue_timeout_s)
        try:
            expired = await self._db.run(
                lambda s: store.expire_undispatched(
                    s,
                    self.engine_id,
                    cutoff,
                    f"the job waited more than {self._queue_timeout_s:g} s "
                    f"for its engine {self.engine_id} to come back",
                )
            )
        except Exception:
            log.exception("engine %s: queue expiry failed", self.engine_id)
            return
        if expired:
            log.warning("engine %s: %d job(s) expired in queue", self.engine_id, len(expired))
            self._broker.publish(expired)

    # -- commands --------------------------------------------------------------------

    async def stop(self, job_id: str) -> None:
        await self._call(
            self._stub.StopJob(engine_pb2.StopJobRequest(job_id=job_id), metadata=self._metadata, timeout=10)
        )

    async def delete(self, job_id: str) -> None:
        await self._call(
            self._stub.DeleteJob(engine_pb2.DeleteJobRequest(job_id=job_id), metadata=self._metadata, timeout=30)
        )

    async def stream_logs(
        self, job_id: str, follow: bool, offset: int
    ) -> AsyncIterator[engine_pb2.StreamJobLogsResponse]:
        call = self._stub.StreamJobLogs(
            engine_pb2.StreamJobLogsRequest(job_id=job_id, follow=follow, offset=offset), metadata=self._metadata
        )
        try:
            async for chunk in call:
                yield chunk
        except grpc.aio.AioRpcError as exc:
            raise downstream_error(exc, f"engine {self.engine_id}") from None

    async def _call(self, call: Any) -> Any:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise downstream_error(exc, f"engine {self.engine_id}") from None


def _incoming(change: engine_pb2.StateChange) -> store.IncomingChange:
    return store.IncomingChange(
        sequence=change.sequence,
        job_id=change.job_id,
        status=change.status,
        end_reason=change.end_reason,
        error_code=change.error_code,
        error_message=change.error_message,
        time=change.time.ToDatetime(tzinfo=UTC) if change.HasField("time") else datetime.now(UTC),
        results=json_format.MessageToDict(change.results, preserving_proto_field_name=True)
        if change.HasField("results")
        else None,
        outcome=json_format.MessageToDict(change.algorithm_outcome, preserving_proto_field_name=True)
        if change.HasField("algorithm_outcome")
        else None,
        results_did=change.results_did,
    )
