"""The job state machine: Ocean's status numbers and the legal moves between them.

Every writer of a job's status (the engine's orchestrator, the
operator-service's appliers) asks `check_transition` first. A job ends in
FINISHED (70) or in one of the failure statuses; ended jobs never change.
"""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    WARMING_UP = 1
    STARTED = 10
    CONFIGURING_VOLUMES = 20
    PROVISIONING_SUCCESS = 30
    DATA_PROVISIONING_FAILED = 31
    ALGORITHM_PROVISIONING_FAILED = 32
    RUNNING_ALGORITHM = 40
    ALGORITHM_FAILED = 41
    DISK_QUOTA_EXCEEDED = 42
    FILTERING_RESULTS = 50
    PUBLISHING_RESULTS = 60
    RESULTS_FETCH_FAILED = 61
    RESULTS_UPLOAD_FAILED = 62
    FINISHED = 70


class EndReason(enum.IntEnum):
    NONE = 0
    COMPLETED = 1
    STOPPED = 2
    TIMED_OUT = 3
    FAILED = 4
    EXPIRED_IN_QUEUE = 5


TEXT = {
    Status.WARMING_UP: "Warming up",
    Status.STARTED: "Job started",
    Status.CONFIGURING_VOLUMES: "Configuring volumes",
    Status.PROVISIONING_SUCCESS: "Provisioning success",
    Status.DATA_PROVISIONING_FAILED: "Data provisioning failed",
    Status.ALGORITHM_PROVISIONING_FAILED: "Algorithm provisioning failed",
    Status.RUNNING_ALGORITHM: "Running algorithm",
    Status.ALGORITHM_FAILED: "Algorithm failed",
    Status.DISK_QUOTA_EXCEEDED: "Disk quota exceeded",
    Status.FILTERING_RESULTS: "Filtering results",
    Status.PUBLISHING_RESULTS: "Publishing results",
    Status.RESULTS_FETCH_FAILED: "Results fetch failed",
    Status.RESULTS_UPLOAD_FAILED: "Results upload failed",
    Status.FINISHED: "Job finished",
}

FAILURES = frozenset(
    {
        Status.DATA_PROVISIONING_FAILED,
        Status.ALGORITHM_PROVISIONING_FAILED,
        Status.ALGORITHM_FAILED,
        Status.DISK_QUOTA_EXCEEDED,
        Status.RESULTS_FETCH_FAILED,
        Status.RESULTS_UPLOAD_FAILED,
    }
)
TERMINAL = FAILURES | {Status.FINISHED}

# The forward path of a job; any running job may also end (FINISHED: stopped,
# timed out, expired in queue, failed for a reason with no status of its own).
_FORWARD = {
    Status.WARMING_UP: {Status.STARTED},
    Status.STARTED: {Status.CONFIGURING_VOLUMES},
    Status.CONFIGURING_VOLUMES: {
        Status.PROVISIONING_SUCCESS,
        Status.DATA_PROVISIONING_FAILED,
        Status.ALGORITHM_PROVISIONING_FAILED,
        Status.DISK_QUOTA_EXCEEDED,
    },
    Status.PROVISIONING_SUCCESS: {Status.RUNNING_ALGORITHM},
    Status.RUNNING_ALGORITHM: {
        Status.ALGORITHM_FAILED,
        Status.DISK_QUOTA_EXCEEDED,
        Status.FILTERING_RESULTS,
        Status.PUBLISHING_RESULTS,
    },
    Status.FILTERING_RESULTS: {Status.PUBLISHING_RESULTS},
    Status.PUBLISHING_RESULTS: {Status.RESULTS_FETCH_FAILED, Status.RESULTS_UPLOAD_FAILED},
}


class IllegalTransition(Exception):
    """A status change the state machine refuses (kind: failed_precondition)."""

    kind = "failed_precondition"

    def __init__(self, current: Status, new: Status) -> None:
        self.current, self.new = current, new
        self.code = "illegal_transition"
        if current in TERMINAL:
            self.message = f"job already ended with status {int(current)} ({TEXT[current]})"
        else:
            self.message = f"a job in status {int(current)} ({TEXT[current]}) cannot move to {int(new)} ({TEXT[new]})"
        super().__init__(self.message)


def is_terminal(status: int) -> bool:
    return status in TERMINAL


def can_transition(current: int, new: int) -> bool:
    current, new = Status(current), Status(new)
    if current in TERMINAL:
        return False
    return new is Status.FINISHED or new in _FORWARD.get(current, ())


def check_transition(current: int, new: int) -> None:
    if not can_transition(current, new):
        raise IllegalTransition(Status(current), Status(new))


def end_reason_for(status: int, requested: EndReason = EndReason.NONE) -> EndReason:
    """The end reason a terminal status implies, unless one was given."""
    if requested is not EndReason.NONE:
        return requested
    if status in FAILURES:
        return EndReason.FAILED
    if status == Status.FINISHED:
        return EndReason.COMPLETED
    return EndReason.NONE


# Codes of a job that ended (70, failed) before its algorithm for the
# engine's own reasons; an engine's refusal of a job may be the consumer's
# doing (its raw algorithm's container), so it is not here.
ENGINE_FAULTS = frozenset({"engine_error", "engine_restarted"})


def releases_orders(status: int, end_reason: int, error_code: str, algorithm_ran: bool, raw_algorithm: bool) -> bool:
    """Whether a job's orders go back to its consumer: it ended before its
    algorithm started, for a reason the consumer did not cause (a publisher's
    file unreachable or mismatched, the engine lost or failing, the job
    expired in its queue). A job its owner stopped, or whose algorithm ran,
    keeps them spent. A raw algorithm is the consumer's own file, so its
    staging failure (32) is the consumer's; so is a full disk (42: the
    consumer chose the environment)."""
    if not is_terminal(status) or algorithm_ran or end_reason == EndReason.STOPPED:
        return False
    if status == Status.DATA_PROVISIONING_FAILED:
        return True  # the datasets' files, or pod_config itself: never the consumer's
    if status == Status.ALGORITHM_PROVISIONING_FAILED:
        return not raw_algorithm
    if status != Status.FINISHED:
        return False
    return end_reason == EndReason.EXPIRED_IN_QUEUE or (end_reason == EndReason.FAILED and error_code in ENGINE_FAULTS)
