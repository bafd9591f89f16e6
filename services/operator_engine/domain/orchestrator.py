"""The stage orchestrator: runs each job's stages (stages.py) on any backend.

One asyncio task per running job walks the stage table with one loop. Each
stage has its own timeout, a stop cancels the task in whatever stage it is
(the backend kills what it started), and every state change goes through
`_emit`, which checks the state machine and appends to the durable event log
before anything else can see it. Jobs beyond the environment's max_jobs
wait in a FIFO queue.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plumbing import errors, logs, tracing
from plumbing.statuses import FAILURES, EndReason, Status, check_transition, is_terminal
from plumbing.workflows import EVERY_SECRET, Secret, redacted
from services.operator_engine.domain import stages
from services.operator_engine.domain.changes import StateChange
from services.operator_engine.domain.jobs import Capacity, EnvironmentSpec, JobSpec, StageExit
from services.operator_engine.domain.ports import Backend, EventLog, JobStore
from services.operator_engine.domain.stages import JobEnd, Stage, StageEnd

log = logging.getLogger("c2d.engine")


@dataclass
class Run:
    spec: JobSpec
    workflow: bytes
    status: Status = Status.WARMING_UP
    # What of the workflow's secrets it still holds (stored and here): only what a stage still to run reads.
    secrets_kept: frozenset[Secret] = EVERY_SECRET
    stage: str = "queued"
    queued_at: float = field(default_factory=time.monotonic)
    stop_requested: bool = False
    task: asyncio.Task[None] | None = None
    results: dict[str, Any] | None = None
    results_did: str = ""
    outcome: dict[str, Any] | None = None  # how the algorithm ended, once it has
    # Set when the current stage's pod reported how its stage ended (see _pod_stage);
    # `succeeded` says whether that report was its success.
    reported: asyncio.Event = field(default_factory=asyncio.Event)
    succeeded: bool = False
    # How the job ends once it published what its failed stage left (see
    # Stage.publishes_on_failure); until then its status stays where it failed.
    failing: JobEnd | None = None


class Orchestrator:
    def __init__(
        self,
        jobs: JobStore,
        events: EventLog,
        backend: Backend,
        environment: EnvironmentSpec,
        workspaces: Path,
        pipeline: Sequence[Stage],
        queue_timeout_s: float,
    ) -> None:
        self.jobs = jobs
        self.events = events
        self.backend = backend
        self.environment = environment
        self.workspaces = workspaces
        self.pipeline = tuple(pipeline)
        self.queue_timeout_s = queue_timeout_s
        self._stage_named = {stage.name: stage for stage in self.pipeline}
        self._publishing = stages.publishing_stage(self.pipeline)
        # The engine announces these itself; a pod repeating them is harmless.
        self._announced_by_engine = {stage.running for stage in self.pipeline if stage.program}
        self._runs: dict[str, Run] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._running: set[str] = set()
        self._housekeeping: asyncio.Task[None] | None = None
        self._ending_pods: set[asyncio.Future[StageExit]] = set()  # pods that reported, still exiting
        self._paused = False  # stopping: nothing new starts

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        await self._recover()
        self._housekeeping = asyncio.create_task(self._expire_queued_forever())

    async def pause(self) -> None:
        """The engine is stopping: no job starts any more, and the running ones
        are interrupted where they are, with no status change, so that the next
        engine process resumes them (_recover) and queued jobs keep their place.
        A job started now could not even reach the engine: its port is closing."""
        self._paused = True
        self.backend.detach()
        if self._housekeeping:
            self._housekeeping.cancel()
        tasks = [run.task for run in self._runs.values() if run.task] + list(self._ending_pods)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.pause()
        await self.jobs.close()

    async def _recover(self) -> None:
        """Reconciles jobs a previous engine process left unfinished.

        Decided by the last status the log recorded (the stage is stored with
        it, in the same transaction): a stage that can run again (configure,
        publish) does; an algorithm that went on without the engine (under its
        monitor) is re-attached to; one that cannot be (its run was lost: a
        host reboot) fails its job; queued jobs keep their place.
        """
        for stored in await self.jobs.unfinished():
            job_id = stored.job_id
            # Pods of the previous process are gone; re-run stages get a new token.
            spec = _spec_from_json(stored.spec, secrets.token_urlsafe(24), self.workspaces / job_id)
            run = Run(spec=spec, workflow=stored.workflow, status=Status(stored.status), stage=stored.stage)
            self._runs[job_id] = run
            self.backend.reclaim(spec)
            interrupted = self._stage_named.get(run.stage)
            if stored.stop_requested:
                await self.backend.abandon(spec)  # what the stop had no time to kill
                await self._end(run, stages.STOPPED)
            elif (
                interrupted
                and run.status == interrupted.running
                and not interrupted.rerun_after_restart
                and not self.backend.outlived_restart(spec, interrupted)
            ):
                await self._end(run, stages.engine_restarted(interrupted))
            elif run.status == Status.WARMING_UP:
                self._queue.append(job_id)
            else:
                log.info(
                    "job %s: resuming after an engine restart (status %d, %s stage)", job_id, run.status, run.stage
                )
                self._launch(run)
        self._fill()

    # -- commands ------------------------------------------------------------

    async def submit(self, spec_fields: dict[str, Any], workflow: bytes) -> bool:
        """Accepts a job; the same job id with the same workflow is a no-op."""
        if spec_fields["environment_id"] != self.environment.id:
            raise errors.FailedPrecondition(
                f"environment {spec_fields['environment_id']!r} is not offered by this engine "
                f"(it offers {self.environment.id!r})",
                "environment_unknown",
            )
        if "$ALGO" not in spec_fields["entrypoint"]:
            raise errors.InvalidArgument(
                "the algorithm's entrypoint must contain $ALGO, which is replaced by the algorithm's path",
                "entrypoint_invalid",
                field="workflow.container.entrypoint",
            )
        self.backend.validate(
            spec_fields["entrypoint"],
            spec_fields["image"],
            spec_fields["allow_network"],
            tag=spec_fields.get("image_tag", ""),
            checksum=spec_fields.get("image_checksum", ""),
        )
        requested = spec_fields["algorithm_timeout_s"]
        if requested > self.environment.max_job_duration_s:
            raise errors.FailedPrecondition(
                f"requested duration {requested:g} s exceeds the environment's maximum of "
                f"{self.environment.max_job_duration_s} s",
                "duration_too_long",
            )
        if requested <= 0:
            spec_fields = {**spec_fields, "algorithm_timeout_s": float(self.environment.max_job_duration_s)}
        # Shielded: once stored, the job must be queued even if the caller gives up.
        return await asyncio.shield(self._accept(_spec_to_json(spec_fields), workflow))

    async def _accept(self, spec: dict[str, Any], workflow: bytes) -> bool:
        job_id = spec["job_id"]
        created = await self.jobs.insert(spec, workflow)
        if not created:
            if job_id in self._runs:
                return False
            # Stored, yet never queued: the submission that stored it lost the reply
            # to its COMMIT (it failed, UNAVAILABLE) and this is its retry. Queued
            # now, or it would wait in the store for the engine's next restart.
            stored = [job for job in await self.jobs.unfinished(job_id) if job.status == Status.WARMING_UP]
            if not stored or job_id in self._runs:
                return False
            log.info("job %s: stored by a submission that never heard so; queued now", job_id)
            spec, workflow = stored[0].spec, stored[0].workflow
        run_spec = _spec_from_json(spec, secrets.token_urlsafe(24), self.workspaces / job_id)
        self._runs[job_id] = Run(spec=run_spec, workflow=workflow)
        self._queue.append(job_id)
        self._fill()
        return created

    async def stop(self, job_id: str) -> Status:
        run = self._runs.get(job_id)
        if run is None:
            status = await self.status_of(job_id)
            raise errors.FailedPrecondition(f"job {job_id} already ended with status {int(status)}", "job_ended")
        run.stop_requested = True
        await self.jobs.mark_stop_requested(job_id)
        status = run.status
        if run.task is not None:
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)
        else:
            self._queue.remove(job_id)
            await self._end(run, stages.STOPPED)
        return status

    async def delete(self, job_id: str) -> None:
        if job_id in self._runs:
            await self.stop(job_id)
        else:
            await self.status_of(job_id)
        await self.backend.remove(job_id, self.workspace_of(job_id))
        await self.jobs.mark_deleted(job_id)

    async def status_of(self, job_id: str) -> Status:
        status = await self.jobs.status_of(job_id)
        if status is None:
            raise errors.NotFound(f"job {job_id} is not known to this engine", "job_not_found")
        return Status(status)

    # -- pods ------------------------------------------------------------------

    def authorize_pod(self, job_id: str, token: str) -> Run:
        run = self._runs.get(job_id)
        if run is None or not hmac.compare_digest(run.spec.token.encode(), token.encode()):
            raise errors.PermissionDenied(f"this token does not belong to an active job {job_id}", "job_token_invalid")
        return run

    async def report_progress(self, run: Run, status: Status, code: str, message: str) -> None:
        if status == run.status or status in self._announced_by_engine:
            return
        stage = self._stage_named.get(run.stage)
        if stage is None or status not in stage.reports:
            raise errors.FailedPrecondition(
                f"a pod cannot report status {int(status)} during the {run.stage} stage",
                "report_out_of_stage",
            )
        if run.failing is not None:
            # publishing what a failed job left: the job ends as it failed, whatever this says
            log.warning("job %s: publishing its partial results failed: %s %s", run.spec.job_id, code, message)
        elif status in FAILURES:
            await self._end(run, stages.reported_failure(status, code, message))
        else:  # its stage's success (Stage.reports holds nothing else)
            await self._emit(run, status)
            run.succeeded = True
        run.reported.set()  # how the stage ended: the pod has nothing left to do

    def record_results(self, run: Run, results: dict[str, Any], results_did: str) -> None:
        stage = self._stage_named.get(run.stage)
        if stage is None or not stage.reports_results:
            publishing = " or ".join(stage.name for stage in self.pipeline if stage.reports_results)
            raise errors.FailedPrecondition(
                f"results can only be reported during the {publishing} stage, not {run.stage}",
                "report_out_of_stage",
            )
        # a failed job's results are what it left; only the engine says so
        results = {key: value for key, value in results.items() if key != "partial"}
        if run.failing is not None:
            results["partial"] = True
        run.results, run.results_did = results, results_did
        run.succeeded = True
        run.reported.set()

    def workflow_of(self, run: Run) -> bytes:
        return run.workflow

    # -- load -------------------------------------------------------------------

    @property
    def running_jobs(self) -> int:
        return len(self._running)

    @property
    def queued_jobs(self) -> int:
        return len(self._queue)

    def is_active(self, job_id: str) -> bool:
        return job_id in self._runs

    def workspace_of(self, job_id: str) -> Path:
        return self.workspaces / job_id

    # -- the stages -------------------------------------------------------------

    def _fill(self) -> None:
        while not self._paused and self._queue and len(self._running) < self.environment.max_jobs:
            self._launch(self._runs[self._queue.popleft()])

    def _launch(self, run: Run) -> None:
        self._running.add(run.spec.job_id)
        run.task = asyncio.create_task(self._execute(run), name=f"job-{run.spec.job_id}")

    async def _execute(self, run: Run) -> None:
        job = run.spec
        # This task's log lines (and its stages' spans) belong to the job and its trace.
        logs.bind(job_id=job.job_id)
        tracing.join(job.trace_parent)
        try:
            if run.status == Status.WARMING_UP:
                await self._emit(run, Status.STARTED)
            # Driven by the status, so a job resumed after a restart picks up where it was.
            first, announced = stages.resume_at(self.pipeline, run.status)
            for stage in self.pipeline[first:]:
                if not announced:
                    await self._emit(run, stage.running, stage=stage.name, outcome=run.outcome)
                announced = False
                ended = await self._run_stage(run, stage)
                if is_terminal(run.status):
                    return  # its pod reported a failure, which ended the job
                end = stages.verdict(stage, ended)
                if end is not None:
                    if stage.publishes_on_failure:
                        await self._publish_what_is_left(run, end)
                    await self._end(
                        run,
                        end,
                        outcome=run.outcome if stage.is_algorithm else None,
                        results=run.results,
                        results_did=run.results_did,
                    )
                    return
            await self._end(run, stages.COMPLETED, results=run.results, results_did=run.results_did)
        except asyncio.CancelledError:
            if run.stop_requested and not is_terminal(run.status):
                # a job stopped while publishing what it left had failed already
                await self._end(run, run.failing or stages.STOPPED, outcome=run.outcome)
            if not run.stop_requested:
                raise
        except Exception:
            log.exception("job %s: engine error", job.job_id)
            if not is_terminal(run.status):
                await self._end(run, stages.ENGINE_ERROR)
        finally:
            self._running.discard(job.job_id)
            if is_terminal(run.status):
                self._runs.pop(job.job_id, None)
            self._fill()

    async def _publish_what_is_left(self, run: Run, end: JobEnd) -> None:
        """Runs the results stage for a job whose stage failed, unannounced:
        its status stays where it failed until it ends with `end`. Its pod's
        results are kept, marked partial; its failure changes nothing."""
        run.failing = end
        run.stage = self._publishing.name  # in memory only: a restart meanwhile ends the job as the stage it was in
        ended = await self._run_stage(run, self._publishing)
        if not ended.reported:
            log.warning("job %s: its partial results were not published (%s)", run.spec.job_id, ended.exit)

    async def _run_stage(self, run: Run, stage: Stage) -> StageEnd:
        job = run.spec
        run.succeeded = False
        if stage.starts_clean:
            await self.backend.prepare(job)
        exit_ = await (self._algorithm(run) if stage.is_algorithm else self._pod_stage(run, stage))
        return StageEnd(exit_, run.succeeded, stage.timeout_for(job), self.environment.disk_bytes)

    async def _algorithm(self, run: Run) -> StageExit:
        env = self.environment
        capacity = Capacity(env.cpu_cores, env.memory_bytes, env.disk_bytes, env.log_max_bytes)
        started = time.monotonic()
        try:
            exit_ = await self.backend.run_algorithm(run.spec, capacity)
        except asyncio.CancelledError:
            # The backend killed it; the stop is part of how the algorithm ended.
            run.outcome = {"stopped": True, "duration_seconds": time.monotonic() - started}
            raise
        run.outcome = exit_.to_json()
        return exit_

    async def _pod_stage(self, run: Run, stage: Stage) -> StageExit | None:
        """Runs a pod stage until its pod exits or reports how the stage ended,
        whichever comes first; None when the report came first. The pod then
        has nothing left to do but end, and its exit (interpreter teardown,
        reaping: several ms) is awaited in the background, still under the
        stage's timeout, while the job moves on."""
        run.reported.clear()
        pod = asyncio.ensure_future(self.backend.run_pod(stage, run.spec))
        reported = asyncio.ensure_future(run.reported.wait())
        try:
            await asyncio.wait({pod, reported}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pod.cancel()  # a stop: the backend kills the pod before the stop settles
            await asyncio.gather(pod, return_exceptions=True)
            raise
        finally:
            reported.cancel()
        if pod.done():
            return pod.result()
        self._ending_pods.add(pod)

        def ended(pod: asyncio.Future[StageExit]) -> None:
            self._ending_pods.discard(pod)
            if not pod.cancelled() and pod.exception() is not None:
                log.warning("job %s: a pod failed after reporting: %s", run.spec.job_id, pod.exception())

        pod.add_done_callback(ended)
        return None

    # -- state changes -------------------------------------------------------------

    async def _emit(
        self,
        run: Run,
        status: Status,
        *,
        stage: str | None = None,
        end_reason: EndReason = EndReason.NONE,
        code: str = "",
        message: str = "",
        outcome: dict[str, Any] | None = None,
        results: dict[str, Any] | None = None,
        results_did: str = "",
    ) -> None:
        check_transition(run.status, status)
        change = StateChange(
            job_id=run.spec.job_id,
            status=int(status),
            end_reason=int(end_reason),
            error_code=code,
            error_message=message,
            results=results,
            outcome=outcome,
            results_did=results_did,
        )
        run.status = status
        if stage is not None:
            run.stage = stage
        # Secrets no stage still to run reads leave the store with the change that ends their stage.
        needed = stages.secrets_needed(self.pipeline, status)
        workflow = None
        if needed != run.secrets_kept:
            workflow = redacted(run.workflow, needed)
            run.workflow, run.secrets_kept = workflow, needed
        # Shielded: a stop arriving mid-append must not leave the log and the
        # job's in-memory status disagreeing.
        await asyncio.shield(self.events.append(change, stage, workflow))

    async def _end(self, run: Run, end: JobEnd, **extra: Any) -> None:
        await self._emit(run, end.status, end_reason=end.end_reason, code=end.error_code, message=end.message, **extra)
        self.backend.release(run.spec)
        if run.task is None or run.task is not asyncio.current_task():
            self._runs.pop(run.spec.job_id, None)

    async def _expire_queued_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            limit = time.monotonic() - self.queue_timeout_s
            for job_id in [j for j in self._queue if self._runs[j].queued_at < limit]:
                self._queue.remove(job_id)
                await self._end(self._runs[job_id], stages.expired_in_queue(self.queue_timeout_s))


_SPEC_FIELDS = (
    "job_id",
    "environment_id",
    "entrypoint",
    "image",
    "allow_network",
    "algorithm_timeout_s",
    "dataset_dids",
    "algorithm_did",
    "image_tag",
    "image_checksum",
)


def _spec_to_json(fields: dict[str, Any]) -> dict[str, Any]:
    data = {name: fields.get(name, "") for name in _SPEC_FIELDS}
    data["dataset_dids"] = list(data["dataset_dids"])
    data["trace_parent"] = fields.get("trace_parent", "")  # a job may come without a trace
    return data


def _spec_from_json(data: dict[str, Any], token: str, workspace: Path) -> JobSpec:
    return JobSpec(
        job_id=data["job_id"],
        environment_id=data["environment_id"],
        token=token,
        workspace=workspace,
        entrypoint=data["entrypoint"],
        image=data["image"],
        allow_network=data["allow_network"],
        algorithm_timeout_s=float(data["algorithm_timeout_s"]),
        dataset_dids=tuple(data["dataset_dids"]),
        algorithm_did=data["algorithm_did"],
        image_tag=data.get("image_tag", ""),  # absent from jobs stored before the kubernetes backend
        image_checksum=data.get("image_checksum", ""),
        trace_parent=data.get("trace_parent", ""),  # absent from jobs stored before traces
    )
