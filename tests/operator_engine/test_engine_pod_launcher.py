"""The pod fork server: forked pods get their own environment, log and exit code,
a kill takes their process group, and a dead helper fails what it ran and is
replaced on the next start."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from services.operator_engine.backends.local.pod_launcher import ForkServerLauncher, SubprocessLauncher, programs
from testkit.servers import alive
from tests.operator_engine.engine_harness import WAIT_S, StallingServer, wait_until


def pod_env(agent: str, tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "C2D_JOB_ID": "job-1",
        "C2D_JOB_TOKEN": "t",
        "C2D_AGENT_ADDRESS": agent,
        "C2D_DATA_ROOT": str(tmp_path / "data"),
        "C2D_LOG_LEVEL": "INFO",
    }


async def test_a_forked_pod_has_its_own_environment_log_and_exit_code(tmp_path):
    for launcher in (ForkServerLauncher(), SubprocessLauncher()):
        log = tmp_path / f"{type(launcher).__name__}.log"
        try:
            pod = await launcher.start("pod_config", {"PATH": "/usr/bin"}, log)  # no C2D_JOB_ID
            ended = await asyncio.wait_for(pod.wait(), WAIT_S)
        finally:
            await launcher.close()
        assert ended.returncode == 2
        assert "environment variable 'C2D_JOB_ID' is required" in log.read_text()


async def test_pod_programs_are_the_entry_points_of_group_c2d_pods(tmp_path):
    # The engine names no other service's module: pyproject.toml declares them.
    assert {name: entry.value for name, entry in programs().items()} == {
        "pod_config": "services.pod_config.program:run",
        "pod_publish": "services.pod_publish.program:run",
    }
    for launcher in (ForkServerLauncher(), SubprocessLauncher()):
        try:
            with pytest.raises(ValueError, match="unknown pod program 'pod_unknown'"):
                await launcher.start("pod_unknown", {"PATH": "/usr/bin"}, tmp_path / "unknown.log")
        finally:
            await launcher.close()
    assert not (tmp_path / "unknown.log").exists()


async def test_kill_and_helper_death(tmp_path):
    launcher = ForkServerLauncher()
    async with StallingServer() as agent:
        try:
            stalled = await launcher.start(
                "pod_publish", pod_env(f"127.0.0.1:{agent.port}", tmp_path), tmp_path / "a.log"
            )
            await wait_until(lambda: agent.open_connections >= 1, what="the pod reached its agent")
            await asyncio.wait_for(stalled.kill(), WAIT_S)
            assert (await stalled.wait()).returncode == -signal.SIGKILL
            assert not alive(stalled.pid)

            orphaned = await launcher.start(
                "pod_publish", pod_env(f"127.0.0.1:{agent.port}", tmp_path), tmp_path / "b.log"
            )
            await wait_until(lambda: agent.open_connections >= 1, what="the second pod reached its agent")
            helper = launcher._helper
            assert helper is not None
            os.kill(helper.pid, signal.SIGKILL)
            ended = await asyncio.wait_for(orphaned.wait(), WAIT_S)
            assert ended.returncode is None and "pod launcher process exited" in ended.detail
            # Its pods have a parent-death signal: they do not outlive the helper. Nor do
            # its idle children, which had connected to the agent ahead of a job.
            await wait_until(lambda: not alive(orphaned.pid), what="the orphaned pod died with its helper")
            await wait_until(lambda: agent.open_connections == 0, what="every child of the helper died with it")

            again = await launcher.start("pod_config", {"PATH": "/usr/bin"}, tmp_path / "c.log")
            assert (await asyncio.wait_for(again.wait(), WAIT_S)).returncode == 2
            assert launcher._helper is not None and launcher._helper.pid != helper.pid
        finally:
            await launcher.close()


def children_of(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(child) for child in f.read().split()}


async def test_pods_run_in_children_forked_ahead_and_a_dead_idle_child_is_replaced(tmp_path):
    launcher = ForkServerLauncher()
    try:
        first = await launcher.start("pod_config", {"PATH": "/usr/bin"}, tmp_path / "first.log")
        assert (await asyncio.wait_for(first.wait(), WAIT_S)).returncode == 2
        helper = launcher._helper
        assert helper is not None
        await wait_until(lambda: len(children_of(helper.pid)) == 2, what="one idle child per program")
        idle = children_of(helper.pid)

        second = await launcher.start("pod_config", {"PATH": "/usr/bin"}, tmp_path / "second.log")
        assert second.pid in idle  # the job went to a child forked before it was asked for
        assert (await asyncio.wait_for(second.wait(), WAIT_S)).returncode == 2
        assert "environment variable 'C2D_JOB_ID' is required" in (tmp_path / "second.log").read_text()

        await wait_until(lambda: len(children_of(helper.pid)) == 2, what="the next idle children")
        for pid in children_of(helper.pid):
            os.kill(pid, signal.SIGKILL)  # idle children die: the helper forks anew on demand
        await wait_until(lambda: not children_of(helper.pid), what="the idle children reaped")
        third = await launcher.start("pod_publish", {"PATH": "/usr/bin"}, tmp_path / "third.log")
        assert (await asyncio.wait_for(third.wait(), WAIT_S)).returncode == 2
        assert "pod_publish: environment variable 'C2D_JOB_ID' is required" in (tmp_path / "third.log").read_text()
    finally:
        await launcher.close()


async def test_idle_children_connect_to_the_agent_before_a_job_comes(tmp_path):
    launcher = ForkServerLauncher()
    async with StallingServer() as agent:
        try:
            env = pod_env(f"127.0.0.1:{agent.port}", tmp_path)
            del env["C2D_JOB_ID"]  # this first pod ends at once: it names no job
            first = await launcher.start("pod_config", env, tmp_path / "first.log")
            assert (await asyncio.wait_for(first.wait(), WAIT_S)).returncode == 2
            helper = launcher._helper
            assert helper is not None
            await wait_until(lambda: len(children_of(helper.pid)) == 2, what="one idle child per program")
            # No pod runs now, yet both idle children hold a connection to the agent.
            await wait_until(lambda: agent.open_connections >= 2, what="the idle children connected ahead")
        finally:
            await launcher.close()
