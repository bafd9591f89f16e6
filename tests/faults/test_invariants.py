"""Each invariant of the fault trials (testkit/faults.py) reports what breaks it:
fed a violating history, the checker names the violation; fed a sound one, nothing."""

from __future__ import annotations

from testkit.faults import (
    FAULTS,
    Ending,
    EngineEvent,
    JobRow,
    JobState,
    OrderRow,
    ResultRead,
    ServiceEvent,
    check_endings,
    check_history,
    check_orders,
    check_progress,
    check_results,
    plan,
)

PATH = [10, 20, 30, 40, 60, 70]


def engine_log(job: str = "j1", statuses: list[int] = PATH, first: int = 1) -> list[EngineEvent]:
    return [EngineEvent(first + i, job, status) for i, status in enumerate(statuses)]


def service_history(log: list[EngineEvent], job: str = "j1") -> list[ServiceEvent]:
    """The history a sound service writes: its own creation row, then each engine change once."""
    rows = [ServiceEvent(1, job, 1, 0)]
    rows += [ServiceEvent(2 + i, e.job_id, e.status, e.sequence) for i, e in enumerate(log)]
    return rows


def test_a_sound_history_has_no_violation():
    log = engine_log()
    assert check_history(log, service_history(log), last_applied=len(log), jobs=["j1"]) == []


def test_a_change_applied_twice_is_reported():
    log = engine_log()
    history = service_history(log)
    history.append(ServiceEvent(99, "j1", 40, 4))  # change 4 (status 40) once more
    assert check_history(log, history, len(log), ["j1"]) == ["engine change 4 (job j1, status 40) applied 2 times"]


def test_a_lost_change_is_reported():
    log = engine_log()
    history = [row for row in service_history(log) if row.engine_sequence != 3]
    assert check_history(log, history, len(log), ["j1"]) == ["job j1: engine change 3 (status 30) lost"]


def test_a_change_not_applied_yet_is_not_lost():
    log = engine_log()
    history = [row for row in service_history(log) if row.engine_sequence < 6]
    assert check_history(log, history, last_applied=5, jobs=["j1"]) == []


def test_changes_refused_after_the_service_ended_the_job_are_not_lost():
    log = engine_log()
    history = [ServiceEvent(1, "j1", 1, 0), ServiceEvent(2, "j1", 70, 0)]  # stopped before dispatch
    assert check_history(log, history, len(log), ["j1"]) == []


def test_changes_applied_out_of_order_are_reported():
    log = engine_log()
    history = service_history(log)
    history[2], history[3] = (
        ServiceEvent(3, "j1", history[3].status, history[3].engine_sequence),
        ServiceEvent(4, "j1", history[2].status, history[2].engine_sequence),
    )
    assert check_history(log, history, len(log), ["j1"]) == [
        "job j1: engine changes applied out of order: [1, 3, 2, 4, 5, 6]"
    ]


def test_an_engine_that_logs_a_status_twice_is_reported():
    log = engine_log(statuses=[10, 20, 30, 40, 40, 60, 70])
    history = [row for row in service_history(log) if row.engine_sequence != 5]
    assert check_history(log, history, len(log), ["j1"]) == [
        "job j1: the engine logged 40 -> 40 (change 5)",
        "job j1: engine change 5 (status 40) lost",
    ]


def test_a_gap_in_the_engine_log_and_a_phantom_row_are_reported():
    log = [e for e in engine_log() if e.sequence != 3]
    history = service_history(engine_log())
    assert check_history(log, history, 6, ["j1"]) == [
        "the engine's log has gaps: sequences [3] missing",
        "job j1: history row for engine change 3, which the engine never logged",
        "job j1: the engine logged 20 -> 40 (change 4)",
    ]


def test_stuck_jobs_are_reported_and_progressing_ones_not():
    jobs = [JobState("done", 70, 500.0), JobState("moving", 40, 3.0), JobState("stuck", 20, 200.0)]
    assert check_progress(jobs, stuck_after_s=120.0) == ["job stuck stuck in status 20: no change for 200 s"]


def test_a_failed_job_without_a_reason_is_reported():
    jobs = [
        Ending("done", 70, 1, "", ""),
        Ending("full", 62, 4, "results_upload_failed", "no space left on the results storage"),
        Ending("mute", 62, 4, "", ""),
        Ending("running", 40, 0, "", ""),
    ]
    assert check_endings(jobs) == ["job mute ended in 62 (end reason 4) without a reason"]


ASSETS = frozenset({"did:op:data", "did:op:algo"})


def orders_of(job: str, request: str) -> list[OrderRow]:
    return [OrderRow(f"{job}-{did}", did, request, job) for did in sorted(ASSETS)]


def test_sound_orders_have_no_violation():
    jobs = [JobRow("j1", "r1", ASSETS, releases=False), JobRow("j2", "r2", ASSETS, releases=True)]
    assert check_orders(orders_of("j1", "r1"), jobs) == []  # j2 gave its orders back


def test_an_order_consumed_without_a_job_is_reported():
    orders = [
        *orders_of("j1", "r1"),
        OrderRow("o9", "did:op:data", "r9", None),
        OrderRow("o8", "did:op:algo", "r8", "gone"),
    ]
    assert check_orders(orders, [JobRow("j1", "r1", ASSETS, False)]) == [
        "order o9 claimed (request r9) with no job",
        "order o8 consumed by job gone, which does not exist",
    ]


def test_a_claim_whose_job_was_never_recorded_is_reported():
    orders = [OrderRow("o1", did, "r1", None) for did in sorted(ASSETS)]
    assert check_orders(orders, [JobRow("j1", "r1", ASSETS, False)]) == [
        "order o1 claimed for job j1 but not recorded as its order",
        "order o1 claimed for job j1 but not recorded as its order",
        "job j1 holds orders for [], not one per asset ['did:op:algo', 'did:op:data']",
    ]


def test_a_job_without_its_orders_is_reported():
    orders = orders_of("j1", "r1")[:1]
    assert check_orders(orders, [JobRow("j1", "r1", ASSETS, False)]) == [
        "job j1 holds orders for ['did:op:algo'], not one per asset ['did:op:algo', 'did:op:data']"
    ]


def test_results_a_stranger_reads_or_the_owner_cannot_are_reported():
    good = ResultRead("j1", 0, "", "ab" * 32, "ab" * 32, "PERMISSION_DENIED")
    leaked = ResultRead("j1", 1, "", "cd" * 32, "cd" * 32, "")
    unreadable = ResultRead("j2", 0, "NOT_FOUND: gone", "ef" * 32, "", "NOT_FOUND")
    corrupt = ResultRead("j3", 0, "", "ab" * 32, "ff" * 32, "NOT_FOUND")
    assert check_results([good, leaked, unreadable, corrupt], finished_without_results=["j4"]) == [
        "job j4 finished without a result file",
        "job j1 result 1: a stranger got the file",
        "job j2 result 0: its owner could not read it (NOT_FOUND: gone)",
        "job j3 result 0: its owner read ffffffffffff, the manifest says abababababab",
    ]


def test_a_seed_replays_the_same_trial_and_consecutive_seeds_cover_every_fault():
    assert plan(12) == plan(12)
    for start in range(0, 3 * len(FAULTS), len(FAULTS)):
        assert {plan(seed).fault for seed in range(start, start + len(FAULTS))} == set(FAULTS)
    # a lost commit reply is drawn for 1-3 COMMITs; no other fault counts any
    assert {plan(seed).commits for seed in range(80) if plan(seed).fault == "lose_commit_reply"} == {1, 2, 3}
    assert {plan(seed).commits for seed in range(80) if plan(seed).fault != "lose_commit_reply"} == {0}
