"""Adversarial algorithms submitted as jobs to a real engine (local backend: real
pod_config / pod_publish processes, the algorithm in real bubblewrap with real
cgroups), each ending with the right status and reason in the engine's stream: the
limits (processes, memory, time, disk). Attempts to leave the sandbox are in
tests/security/test_sandbox_escapes.py."""

from __future__ import annotations

from plumbing.statuses import EndReason, Status
from services.operator_engine.backends.local import cgroups
from tests.operator_engine.engine_harness import assert_completed, engine_running, report_of, workflow
from tests.operator_engine.helpers import py


def no_cgroup_left(job_id: str) -> bool:
    name = cgroups.cgroup_name(job_id)
    return not any((place.parent / name).exists() for place in cgroups.detect().controllers.values())


FORK_BOMB = """
    import os, time
    children = 0
    try:
        while children < 5000:
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", "600"])
            children += 1
    except OSError as e:
        report(stopped_by=type(e).__name__)
    report(children=children)
"""


async def test_fork_bomb_is_contained_by_the_process_limit(data_dir, postgres_url, tmp_path):
    from services.operator_engine.backends.local.backend import MAX_PROCESSES

    async with engine_running(postgres_url, tmp_path / "ws") as engine:
        job_id = await engine.submit(workflow(py(FORK_BOMB)))
        assert_completed(await engine.ended(job_id))
        r = report_of(engine, job_id)
        assert r["stopped_by"] == "BlockingIOError"  # EAGAIN from fork: pids.max reached
        assert 0 < r["children"] <= MAX_PROCESSES
        assert no_cgroup_left(job_id)  # every sleeper died with the sandbox


MEMORY_HOG = """
    chunks = []
    for i in range(64):  # 64 x 64 MiB = 4 GiB, every page touched
        chunks.append(b"\\x01" * (64 << 20))
        print("allocated", (i + 1) * 64, "MiB", flush=True)
"""


async def test_a_4_gib_allocation_is_killed_out_of_memory(data_dir, postgres_url, tmp_path):
    async with engine_running(postgres_url, tmp_path / "ws", memory_bytes=256 << 20) as engine:
        job_id = await engine.submit(workflow(py(MEMORY_HOG)))
        end = await engine.ended(job_id)
        assert end.status == Status.ALGORITHM_FAILED
        assert end.end_reason == EndReason.FAILED
        assert "out of memory" in end.error_message
        assert end.error_message.startswith("algorithm failed: ")
        assert end.algorithm_outcome.oom_killed
        assert "allocated 4096 MiB" not in (engine.algorithm_log(job_id)).read_text()


async def test_an_infinite_loop_times_out_at_the_requested_duration(data_dir, postgres_url, tmp_path):
    async with engine_running(postgres_url, tmp_path / "ws") as engine:
        job_id = await engine.submit(workflow("while True:\n    pass\n", max_duration_s=2))
        end = await engine.ended(job_id)
        assert end.status == Status.ALGORITHM_FAILED
        assert end.end_reason == EndReason.TIMED_OUT
        assert end.error_code == "algorithm_timed_out"
        assert end.error_message == "algorithm timed out after 2 s"
        assert end.algorithm_outcome.timed_out


MANY_FILES = """
    for i in range(200):
        with open(f"/data/outputs/part-{i}", "wb") as f:
            f.write(b"x" * (1 << 20))
"""
ONE_BIG_FILE = """
    with open("/data/outputs/big", "wb") as f:
        for i in range(200):
            f.write(b"x" * (1 << 20))
"""


async def test_writing_beyond_the_disk_quota_ends_with_42(data_dir, postgres_url, tmp_path):
    async with engine_running(postgres_url, tmp_path / "ws", disk_bytes=16 << 20) as engine:
        many = await engine.submit(workflow(py(MANY_FILES)))
        big = await engine.submit(workflow(py(ONE_BIG_FILE)))
        for job_id in (many, big):
            end = await engine.ended(job_id)
            assert end.status == Status.DISK_QUOTA_EXCEEDED, (job_id, end)
            assert end.end_reason == EndReason.FAILED
            assert end.error_code == "disk_quota_exceeded"
            assert f"{16 << 20} byte disk quota" in end.error_message


async def test_a_non_zero_exit_ends_with_41_and_the_exit_code_recorded(data_dir, postgres_url, tmp_path):
    async with engine_running(postgres_url, tmp_path / "ws") as engine:
        job_id = await engine.submit(workflow("import sys\nprint('giving up')\nsys.exit(3)\n"))
        history = await engine.history(job_id)
        end = history[-1]
        assert [c.status for c in history] == [10, 20, 30, 40, 41]
        assert end.end_reason == EndReason.FAILED
        assert end.error_code == "algorithm_failed"
        assert end.error_message == "algorithm failed: exit code 3"
        assert end.HasField("algorithm_outcome") and end.algorithm_outcome.exit_code == 3
        assert "giving up" in (engine.algorithm_log(job_id)).read_text()
