"""A job's stages as data, and how the end of each decides the job's status.

A job runs configure (pod_config) -> algorithm -> publish (pod_publish). Each
stage is one row of `pipeline()`: what runs (a pod program, or the
algorithm, which is the backend's own call), its timeout, what its pod may
report, and the status and error codes it fails with. The orchestrator
drives the rows with one loop; `verdict` turns how a stage ended into the
job's status. Everything here is pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from plumbing.statuses import FAILURES, EndReason, Status, is_terminal
from plumbing.workflows import Secret
from services.operator_engine.domain.jobs import JobSpec, StageExit


@dataclass(frozen=True)
class JobEnd:
    """How a job ends: its last status, why, and for a failure a code and a message."""

    status: Status
    end_reason: EndReason
    error_code: str = ""
    message: str = ""


@dataclass(frozen=True)
class Failure:
    """A stage's error code and message; the message is a str.format template
    over {timeout_s}, {exit_code}, {detail} and {disk_bytes}."""

    code: str
    message: str


@dataclass(frozen=True)
class Stage:
    name: str  # the job's stage while it runs, stored with its status: where recovery resumes
    running: Status  # announced when the stage starts
    program: str  # the pod program that runs it (entry point of group c2d.pods); "" for the algorithm
    failure: Status  # the job's status when the stage fails
    timed_out: Failure
    crashed: Failure  # a pod that ended without reporting success; an algorithm that failed
    timeout_s: float | None = None  # None: the job's own (its algorithm's maximum duration)
    reports: frozenset[Status] = frozenset()  # what its pod may report through JobAgentService
    succeeded: Status | None = None  # the status its pod reports when the stage succeeded
    reports_results: bool = False  # its pod reports the job's results, which is its success
    starts_clean: bool = False  # runs in an emptied workspace (a retried configure starts over)
    rerun_after_restart: bool = True  # idempotent: an engine restart runs it again
    reads: frozenset[Secret] = frozenset()  # the workflow's secrets its pod reads: kept until it is over
    # When it fails (its failure status, a timeout or a full disk), the job still
    # runs the results stage before it ends, as Ocean's does: the algorithm's log
    # and whatever outputs exist are published, marked partial, and the job keeps
    # its failure status.
    publishes_on_failure: bool = False

    def __post_init__(self) -> None:
        # A pod reports how its stage failed or that it succeeded, nothing else; and
        # a pod stage needs a way to say it succeeded (the algorithm's exit says it).
        if not self.reports <= FAILURES | {self.succeeded}:
            raise ValueError(f"stage {self.name}: a pod may report only failures or {self.succeeded}")
        if bool(self.program) != bool(self.succeeded or self.reports_results):
            raise ValueError(f"stage {self.name}: a pod stage, and only one, succeeds by its pod's report")

    @property
    def is_algorithm(self) -> bool:
        return not self.program

    def timeout_for(self, job: JobSpec) -> float:
        return job.algorithm_timeout_s if self.timeout_s is None else self.timeout_s


def pipeline(configure_timeout_s: float, publish_timeout_s: float) -> tuple[Stage, ...]:
    """The stages every job runs, in order."""
    return (
        Stage(
            name="configure",
            running=Status.CONFIGURING_VOLUMES,
            program="pod_config",
            timeout_s=configure_timeout_s,
            failure=Status.DATA_PROVISIONING_FAILED,
            timed_out=Failure("configure_timed_out", "configuring the job took longer than {timeout_s:g} s"),
            crashed=Failure(
                "configure_crashed", "pod_config ended without reporting success (exit code {exit_code}) {detail}"
            ),
            reports=frozenset(
                {
                    Status.PROVISIONING_SUCCESS,
                    Status.DATA_PROVISIONING_FAILED,
                    Status.ALGORITHM_PROVISIONING_FAILED,
                    Status.DISK_QUOTA_EXCEEDED,
                }
            ),
            succeeded=Status.PROVISIONING_SUCCESS,
            starts_clean=True,
            reads=frozenset({Secret.LOCATIONS}),
        ),
        Stage(
            name="algorithm",
            running=Status.RUNNING_ALGORITHM,
            program="",
            failure=Status.ALGORITHM_FAILED,
            timed_out=Failure("algorithm_timed_out", "algorithm timed out after {timeout_s:g} s"),
            crashed=Failure("algorithm_failed", "algorithm failed: {detail}"),
            # Its process died with the engine, and what it did cannot be known.
            rerun_after_restart=False,
            publishes_on_failure=True,
        ),
        Stage(
            name="publish",
            running=Status.PUBLISHING_RESULTS,
            program="pod_publish",
            timeout_s=publish_timeout_s,
            failure=Status.RESULTS_UPLOAD_FAILED,
            timed_out=Failure("publish_timed_out", "publishing took longer than {timeout_s:g} s"),
            crashed=Failure(
                "publish_crashed", "pod_publish ended without reporting results (exit code {exit_code}) {detail}"
            ),
            reports=frozenset({Status.RESULTS_FETCH_FAILED, Status.RESULTS_UPLOAD_FAILED}),
            reports_results=True,
            reads=frozenset({Secret.GRANT}),
        ),
    )


@dataclass(frozen=True)
class StageEnd:
    """How a stage ended, as the stage loop saw it."""

    exit: StageExit | None  # None: its pod reported first, and its exit was not awaited
    reported: bool = False  # its pod reported that the stage succeeded
    timeout_s: float = 0.0  # the timeout it ran under
    disk_bytes: int = 0  # the job's disk quota


DISK_QUOTA = Failure("disk_quota_exceeded", "the job wrote more than its {disk_bytes} byte disk quota")
COMPLETED = JobEnd(Status.FINISHED, EndReason.COMPLETED)
STOPPED = JobEnd(Status.FINISHED, EndReason.STOPPED, "stopped", "stopped by its owner")
ENGINE_ERROR = JobEnd(Status.FINISHED, EndReason.FAILED, "engine_error", "the engine failed; see its log")


def verdict(stage: Stage, end: StageEnd) -> JobEnd | None:
    """The job's end when `stage` ended this way; None when the stage succeeded
    and the job goes on (after the last stage: COMPLETED)."""
    if end.reported:
        return None  # its pod said so, whatever its exit says after that
    exit_ = end.exit
    if exit_ is None:
        raise ValueError(f"the {stage.name} stage ended with neither an exit nor a report")
    facts = {"timeout_s": end.timeout_s, "exit_code": exit_.exit_code, "detail": exit_.detail}
    if exit_.disk_quota_exceeded:
        return _failed(Status.DISK_QUOTA_EXCEEDED, EndReason.FAILED, DISK_QUOTA, disk_bytes=end.disk_bytes)
    if exit_.timed_out:
        return _failed(stage.failure, EndReason.TIMED_OUT, stage.timed_out, **facts)
    if exit_.not_started:  # no exit code to speak of: the reason is the backend's whole message
        return JobEnd(stage.failure, EndReason.FAILED, stage.crashed.code, exit_.detail)
    if stage.is_algorithm and exit_.succeeded:
        return None
    return _failed(stage.failure, EndReason.FAILED, stage.crashed, **facts)


def publishing_stage(stages: Sequence[Stage]) -> Stage:
    """The stage whose pod reports the job's results."""
    return next(stage for stage in stages if stage.reports_results)


def _failed(status: Status, reason: EndReason, failure: Failure, **facts: object) -> JobEnd:
    return JobEnd(status, reason, failure.code, failure.message.format(**facts).strip())


def reported_failure(status: Status, code: str, message: str) -> JobEnd:
    """A pod reported that its stage failed, with this status."""
    return JobEnd(status, EndReason.FAILED, code or "stage_failed", message)


def engine_restarted(stage: Stage) -> JobEnd:
    """The engine restarted while a stage that cannot be run again was running."""
    return JobEnd(stage.failure, EndReason.FAILED, "engine_restarted", f"engine restarted during {stage.name}")


def expired_in_queue(queue_timeout_s: float) -> JobEnd:
    return JobEnd(
        Status.FINISHED,
        EndReason.EXPIRED_IN_QUEUE,
        "expired_in_queue",
        f"the job waited more than {queue_timeout_s:g} s for room in its environment",
    )


def resume_at(stages: Sequence[Stage], status: Status) -> tuple[int, bool]:
    """Where a started job whose last status is `status` goes on: the index of
    the stage it runs next, and whether that stage was announced already (a
    stage that was running when the engine stopped runs again, unannounced)."""
    for index, stage in enumerate(stages):
        if status == stage.running:
            return index, True
        if status == stage.succeeded:
            return index + 1, False
    return 0, False


def secrets_needed(stages: Sequence[Stage], status: Status) -> frozenset[Secret]:
    """The workflow's secrets that the stages a job at `status` may still run
    read, counting a stage that runs again after an engine restart; none once
    the job has ended."""
    if is_terminal(status):
        return frozenset()
    first, _ = resume_at(stages, status)
    return frozenset().union(*(stage.reads for stage in stages[first:]))
