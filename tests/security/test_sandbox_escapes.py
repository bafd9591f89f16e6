"""Sandbox escapes: a hostile algorithm tries to leave its sandbox.

The attack: the consumer's own algorithm, run on the publisher's data, tries
to reach what is not its job's: the host's network and loopback services,
other jobs' workspaces, host secrets (/etc/shadow, the data directory), host
paths (its mount table, /proc), to write outside its outputs, to remount the
read-only parts, to gain privileges or a user namespace, or to be root on
the host.

The guarantee: it sees /data (its own inputs read-only, its outputs
writable), a minimal /etc, a private /tmp and its own processes; nothing of
the host or of other jobs, no host path, no capability, an unprivileged uid
inside and out, and (unless its dataset allows the network) no network but
its own loopback. Real bubblewrap and cgroups: the sandbox alone
(`SandboxRun`) and through a real engine. A network-allowed job's own
network is tests/security/test_job_network.py; resource exhaustion (fork
bombs, memory, disk, CPU) is the sandbox's limits, tested with them in
tests/operator_engine/test_sandbox.py and test_engine_adversarial.py.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from services.operator_engine.backends.local.sandbox import SandboxRun, host_uid
from tests.operator_engine.engine_harness import DATASET_DIR, assert_completed, engine_running, report_of, workflow
from tests.operator_engine.helpers import (
    ALGO,
    DATASET_DID,
    make_job,
    processes_of,
    py,
    run_to_end,
    sh,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]

# --- the sandbox alone (SandboxRun) ------------------------------------------------

CONNECT_AND_RESOLVE = """
    import socket
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
        report(connect="connected")
    except OSError as e:
        report(connect=type(e).__name__)
    for host in ("example.com", "localhost"):
        try:
            socket.getaddrinfo(host, 443)
            report(**{{"dns_" + host: "resolved"}})
        except OSError as e:
            report(**{{"dns_" + host: type(e).__name__}})
    report(interfaces=sorted(name for _, name in socket.if_nameindex()))
"""


def listening_socket() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener


async def test_without_network_host_loopback_and_dns_are_unreachable(tmp_path):
    with listening_socket() as listener:
        job = make_job(tmp_path, py(CONNECT_AND_RESOLVE.format(port=listener.getsockname()[1])))
        _, outcome = await run_to_end(job)
        assert outcome.exit_code == 0, job.log.read_text()
        r = job.report()
        assert r["connect"] == "ConnectionRefusedError"
        assert r["dns_example.com"] == "gaierror"
        assert r["interfaces"] == ["lo"]  # its own empty network namespace
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing ever reached the host's listener
            listener.accept()


async def test_cannot_see_other_jobs_host_secrets_or_host_dirs(tmp_path):
    other = make_job(tmp_path, "")
    secret = other.workspace / "inputs" / "secret.csv"
    secret.write_text("another consumer's data")
    job = make_job(
        tmp_path,
        py(f"""
        import os
        paths = [{str(secret)!r}, {str(other.workspace)!r}, "/etc/shadow", "/etc/passwd",
                 "/root", "/home", "/work", {str(REPO)!r}, "/sys", "/run"]
        report(visible=[p for p in paths if os.path.exists(p)],
               root=sorted(os.listdir("/")), etc=sorted(os.listdir("/etc")),
               own_input=open("/data/inputs/{DATASET_DID}/0").read(),
               data=sorted(os.listdir("/data")))
        try:
            open({str(secret)!r}).read()
            report(read_secret=True)
        except OSError as e:
            report(read_secret=type(e).__name__)
    """),
    )
    _, outcome = await run_to_end(job)
    assert outcome.exit_code == 0, job.log.read_text()
    r = job.report()
    assert r["visible"] == []
    assert r["read_secret"] == "FileNotFoundError"
    assert set(r["root"]) <= {
        "bin",
        "sbin",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "usr",
        "etc",
        "proc",
        "dev",
        "tmp",
        "data",
    }
    assert set(r["etc"]) <= {"alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime"}
    assert r["data"] == ["ddos", "inputs", "logs", "outputs", "transformations"]
    assert r["own_input"] == "the dataset\n"


async def test_writes_outside_outputs_fail_and_never_reach_the_host(tmp_path):
    job = make_job(tmp_path, "")
    host_tmp_file = Path("/tmp") / f"c2d-escape-{job.marker}"
    job = make_job(
        tmp_path,
        py(f"""
        import errno
        results = {{}}
        for path in ["/data/inputs/new", "/data/inputs/{DATASET_DID}/0", "/data/transformations/algorithm",
                     "/data/ddos/new", "/data/new", "/new", "/usr/new", "/etc/new", {str(host_tmp_file)!r}]:
            try:
                with open(path, "a") as f:
                    f.write("pwned")
                results[path] = "written"
            except OSError as e:
                results[path] = errno.errorcode[e.errno]
        with open("/data/outputs/result.txt", "w") as f:
            f.write("a result")
        report(results=results)
    """),
    )
    _, outcome = await run_to_end(job)
    assert outcome.exit_code == 0, job.log.read_text()
    results = job.report()["results"]
    assert results.pop(str(host_tmp_file)) == "written"  # the sandbox's own private /tmp...
    assert not host_tmp_file.exists()  # ...which is not the host's
    assert all(err in ("EROFS", "EACCES", "EPERM", "ENOENT") for err in results.values()), results
    assert (job.workspace / "inputs" / DATASET_DID / "0").read_text() == "the dataset\n"
    assert not (job.workspace / "inputs" / "new").exists()
    assert (job.outputs / "result.txt").read_text() == "a result"


async def test_environment_is_exactly_the_given_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("C2D_ENGINE_SECRET", "must not leak")
    job = make_job(
        tmp_path,
        py("""
        raw = open("/proc/self/environ").read()
        env = dict(kv.split("=", 1) for kv in raw.split("\\0") if kv)
        cap_eff = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
        report(env=env, cap_eff=cap_eff)
    """),
    )
    _, outcome = await run_to_end(job)
    assert outcome.exit_code == 0, job.log.read_text()
    r = job.report()
    assert r["env"] == {**job.env(), "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}
    assert r["cap_eff"] == "0" * 16  # no capabilities, not even inside its user namespace


async def test_no_privileges_and_no_nested_user_namespaces(tmp_path):
    job = make_job(
        tmp_path,
        sh("""
        unshare --user true 2>/dev/null && echo "userns: created" || echo "userns: refused"
        echo "caps: $(grep CapBnd /proc/self/status | cut -f2)"
        echo "uid: $(id -u)"
    """),
    )
    _, outcome = await run_to_end(job, argv=("/bin/sh", ALGO))
    assert outcome.exit_code == 0, job.log.read_text()
    assert job.log.read_text().splitlines() == ["userns: refused", "caps: " + "0" * 16, "uid: 1000"]


async def test_the_algorithm_is_not_root_on_the_host_either(tmp_path):
    """`id -u` is not 0 inside, and the host sees the job's own unprivileged uid (a root
    engine drops to it before making the user namespace), owner of what it writes."""
    job = make_job(
        tmp_path,
        sh("""
        echo "uid: $(id -u) gid: $(id -g) groups: $(id -G)"
        echo written >/data/outputs/mine
        until ls /data/outputs | grep -qx go; do sleep 0.02; done
    """),
    )
    run = await SandboxRun.start(job.spec(argv=("/bin/sh", ALGO)))
    await wait_for((job.outputs / "mine").exists)
    pids = processes_of(job, algorithm_only=True)
    assert pids
    host_ids = set()
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:  # a `sleep` of the loop that has just ended
            continue
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        gid_line = next(line for line in status.splitlines() if line.startswith("Gid:"))
        host_ids.add((tuple(map(int, uid_line.split()[1:])), tuple(map(int, gid_line.split()[1:]))))
    expected = host_uid(job.job_id) if os.geteuid() == 0 else os.geteuid()
    assert host_ids == {((expected,) * 4, (expected,) * 4)}  # real, effective, saved, filesystem
    assert expected != 0
    assert (job.outputs / "mine").stat().st_uid == expected
    (job.outputs / "go").touch()
    outcome = await run.wait()
    assert outcome.exit_code == 0, job.log.read_text()
    assert job.log.read_text().splitlines() == ["uid: 1000 gid: 1000 groups: 1000"]
    if os.geteuid() == 0:
        assert "uid:job" in run.limits_in_force


async def test_the_algorithm_finds_no_host_path_in_its_mount_table(tmp_path):
    """/proc/self/mountinfo would tell an attacker where the data directory and the
    workspaces are (where to point a link): it shows none of it."""
    job = make_job(tmp_path, sh("cat /proc/self/mountinfo /proc/self/mounts"))
    _, outcome = await run_to_end(job, argv=("/bin/sh", ALGO))
    assert outcome.exit_code == 0, job.log.read_text()
    table = job.log.read_text()
    assert " /data/inputs " in table and " /data/outputs " in table
    for host_path in (str(tmp_path), str(job.workspace), str(job.log.parent), "/tmp/pytest"):
        assert host_path not in table


async def test_the_read_only_parts_cannot_be_remounted_writable(tmp_path):
    """inputs/ and outputs/ are two views of one overlay of the workspace: the read-only
    view stays read-only whatever the algorithm tries."""
    job = make_job(
        tmp_path,
        sh(f"""
        mount -o remount,rw /data/inputs 2>/dev/null && echo "remount: done" || echo "remount: refused"
        mount -o remount,rw,bind /data/inputs 2>/dev/null && echo "bind remount: done" || echo "bind remount: refused"
        (echo pwned >>/data/inputs/{DATASET_DID}/0) 2>/dev/null && echo "write: done" || echo "write: refused"
        (echo pwned >/data/inputs/new) 2>/dev/null && echo "create: done" || echo "create: refused"
        ln /data/inputs/{DATASET_DID}/0 /data/outputs/alias 2>/dev/null && echo "link: done" || echo "link: refused"
    """),
    )
    _, outcome = await run_to_end(job, argv=("/bin/sh", ALGO))
    assert outcome.exit_code == 0, job.log.read_text()
    assert job.log.read_text().splitlines() == [
        "remount: refused",
        "bind remount: refused",
        "write: refused",
        "create: refused",
        "link: refused",
    ]
    assert not (job.workspace / "inputs" / "new").exists()
    assert (job.workspace / "inputs" / DATASET_DID / "0").read_text() == "the dataset\n"


async def test_the_algorithm_sees_only_its_own_processes_in_proc(tmp_path):
    job = make_job(
        tmp_path,
        sh("""
        ls /proc | grep -E '^[0-9]+$' | wc -l
        cat /proc/1/comm
    """),
    )
    _, outcome = await run_to_end(job, argv=("/bin/sh", ALGO))
    assert outcome.exit_code == 0, job.log.read_text()
    count, init = job.log.read_text().split()
    assert int(count) <= 6  # bwrap's init, the lifeline watcher, the shell and its commands
    assert init == "bwrap"


# --- through a real engine (local backend) ------------------------------------------


async def test_without_network_loopback_and_dns_fail_and_allow_network_gives_a_network_of_its_own(
    data_dir, postgres_url, tmp_path
):
    with listening_socket() as listener:
        code = py(CONNECT_AND_RESOLVE.format(port=listener.getsockname()[1]))
        async with engine_running(postgres_url, tmp_path / "ws") as engine:
            closed = await engine.submit(workflow(code))
            opened = await engine.submit(workflow(code, allow_network=True))
            assert_completed(await engine.ended(closed))
            assert_completed(await engine.ended(opened))
            closed_report = report_of(engine, closed)
            assert (closed_report["connect"], closed_report["dns_example.com"], closed_report["interfaces"]) == (
                "ConnectionRefusedError",
                "gaierror",
                ["lo"],
            )
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
