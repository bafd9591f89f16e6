"""Adversarial algorithms submitted as jobs to a real engine (local backend: real
pod_config / pod_publish processes, the algorithm in real bubblewrap with real
cgroups), each ending with the right status and reason in the engine's stream."""

from __future__ import annotations

import json
import socket

from plumbing.statuses import EndReason, Status
from services.operator_engine.backends.local import cgroups
from tests.operator_engine.engine_harness import DATASET_DIR, engine_running, workflow
from tests.operator_engine.helpers import py


def report_of(engine, job_id: str) -> dict:  # type: ignore[no-untyped-def]
    return json.loads((engine.data(job_id) / "outputs" / "report.json").read_text())


def assert_completed(change) -> None:  # type: ignore[no-untyped-def]
    assert change.status == Status.FINISHED, change
    assert change.end_reason == EndReason.COMPLETED, change


def no_cgroup_left(job_id: str) -> bool:
    name = cgroups.cgroup_name(job_id)
    return not any((place.parent / name).exists() for place in cgroups.detect().controllers.values())


NETWORK = """
    import socket
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
        report(connect="connected")
    except OSError as e:
        report(connect=type(e).__name__)
    try:
        socket.getaddrinfo("example.com", 443)
        report(dns="resolved")
    except OSError as e:
        report(dns=type(e).__name__)
    report(interfaces=sorted(name for _, name in socket.if_nameindex()))
"""


async def test_without_network_loopback_and_dns_fail_and_allow_network_gives_a_network_of_its_own(
    data_dir, postgres_url, tmp_path
):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        code = py(NETWORK.format(port=listener.getsockname()[1]))
        async with engine_running(postgres_url, tmp_path / "ws") as engine:
            closed = await engine.submit(workflow(code))
            opened = await engine.submit(workflow(code, allow_network=True))
            assert_completed(await engine.ended(closed))
            assert_completed(await engine.ended(opened))
            assert report_of(engine, closed) == {
                "connect": "ConnectionRefusedError",
                "dns": "gaierror",
                "interfaces": ["lo"],
            }
            # a network of its own (test_job_network.py): an interface out, and the host's
            # loopback listener is not on it
            assert report_of(engine, opened)["interfaces"] == ["lo", "tap0"]
            assert report_of(engine, opened)["connect"] == "ConnectionRefusedError"
            environment = await engine.environment()
            assert "no network unless allowed" in environment.description


SNOOP = """
    import os
    def attempt(name, fn):
        try:
            fn()
            report(**{name: "succeeded"})
        except OSError as e:
            report(**{name: type(e).__name__})
    attempt("shadow", lambda: open("/etc/shadow").read())
    attempt("other_job_host_path", lambda: open("%(other)s/inputs/%(did)s/0").read())
    attempt("other_job_listing", lambda: os.listdir("%(workspaces)s"))
    attempt("engine_database", lambda: os.listdir("%(data_dir)s"))
    report(data_entries=sorted(os.listdir("/data")), own_input=open("/data/inputs/%(did)s/0").read())
"""


async def test_another_jobs_workspace_and_etc_shadow_cannot_be_read(data_dir, postgres_url, tmp_path):
    workspaces = tmp_path / "ws"
    async with engine_running(postgres_url, workspaces) as engine:
        victim = await engine.submit(workflow(py("report(ok=1)")))
        assert_completed(await engine.ended(victim))
        code = py(
            SNOOP % {"other": engine.data(victim), "did": DATASET_DIR, "workspaces": workspaces, "data_dir": data_dir}
        )
        snoop = await engine.submit(workflow(code))
        assert_completed(await engine.ended(snoop))
        r = report_of(engine, snoop)
        assert r["shadow"] == "FileNotFoundError"  # not even there: /etc holds only the loader's files
        assert r["other_job_host_path"] == "FileNotFoundError"
        assert r["other_job_listing"] == "FileNotFoundError"
        assert r["engine_database"] == "FileNotFoundError"
        assert r["data_entries"] == ["ddos", "inputs", "logs", "outputs", "transformations"]
        assert r["own_input"] == "the dataset\n"


SCRIBBLE = """
    def attempt(name, path):
        try:
            with open(path, "w") as f:
                f.write("pwned")
            report(**{name: "succeeded"})
        except OSError as e:
            report(**{name: type(e).__name__})
    attempt("inputs", "/data/inputs/%(did)s/0")
    attempt("new_input", "/data/inputs/new")
    attempt("transformations", "/data/transformations/algorithm")
    attempt("ddos", "/data/ddos/x")
    attempt("data_root", "/data/x")
    attempt("usr", "/usr/x")
    attempt("etc", "/etc/x")
    attempt("root", "/x")
    attempt("host_workspace", "%(own)s/inputs/new")
    attempt("tmp", "/tmp/x")
    attempt("outputs", "/data/outputs/x")
"""


async def test_writes_outside_outputs_fail_and_leave_the_host_untouched(data_dir, postgres_url, tmp_path):
    async with engine_running(postgres_url, tmp_path / "ws") as engine:
        job_id = "scribbler-1"
        own = engine.data(job_id)
        assert_completed(
            await engine.ended(await engine.submit(workflow(py(SCRIBBLE % {"did": DATASET_DIR, "own": own})), job_id))
        )
        r = report_of(engine, job_id)
        for place in ("inputs", "new_input", "transformations", "ddos", "data_root", "usr", "etc", "root"):
            assert r[place] in ("OSError", "PermissionError"), (place, r[place])  # EROFS
        assert r["host_workspace"] == "FileNotFoundError"
        assert r["tmp"] == r["outputs"] == "succeeded"  # a private /tmp and the outputs are writable
        assert (own / "inputs" / DATASET_DIR / "0").read_text() == "the dataset\n"
        assert not (own / "inputs" / "new").exists()
        assert (own / "outputs" / "x").read_text() == "pwned"


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
