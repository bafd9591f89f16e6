"""The stage table and "how a stage ended -> the job's status", table-driven:
pure functions, no asyncio, no I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from plumbing.statuses import EndReason, Status
from plumbing.workflows import Secret
from services.operator_engine.domain import stages
from services.operator_engine.domain.jobs import JobSpec, StageExit
from services.operator_engine.domain.stages import Failure, JobEnd, Stage, StageEnd

CONFIGURE, ALGORITHM, PUBLISH = stages.pipeline(configure_timeout_s=2, publish_timeout_s=600)
QUOTA = 1 << 20


def ended(exit_: StageExit | None, *, reported: bool = False, timeout_s: float = 5) -> StageEnd:
    return StageEnd(exit_, reported=reported, timeout_s=timeout_s, disk_bytes=QUOTA)


def failed(status: Status, code: str, message: str) -> JobEnd:
    return JobEnd(status, EndReason.FAILED, code, message)


def timed_out(status: Status, code: str, message: str) -> JobEnd:
    return JobEnd(status, EndReason.TIMED_OUT, code, message)


@pytest.mark.parametrize(
    ("stage", "end", "expected"),
    [
        # configure: its pod's report of 30 is its success, whenever it comes
        (CONFIGURE, ended(None, reported=True), None),
        (CONFIGURE, ended(StageExit(0), reported=True), None),
        (CONFIGURE, ended(StageExit(1), reported=True), None),
        (
            CONFIGURE,
            ended(StageExit(None, timed_out=True), timeout_s=2),
            timed_out(
                Status.DATA_PROVISIONING_FAILED, "configure_timed_out", "configuring the job took longer than 2 s"
            ),
        ),
        (
            CONFIGURE,
            ended(StageExit(0)),
            failed(
                Status.DATA_PROVISIONING_FAILED,
                "configure_crashed",
                "pod_config ended without reporting success (exit code 0)",
            ),
        ),
        (
            CONFIGURE,
            ended(StageExit(None, detail="the pod launcher process exited")),
            failed(
                Status.DATA_PROVISIONING_FAILED,
                "configure_crashed",
                "pod_config ended without reporting success (exit code None) the pod launcher process exited",
            ),
        ),
        # a stage whose pod never started: the backend's reason is the whole message
        (
            CONFIGURE,
            ended(StageExit(None, not_started=True, detail="configure pod cannot be scheduled: 0/1 nodes")),
            failed(
                Status.DATA_PROVISIONING_FAILED, "configure_crashed", "configure pod cannot be scheduled: 0/1 nodes"
            ),
        ),
        (
            ALGORITHM,
            ended(StageExit(0, not_started=True, detail="algorithm pod cannot get its image (x): ErrImagePull")),
            failed(Status.ALGORITHM_FAILED, "algorithm_failed", "algorithm pod cannot get its image (x): ErrImagePull"),
        ),
        # the algorithm: its exit says how it went
        (ALGORITHM, ended(StageExit(0, detail="exit code 0")), None),
        (
            ALGORITHM,
            ended(StageExit(3, detail="exit code 3")),
            failed(Status.ALGORITHM_FAILED, "algorithm_failed", "algorithm failed: exit code 3"),
        ),
        (
            ALGORITHM,
            ended(StageExit(None, signal=9, oom_killed=True, detail="killed: out of memory")),
            failed(Status.ALGORITHM_FAILED, "algorithm_failed", "algorithm failed: killed: out of memory"),
        ),
        (
            ALGORITHM,
            ended(StageExit(0, oom_killed=True, detail="out of memory")),  # exit 0 is not enough
            failed(Status.ALGORITHM_FAILED, "algorithm_failed", "algorithm failed: out of memory"),
        ),
        (
            ALGORITHM,
            ended(StageExit(None, timed_out=True, detail="timed out"), timeout_s=5),
            timed_out(Status.ALGORITHM_FAILED, "algorithm_timed_out", "algorithm timed out after 5 s"),
        ),
        (
            ALGORITHM,
            ended(StageExit(None, disk_quota_exceeded=True, timed_out=True)),  # the quota wins
            failed(
                Status.DISK_QUOTA_EXCEEDED, "disk_quota_exceeded", "the job wrote more than its 1048576 byte disk quota"
            ),
        ),
        # publish: its pod's results are its success
        (PUBLISH, ended(None, reported=True), None),
        (PUBLISH, ended(StageExit(0), reported=True), None),
        (
            PUBLISH,
            ended(StageExit(None, timed_out=True), timeout_s=600),
            timed_out(Status.RESULTS_UPLOAD_FAILED, "publish_timed_out", "publishing took longer than 600 s"),
        ),
        (
            PUBLISH,
            ended(StageExit(0)),
            failed(
                Status.RESULTS_UPLOAD_FAILED,
                "publish_crashed",
                "pod_publish ended without reporting results (exit code 0)",
            ),
        ),
        (
            PUBLISH,
            ended(StageExit(-9)),
            failed(
                Status.RESULTS_UPLOAD_FAILED,
                "publish_crashed",
                "pod_publish ended without reporting results (exit code -9)",
            ),
        ),
    ],
)
def test_how_a_stage_ended_decides_the_jobs_status(stage: Stage, end: StageEnd, expected: JobEnd | None) -> None:
    assert stages.verdict(stage, end) == expected


def test_a_stage_that_neither_exited_nor_reported_has_no_verdict() -> None:
    with pytest.raises(ValueError, match="neither an exit nor a report"):
        stages.verdict(CONFIGURE, ended(None))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status.STARTED, (0, False)),  # configure, announced first
        (Status.CONFIGURING_VOLUMES, (0, True)),  # configure again, not announced twice
        (Status.PROVISIONING_SUCCESS, (1, False)),  # the algorithm next
        (Status.RUNNING_ALGORITHM, (1, True)),
        (Status.PUBLISHING_RESULTS, (2, True)),  # publish again
    ],
)
def test_where_a_job_goes_on_after_a_restart(status: Status, expected: tuple[int, bool]) -> None:
    assert stages.resume_at((CONFIGURE, ALGORITHM, PUBLISH), status) == expected


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        (stages.STOPPED, (Status.FINISHED, EndReason.STOPPED, "stopped", "stopped by its owner")),
        (stages.COMPLETED, (Status.FINISHED, EndReason.COMPLETED, "", "")),
        (
            stages.ENGINE_ERROR,
            (Status.FINISHED, EndReason.FAILED, "engine_error", "the engine failed; see its log"),
        ),
        (
            stages.engine_restarted(ALGORITHM),
            (Status.ALGORITHM_FAILED, EndReason.FAILED, "engine_restarted", "engine restarted during algorithm"),
        ),
        (
            stages.expired_in_queue(3600),
            (
                Status.FINISHED,
                EndReason.EXPIRED_IN_QUEUE,
                "expired_in_queue",
                "the job waited more than 3600 s for room in its environment",
            ),
        ),
        (
            stages.reported_failure(Status.ALGORITHM_PROVISIONING_FAILED, "checksum_mismatch", "files differ"),
            (Status.ALGORITHM_PROVISIONING_FAILED, EndReason.FAILED, "checksum_mismatch", "files differ"),
        ),
        (
            stages.reported_failure(Status.DATA_PROVISIONING_FAILED, "", "no code given"),
            (Status.DATA_PROVISIONING_FAILED, EndReason.FAILED, "stage_failed", "no code given"),
        ),
    ],
)
def test_the_other_ways_a_job_ends(end: JobEnd, expected: tuple[Status, EndReason, str, str]) -> None:
    assert (end.status, end.end_reason, end.error_code, end.message) == expected


def test_the_pipeline_runs_configure_the_algorithm_and_publish() -> None:
    job = JobSpec("j", "local-cpu", "t", Path("/w"), "python3 $ALGO", "python", False, 42.0, ("did:op:x",), "")
    assert [(s.name, s.running, s.program, s.failure, s.timeout_for(job)) for s in (CONFIGURE, ALGORITHM, PUBLISH)] == [
        ("configure", Status.CONFIGURING_VOLUMES, "pod_config", Status.DATA_PROVISIONING_FAILED, 2),
        ("algorithm", Status.RUNNING_ALGORITHM, "", Status.ALGORITHM_FAILED, 42.0),  # the job's own timeout
        ("publish", Status.PUBLISHING_RESULTS, "pod_publish", Status.RESULTS_UPLOAD_FAILED, 600),
    ]
    assert [s.rerun_after_restart for s in (CONFIGURE, ALGORITHM, PUBLISH)] == [True, False, True]
    assert CONFIGURE.starts_clean and not PUBLISH.starts_clean
    assert PUBLISH.reports == {Status.RESULTS_FETCH_FAILED, Status.RESULTS_UPLOAD_FAILED}


def test_a_stage_table_row_that_cannot_work_is_refused() -> None:
    fail = Failure("x", "x")
    with pytest.raises(ValueError, match="may report only failures"):
        Stage(
            "configure",
            Status.CONFIGURING_VOLUMES,
            "pod_config",
            Status.DATA_PROVISIONING_FAILED,
            fail,
            fail,
            reports=frozenset({Status.RUNNING_ALGORITHM}),
            succeeded=Status.PROVISIONING_SUCCESS,
        )
    with pytest.raises(ValueError, match="succeeds by its pod's report"):
        Stage("publish", Status.PUBLISHING_RESULTS, "pod_publish", Status.RESULTS_UPLOAD_FAILED, fail, fail)


@pytest.mark.parametrize(
    ("status", "needed"),
    [
        # pod_config has yet to run, or runs again after a restart: the locations; pod_publish: the grant
        (Status.WARMING_UP, {Secret.LOCATIONS, Secret.GRANT}),
        (Status.STARTED, {Secret.LOCATIONS, Secret.GRANT}),
        (Status.CONFIGURING_VOLUMES, {Secret.LOCATIONS, Secret.GRANT}),
        # staging is over: only pod_publish's grant is still needed
        (Status.PROVISIONING_SUCCESS, {Secret.GRANT}),
        (Status.RUNNING_ALGORITHM, {Secret.GRANT}),
        (Status.PUBLISHING_RESULTS, {Secret.GRANT}),
        # ended, however: nothing
        (Status.DATA_PROVISIONING_FAILED, set()),
        (Status.ALGORITHM_FAILED, set()),
        (Status.RESULTS_UPLOAD_FAILED, set()),
        (Status.FINISHED, set()),
    ],
)
def test_the_secrets_a_job_still_needs(status, needed):
    assert stages.secrets_needed(stages.pipeline(2, 600), status) == needed
