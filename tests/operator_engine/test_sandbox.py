"""The local sandbox against adversarial algorithms: real bubblewrap, real cgroups, real processes.

Its limits, logs, stopping and capabilities; attempts to leave it are in
tests/security/test_sandbox_escapes.py."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.operator_engine.backends.local import cgroups
from services.operator_engine.backends.local.sandbox import (
    SandboxLimits,
    SandboxRun,
    SandboxUnavailable,
    detect_capabilities,
)
from tests.operator_engine.helpers import (
    ALGO,
    Job,
    engines_that_die,
    make_job,
    processes_of,
    py,
    run_to_end,
    sh,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
TRUNCATION_MARKER = b"[c2d] algorithm.log truncated"


def job_cgroup_dirs(job: Job) -> list[Path]:
    name = cgroups.cgroup_name(job.job_id)
    return [place.parent / name for place in cgroups.detect().controllers.values()]


# --- resource limits -------------------------------------------------------------

FORK_BOMB = """
    import errno, os, time
    report(started=True)
    while True:
        try:
            os.fork()
        except OSError as e:
            try:
                fd = os.open("/data/outputs/refused", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, errno.errorcode[e.errno].encode())
                os.close(fd)
            except FileExistsError:
                pass
            time.sleep(0.01)
"""


async def test_fork_bomb_is_contained_and_the_host_is_fine(tmp_path):
    job = make_job(tmp_path, py(FORK_BOMB))
    limits = SandboxLimits(wall_timeout_s=2, max_processes=20, cpu_cores=0.5)
    run, outcome = await run_to_end(job, limits=limits)
    assert "cgroup:pids" in run.limits_in_force
    assert (job.outputs / "refused").read_text() == "EAGAIN"  # the pids limit refused forks
    assert outcome.timed_out and outcome.describe() == "timed out after 2 s"
    assert outcome.duration_s < 3.5
    assert processes_of(job) == []
    assert subprocess.run(["/bin/true"]).returncode == 0  # the host can still fork


async def test_allocating_4_gib_under_a_memory_limit_is_oom_killed(tmp_path):
    job = make_job(
        tmp_path,
        py("""
        report(started=True)
        block = bytearray(4 << 30)  # zero-filled: every page is touched
        report(allocated=True)
    """),
    )
    run, outcome = await run_to_end(job, limits=SandboxLimits(wall_timeout_s=20, memory_bytes=128 << 20))
    assert "cgroup:memory" in run.limits_in_force
    assert outcome.oom_killed and outcome.signal == 9 and outcome.exit_code is None
    assert outcome.describe() == "killed by signal 9 (out of memory)"
    assert job.report() == {"started": True}


async def test_address_space_limit_makes_the_allocation_fail(tmp_path):
    job = make_job(tmp_path, "block = bytearray(4 << 30)\n")
    run, outcome = await run_to_end(job, limits=SandboxLimits(wall_timeout_s=20, address_space_bytes=512 << 20))
    assert "rlimit:as" in run.limits_in_force
    assert outcome.exit_code == 1 and not outcome.oom_killed
    assert outcome.describe() == "exit code 1"
    assert "MemoryError" in job.log.read_text()


async def test_infinite_loop_times_out(tmp_path):
    job = make_job(tmp_path, "while True:\n    pass\n")
    _, outcome = await run_to_end(job, limits=SandboxLimits(wall_timeout_s=1))
    assert outcome.timed_out and not outcome.stopped
    assert outcome.describe() == "timed out after 1 s"
    assert 1.0 <= outcome.duration_s < 2.0
    assert processes_of(job) == []


async def test_cpu_seconds_limit_kills_with_sigxcpu(tmp_path):
    job = make_job(tmp_path, "while True:\n    pass\n")
    run, outcome = await run_to_end(job, limits=SandboxLimits(wall_timeout_s=10, cpu_seconds=1))
    assert "rlimit:cpu" in run.limits_in_force
    assert outcome.signal == 24 and not outcome.timed_out
    assert outcome.describe() == "killed by signal 24 (CPU time limit exceeded)"


async def test_cpu_cores_quota_throttles_a_busy_loop(tmp_path):
    job = make_job(
        tmp_path,
        py("""
        import time
        start = time.monotonic()
        while time.monotonic() - start < 1.0:
            pass
        report(cpu=time.process_time())
    """),
    )
    run, outcome = await run_to_end(job, limits=SandboxLimits(wall_timeout_s=10, cpu_cores=0.2))
    assert "cgroup:cpu" in run.limits_in_force
    assert outcome.exit_code == 0, job.log.read_text()
    assert 0.05 < job.report()["cpu"] < 0.45  # about 0.2 s of CPU in 1 s of wall time


async def test_max_file_bytes_kills_a_writer_with_sigxfsz(tmp_path):
    job = make_job(tmp_path, sh("exec head -c 2097152 /dev/zero > /data/outputs/big"))
    run, outcome = await run_to_end(
        job, argv=("/bin/sh", ALGO), limits=SandboxLimits(wall_timeout_s=10, max_file_bytes=1 << 20)
    )
    assert "rlimit:fsize" in run.limits_in_force
    assert outcome.signal == 25
    assert outcome.describe() == "killed by signal 25 (file size limit exceeded)"
    assert (job.outputs / "big").stat().st_size == 1 << 20


async def test_max_file_bytes_fails_a_python_write_with_efbig(tmp_path):
    # CPython ignores SIGXFSZ, so the write raises instead
    job = make_job(tmp_path, 'open("/data/outputs/big", "wb").write(b"x" * (2 << 20))\n')
    _, outcome = await run_to_end(job, limits=SandboxLimits(wall_timeout_s=10, max_file_bytes=1 << 20))
    assert outcome.describe() == "exit code 1"
    assert "File too large" in job.log.read_text()
    assert (job.outputs / "big").stat().st_size == 1 << 20


async def test_writing_past_the_disk_quota_is_killed(tmp_path):
    job = make_job(
        tmp_path,
        py("""
        import time
        chunk = b"x" * (256 << 10)
        with open("/data/outputs/big", "wb") as f:
            for _ in range(400):  # 100 MiB, unless stopped
                f.write(chunk)
                f.flush()
                time.sleep(0.005)
        report(finished=True)
    """),
    )
    run, outcome = await run_to_end(job, limits=SandboxLimits(wall_timeout_s=20, disk_quota_bytes=2 << 20))
    assert "disk:watch" in run.limits_in_force
    assert outcome.disk_quota_exceeded and not outcome.timed_out
    assert outcome.signal == 9
    assert outcome.describe() == f"killed: disk quota of {2 << 20} bytes exceeded"
    assert outcome.duration_s < 1.5
    assert not (job.outputs / "report.json").exists()


async def test_exceeding_the_quota_and_exiting_at_once_is_still_reported(tmp_path):
    job = make_job(tmp_path, 'open("/data/outputs/big", "wb").write(b"x" * (3 << 20))\n')
    _, outcome = await run_to_end(job, limits=SandboxLimits(wall_timeout_s=20, disk_quota_bytes=2 << 20))
    assert outcome.disk_quota_exceeded and not outcome.succeeded


# --- exit status, logs, environment -------------------------------------------------


async def test_exit_code_3_is_reported(tmp_path):
    job = make_job(tmp_path, sh("echo failing; exit 3"))
    _, outcome = await run_to_end(job, argv=("/bin/sh", ALGO))
    assert (outcome.exit_code, outcome.signal) == (3, None)
    assert not (outcome.oom_killed or outcome.timed_out or outcome.stopped or outcome.disk_quota_exceeded)
    assert outcome.describe() == "exit code 3"
    assert not outcome.succeeded


async def test_job_cgroups_exist_during_the_run_and_are_removed_after(tmp_path):
    job = make_job(tmp_path, "import time; time.sleep(1)\n")
    run = await SandboxRun.start(
        job.spec(limits=SandboxLimits(wall_timeout_s=10, memory_bytes=256 << 20, max_processes=10, cpu_cores=1))
    )
    dirs = job_cgroup_dirs(job)
    assert dirs  # the released gate moves itself in, then runs the algorithm
    await wait_for(lambda: all(str(run.pid) in (d / "cgroup.procs").read_text().split() for d in dirs))
    await wait_for(lambda: processes_of(job, algorithm_only=True) != [])
    for pid in processes_of(job, algorithm_only=True):  # the algorithm's own processes are in them
        assert all(str(pid) in (d / "cgroup.procs").read_text().split() for d in dirs)
    outcome = await run.wait()
    assert outcome.exit_code == 0
    assert not any(d.exists() for d in dirs)


async def test_outcome_comes_once_the_algorithm_and_its_children_are_dead(tmp_path):
    # a child left running in the background: the pid namespace takes it down with the run
    job = make_job(
        tmp_path,
        py("""
        import subprocess, sys
        subprocess.Popen(["/bin/sleep", "60"])
        print("parent done")
        sys.exit(4)
    """),
    )
    run = await SandboxRun.start(
        job.spec(limits=SandboxLimits(wall_timeout_s=10, memory_bytes=256 << 20, max_processes=10))
    )
    early = await run.outcome()
    assert (early.exit_code, early.signal) == (4, None)
    assert processes_of(job) == []
    assert job.log.read_text() == "parent done\n"
    assert await run.wait() == early and await run.outcome() == early
    assert not any(d.exists() for d in job_cgroup_dirs(job))  # wait() includes the release


async def test_runs_of_the_same_job_back_to_back_are_not_swept_by_the_previous_watcher(tmp_path):
    # the cgroups have the same names: nothing of a run (its host-side watcher included)
    # may be left to sweep them once the next run is in
    job = make_job(tmp_path, "")
    limits = SandboxLimits(wall_timeout_s=10, memory_bytes=256 << 20, max_processes=10)
    outcomes = [(await run_to_end(job, argv=("/bin/sleep", "0.05"), limits=limits))[1] for _ in range(15)]
    assert [(o.exit_code, o.signal) for o in outcomes] == [(0, None)] * 15


async def test_stdout_and_stderr_land_in_the_log_and_can_be_followed_live(tmp_path):
    job = make_job(
        tmp_path,
        py("""
        import os, sys, time
        print("to stdout", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        while "go" not in os.listdir("/data/outputs"):  # a listing sees what the host adds (gate())
            time.sleep(0.02)
        print("done")
    """),
    )
    run = await SandboxRun.start(job.spec())
    assert run.log_path == job.log
    await wait_for(lambda: b"to stderr" in job.log.read_bytes() and b"to stdout" in job.log.read_bytes())
    assert not run._task.done()  # read while the algorithm still runs
    (job.outputs / "go").touch()
    outcome = await run.wait()
    assert outcome.exit_code == 0
    assert job.log.read_text().splitlines()[-1] == "done"


async def test_log_cap_truncates_with_one_marker_and_the_algorithm_is_not_blocked(tmp_path):
    job = make_job(
        tmp_path,
        py("""
        import sys
        for _ in range(16):
            sys.stdout.write("o" * 65536)
            sys.stderr.write("e" * 65536)
        sys.stdout.flush()
        sys.stderr.flush()
        report(done=True)
    """),
    )
    _, outcome = await run_to_end(job, limits=SandboxLimits(wall_timeout_s=20, log_max_bytes=100_000))
    assert outcome.exit_code == 0 and outcome.log_truncated
    assert job.report() == {"done": True}
    data = job.log.read_bytes()
    assert data.count(TRUNCATION_MARKER) == 1
    assert data.index(TRUNCATION_MARKER) == 100_001  # after the cap and a newline
    assert len(data) < 100_000 + 200
    assert data.endswith(b"\n")


# --- stopping ------------------------------------------------------------------

SPAWNS_A_TREE = """
    import os, subprocess, time
    subprocess.Popen(["/bin/sleep", "60"])
    if os.fork() == 0:  # a daemon: own session, its parent gone
        os.setsid()
        if os.fork() == 0:
            time.sleep(60)
        os._exit(0)
    report(ready=True)
    while True:
        time.sleep(0.1)
"""


@pytest.mark.parametrize("use_sandbox", [True, False], ids=["sandboxed", "unsandboxed"])
async def test_stop_kills_the_whole_tree_within_a_second(tmp_path, use_sandbox):
    job = make_job(tmp_path, py(SPAWNS_A_TREE))
    run = await SandboxRun.start(job.spec(use_sandbox=use_sandbox))
    await wait_for((job.outputs / "report.json").exists)
    await wait_for(lambda: len(processes_of(job)) >= 3)
    t0 = time.monotonic()
    await run.stop()
    assert time.monotonic() - t0 < 1.0
    outcome = await run.wait()
    assert outcome.stopped and not outcome.timed_out
    assert outcome.describe() == "stopped"
    assert processes_of(job) == []


async def test_stopping_a_run_that_already_ended_does_not_rewrite_its_outcome(tmp_path):
    job = make_job(tmp_path, "")
    run, outcome = await run_to_end(job, argv=("/bin/true",))
    await run.stop()
    assert await run.wait() == outcome
    assert outcome.exit_code == 0 and not outcome.stopped and outcome.succeeded


DYING_ENGINE = """
import asyncio, json, os, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from services.operator_engine.backends.local.sandbox import SandboxRun, SandboxSpec
job_id, workspace, env, delay = sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), float(sys.argv[5])
async def main():
    run = await SandboxRun.start(SandboxSpec(job_id, Path(workspace), (sys.argv[6], sys.argv[7]), env))
    time.sleep(delay)  # blocking on purpose: the engine dies at a chosen point of the start-up
    os._exit(0)        # without cleaning anything up
asyncio.run(main())
"""


async def test_engine_death_takes_the_sandbox_down_and_its_cgroup_is_reclaimed(tmp_path):
    # bwrap's own --die-with-parent misses a parent killed in bwrap's first milliseconds
    # (bubblewrap#633); dying at several points of the start-up covers those windows
    delays = [0, 0, 0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.2]
    jobs = [make_job(tmp_path, "import time; time.sleep(60)\n") for _ in delays]
    dirs = [d for job in jobs for d in job_cgroup_dirs(job)]
    try:
        await engines_that_die(DYING_ENGINE, jobs, delays)
        await wait_for(lambda: all(processes_of(job) == [] for job in jobs), timeout=5.0)
        job = jobs[-1]
        stale = job_cgroup_dirs(job)
        assert stale and all(d.exists() for d in stale)  # left behind by the dead engine
        # the same job runs again: the stale, now empty cgroup is reused
        (job.workspace / "transformations" / "algorithm").write_text("print('again')\n")
        _, outcome = await run_to_end(job)
        assert outcome.exit_code == 0 and job.log.read_text() == "again\n"
        assert not any(d.exists() for d in stale)
    finally:
        for d in dirs:  # never leave a test's cgroup on the host, even when failing
            if d.exists() and not (d / "cgroup.procs").read_text().strip():
                d.rmdir()


def test_sweep_removes_empty_job_cgroups_and_spares_live_ones():
    host = cgroups.detect()
    prefix = f"sweep-{os.getpid()}-{time.monotonic_ns()}"
    empty = cgroups.JobCgroup.create(host, f"{prefix}-empty")
    live = cgroups.JobCgroup.create(host, f"{prefix}-live")
    sleeper = subprocess.Popen(["/bin/sleep", "30"])
    try:
        for procs in live.procs_files():
            procs.write_text(str(sleeper.pid))
        removed = cgroups.sweep_empty(host, prefix)
        assert removed == len({d for _, d in empty.dirs.values()})
        assert not any(d.exists() for _, d in empty.dirs.values())
        assert all(d.exists() for _, d in live.dirs.values())
    finally:
        sleeper.kill()
        sleeper.wait()
        live.remove()
    assert not any(d.exists() for _, d in live.dirs.values())


# --- capabilities and modes -----------------------------------------------------------


def _v1_controllers() -> set[str]:
    found = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        _left, _, right = line.partition(" - ")
        fields = right.split()
        if fields and fields[0] == "cgroup":
            found.update(set(fields[2].split(",")) & {"memory", "cpu", "pids"})
    return found


def test_detect_capabilities_reports_what_is_in_force():
    caps = detect_capabilities()
    assert caps.bwrap == shutil.which("bwrap")
    assert {"rlimit:cpu", "rlimit:as", "rlimit:fsize", "disk:watch", "net:none"} <= set(caps.limits_in_force)
    # root is exempt from RLIMIT_NPROC, so it is only claimed for other users
    assert ("rlimit:nproc" in caps.limits_in_force) == (os.geteuid() != 0)
    v1 = _v1_controllers()
    if os.geteuid() == 0 and v1:
        assert caps.cgroup_version == 1
        assert {f"cgroup:{c}" for c in v1} <= set(caps.limits_in_force)
    text = caps.describe()
    assert f"bubblewrap {caps.bwrap}" in text and "net:none" in text
    assert (f"cgroup v{caps.cgroup_version}" in text) == (caps.cgroup_version is not None)


def test_detect_capabilities_without_bwrap_claims_no_sandbox(tmp_path):
    caps = detect_capabilities(bwrap=str(tmp_path / "no-bwrap"))
    assert caps.bwrap is None and "net:none" not in caps.limits_in_force
    assert caps.describe().startswith("no sandbox (bwrap not found)")


async def test_start_raises_sandbox_unavailable_when_bwrap_is_missing(tmp_path):
    job = make_job(tmp_path, "print('never')\n")
    with pytest.raises(SandboxUnavailable):
        await SandboxRun.start(job.spec(), bwrap=str(tmp_path / "no-bwrap"))
    assert not job.log.exists()
    assert not any(d.exists() for d in job_cgroup_dirs(job))
    assert processes_of(job) == []


async def test_start_raises_sandbox_unavailable_when_user_namespaces_do_not_work(tmp_path):
    # a real host without user namespaces: the engine itself runs in a bwrap that forbids them
    engine = f"""
import asyncio, sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from services.operator_engine.backends.local.sandbox import SandboxRun, SandboxSpec, SandboxUnavailable, detect_capabilities
caps = detect_capabilities()
print("bwrap:", caps.bwrap, "net:none" in caps.limits_in_force)
try:
    asyncio.run(SandboxRun.start(SandboxSpec("j", Path("/tmp/ws"), ("/bin/true",), {{}})))
    print("started")
except SandboxUnavailable as e:
    print("unavailable:", e)
"""
    prefixes = sorted({sys.prefix, sys.base_prefix, str(REPO)})
    binds = [arg for p in prefixes for arg in ("--ro-bind", p, p)]
    proc = await asyncio.create_subprocess_exec(
        shutil.which("bwrap"),
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        # /tmp first: the checkout itself may live under /tmp (CI clones anywhere).
        "--symlink",
        "usr/bin",
        "/bin",
        "--tmpfs",
        "/tmp",
        *binds,
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        sys.executable,
        "-c",
        engine,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    lines = out.decode().splitlines()
    assert lines[0] == "bwrap: None False", out
    assert lines[1].startswith("unavailable: bubblewrap cannot create a sandbox"), out
    assert "namespace" in lines[1]  # the reason is bwrap's own: no user namespace


async def test_use_sandbox_false_runs_directly_on_the_host(tmp_path):
    job = make_job(
        tmp_path,
        py(f"""
        import os, sys
        report(cwd=os.getcwd(), outputs=os.environ["OUTPUTS"], home=os.environ["HOME"],
               argv=sys.argv, sees_host=os.path.exists({str(REPO)!r}))
    """),
    )
    limits = SandboxLimits(wall_timeout_s=10, memory_bytes=256 << 20)
    run, outcome = await run_to_end(job, use_sandbox=False, limits=limits)
    assert outcome.exit_code == 0, job.log.read_text()
    ws = job.workspace.resolve()
    r = job.report()
    assert r["cwd"] == str(ws)
    assert r["outputs"] == str(ws / "outputs")  # /data rewritten to the workspace
    assert r["argv"] == [str(ws / "transformations" / "algorithm")]
    assert r["sees_host"] is True  # no namespaces...
    assert not Path(r["home"]).exists()  # ...a private HOME, removed afterwards
    assert "net:none" not in run.limits_in_force and "cgroup:memory" in run.limits_in_force
