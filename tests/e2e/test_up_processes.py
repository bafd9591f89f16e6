"""`c2d up --processes`: each server in its own process, wired to the next;
a real job runs through them; a signal stops them all; a server that dies is
started again while its siblings, and the jobs the engine runs, go on."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from cli.stack import Child, _keep_running, _serving, process_environments
from plumbing.statuses import EndReason
from services.operator_engine.settings import EngineSettings
from services.operator_service.settings import OperatorSettings
from services.provider.settings import ProviderSettings
from testkit.servers import alive, free_ports, stop_process
from testkit.up import Up, start_up, up_environment
from tests.operator_engine.engine_harness import (
    EngineClient,
    gate,
    kill_runs_in,
    processes_mentioning,
    release,
    wait_for_file_text,
    wait_until,
    workflow,
)

REPO = Path(__file__).resolve().parents[2]


def server_pids(up: subprocess.Popen) -> list[int]:
    with open(f"/proc/{up.pid}/task/{up.pid}/children") as f:
        return [int(pid) for pid in f.read().split()]


@pytest.fixture
def up(tmp_path):  # type: ignore[no-untyped-def]
    env = up_environment(
        tmp_path / "data",
        XDG_CONFIG_HOME=str(tmp_path / "config"),  # the demo's account, not the user's
        C2D_ENGINE_MAX_JOBS="1",  # a second job waits in the queue
        C2D_LOG_LEVEL="INFO",  # the engine says how long its stop took
    )
    ups = [start_up(env)]
    try:
        yield ups, env
    finally:
        for each in ups:
            stop_process(each.process, grace=30.0)
        kill_runs_in(tmp_path / "data" / "workspaces")


def test_a_job_runs_through_one_process_per_server_and_a_signal_stops_them_all(up):
    (stack,), env = up
    process = stack.process
    servers = server_pids(process)
    assert len(servers) == 3
    demo = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "using the provider already running" in demo.stdout
    assert "status 70" in demo.stdout and "result correct" in demo.stdout
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    assert not any(alive(pid) for pid in servers)


async def test_a_crashed_provider_and_operator_service_are_restarted_and_a_running_job_goes_on(up, monkeypatch):
    (stack,), env = up
    process = stack.process
    engine_pid, operator_pid, provider_pid = server_pids(process)
    monkeypatch.setenv("C2D_DATA_DIR", env["C2D_DATA_DIR"])  # the stack's service token
    engine = EngineClient(env["C2D_ENGINE_ADDRESS"], Path(env["C2D_DATA_DIR"]) / "workspaces")
    try:
        job_id = await engine.submit(workflow("print('started', flush=True)\n" + gate()))
        await wait_for_file_text(engine.algorithm_log(job_id), "started")
        os.kill(operator_pid, signal.SIGKILL)
        os.kill(provider_pid, signal.SIGKILL)
        await wait_until(lambda: not alive(operator_pid) and not alive(provider_pid), what="both died")
        # Both come back (new processes) while the engine, and its job, never stopped.
        # (a killed child stays listed until it is reaped)
        await wait_until(
            lambda: len(server_pids(process)) == 3 and not {operator_pid, provider_pid} & set(server_pids(process)),
            what="both restarted",
        )
        assert server_pids(process)[0] == engine_pid
        await serving_again(stack, "operator-service", "provider")  # for the demo below
        release(engine.data(job_id))
        history = await engine.history(job_id)
        assert [c.status for c in history] == [10, 20, 30, 40, 60, 70]
        assert history[-1].end_reason == EndReason.COMPLETED
    finally:
        await engine.close()
    # The restarted servers serve a whole job (the operator-service resumed the engine's stream).
    demo = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli.main", "demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "using the provider already running" in demo.stdout  # not a stack of its own
    assert "status 70" in demo.stdout and "result correct" in demo.stdout
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 60) == 0
    said = stack.said()
    assert "the operator-service exited (code -9); starting it again" in said
    assert "the provider exited (code -9); starting it again" in said


def engine_client(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> EngineClient:
    """The stack's engine, called directly with the stack's service token."""
    monkeypatch.setenv("C2D_DATA_DIR", env["C2D_DATA_DIR"])
    return EngineClient(env["C2D_ENGINE_ADDRESS"], Path(env["C2D_DATA_DIR"]) / "workspaces")


async def serving_again(stack: Up, *names: str) -> None:
    """Until `c2d up` says each restarted server serves again (its health check answered):
    a new process is not yet a server, and one still importing on a loaded machine can
    take over a minute to be one."""
    await wait_until(
        lambda: all(f"c2d: the {name} is back" in stack.said() for name in names),
        what=f"{', '.join(names)} serving again",
    )


async def test_a_killed_engine_is_restarted_and_its_algorithm_and_queue_go_on(up, monkeypatch):
    (stack,), env = up
    process = stack.process
    engine_pid = server_pids(process)[0]
    engine = engine_client(env, monkeypatch)
    try:
        running = await engine.submit(workflow("print('started', flush=True)\n" + gate()))
        queued = await engine.submit(workflow("print('queued job ran')\n"))
        await wait_for_file_text(engine.algorithm_log(running), "started")
        os.kill(engine_pid, signal.SIGKILL)
        await wait_until(
            lambda: engine_pid not in server_pids(process) and len(server_pids(process)) == 3,
            what="the engine restarted",
        )
        await serving_again(stack, "operator-engine")
        release(engine.data(running))
        for job_id in (running, queued):
            assert [c.status for c in await engine.history(job_id)] == [10, 20, 30, 40, 60, 70]
    finally:
        await engine.close()


async def test_a_stopped_stack_keeps_its_jobs_and_the_next_one_finishes_them(up, monkeypatch):
    ups, env = up
    engine = engine_client(env, monkeypatch)
    try:
        running = await engine.submit(workflow("print('started', flush=True)\n" + gate()))
        queued = await engine.submit(workflow("print('queued job ran')\n"))
        await wait_for_file_text(engine.algorithm_log(running), "started")
        ups[0].process.send_signal(signal.SIGTERM)  # as Ctrl-C does
        assert await asyncio.to_thread(ups[0].process.wait, 60) == 0
        # The engine's grace bounds its stop, on its own clock (the siblings stop before it, and
        # how long this process waits for its turn on a loaded machine is not the engine's).
        exits = re.findall(r"operator-engine exiting ([0-9.]+) s after the signal", ups[0].said())
        assert len(exits) == 1 and float(exits[0]) < EngineSettings().stop_grace_s, ups[0].said()[-3000:]
        assert processes_mentioning(engine.data(running))  # the algorithm goes on meanwhile
        assert not (engine.data(queued) / "logs").exists()  # and the queued job never started
        await engine.close()

        ups.append(await asyncio.to_thread(start_up, env))
        engine = engine_client(env, monkeypatch)
        release(engine.data(running))
        for job_id in (running, queued):
            assert [c.status for c in await engine.history(job_id)] == [10, 20, 30, 40, 60, 70]
    finally:
        await engine.close()


def test_a_server_without_a_fixed_port_is_refused():
    with pytest.raises(ValueError, match="operator-service's address '127.0.0.1:0' has no fixed port"):
        process_environments(ProviderSettings(), OperatorSettings(address="127.0.0.1:0"), EngineSettings())


async def test_a_server_that_keeps_dying_is_restarted_with_a_doubling_pause(tmp_path):
    # A "server" that exits at once: python -m of a module that does not exist.
    child = Child("provider", "c2d_no_such_module", dict(os.environ), f"127.0.0.1:{free_ports(1)[0]}", 5.0)
    assert not await child.spawn()
    said: list[str] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(_keep_running(child, stop, said.append))
    await wait_until(lambda: child.restarts >= 3, timeout=30, what="three restarts")
    stop.set()
    await asyncio.wait_for(watcher, 10)
    pauses = [line.split(" in ")[1] for line in said if "starting it again" in line]
    assert pauses[:3] == ["0.5 s", "1 s", "2 s"]
    assert "c2d: the provider exited (code 1); starting it again in 0.5 s" in said


async def test_the_wait_for_a_server_ends_when_it_serves_exits_or_the_stack_stops():
    """No clock: a server still starting on a loaded machine is waited for, one that
    exited is not, and Ctrl-C meanwhile ends the wait."""
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    starting = await asyncio.create_subprocess_exec(sys.executable, "-c", "import sys; sys.stdin.read()", stdin=PIPE)
    stop = asyncio.Event()
    waiting = asyncio.create_task(_serving(address, starting, internal=False, stop=stop))
    try:
        await asyncio.sleep(1.0)  # a while of answering nothing: still waited for
        assert not waiting.done()
        stop.set()
        assert await asyncio.wait_for(waiting, 30) is False
        waiting = asyncio.create_task(_serving(address, starting, internal=False))
        assert starting.stdin is not None
        starting.stdin.close()  # it exits
        assert await asyncio.wait_for(waiting, 30) is False
    finally:
        waiting.cancel()
        if starting.returncode is None:
            starting.kill()
        await starting.wait()


PROBE = """
import sys
import cli.main, cli.stack, services.operator_engine.server, services.operator_service.server, services.provider.server
print(sorted(m for m in sys.modules if m.split(".")[0] == "kubernetes"))
"""


def test_the_servers_do_not_import_the_kubernetes_client_unless_the_engine_uses_it():
    # seconds of every start-up (12 s under load) for the local and noop backends
    probe = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.strip() == "[]"
