"""`c2d up --processes`: each server in its own process, wired to the next;
a real job runs through them; a signal stops them all, and so does the death
of any one of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.stack import process_environments
from services.operator_engine.settings import EngineSettings
from services.operator_service.settings import OperatorSettings
from services.provider.settings import ProviderSettings
from tests.support.servers import alive, free_ports

REPO = Path(__file__).resolve().parents[2]


def server_pids(up: subprocess.Popen) -> list[int]:
    with open(f"/proc/{up.pid}/task/{up.pid}/children") as f:
        return [int(pid) for pid in f.read().split()]


@pytest.fixture
def up(tmp_path):  # type: ignore[no-untyped-def]
    provider, operator, engine = free_ports(3)
    env = {
        **os.environ,
        "C2D_DATA_DIR": str(tmp_path / "data"),
        "C2D_STAGING_ALLOW_HOSTS": "127.0.0.1",
        "C2D_PROVIDER_ADDRESS": f"127.0.0.1:{provider}",
        "C2D_OPERATOR_ADDRESS": f"127.0.0.1:{operator}",
        "C2D_ENGINE_ADDRESS": f"127.0.0.1:{engine}",
        "C2D_LOG_LEVEL": "WARNING",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),  # the demo's account, not the user's
    }
    env.pop("C2D_SERVICE_TOKEN", None)  # the servers share the data dir's token
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--processes"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        while not any("stops them" in line for line in lines):
            line = process.stdout.readline()  # type: ignore[union-attr]
            assert line, "c2d up --processes ended before it was up:\n" + "".join(lines)
            lines.append(line)
        yield process, env
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_job_runs_through_one_process_per_server_and_a_signal_stops_them_all(up):
    process, env = up
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


def test_when_one_server_dies_the_others_are_stopped(up):
    process, _ = up
    servers = server_pids(process)
    os.kill(servers[1], signal.SIGKILL)  # the operator-service
    assert process.wait(60) == 1
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in servers)
    assert "the operator-service exited; stopping the others" in process.stdout.read()  # type: ignore[union-attr]


def test_a_server_without_a_fixed_port_is_refused():
    with pytest.raises(ValueError, match="operator-service's address '127.0.0.1:0' has no fixed port"):
        process_environments(ProviderSettings(), OperatorSettings(address="127.0.0.1:0"), EngineSettings())
