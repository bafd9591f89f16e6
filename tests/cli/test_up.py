"""`c2d up`: a port it cannot take is named with its setting before anything is created; the data
directory is the user's, whatever the working directory, and said at start."""

from __future__ import annotations

import socket
import subprocess

from testkit.servers import free_ports
from tests.cli.conftest import C2D, user_environment


def run_up(env: dict[str, str], cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(C2D), "up", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_a_busy_port_names_its_setting_and_nothing_is_created(tmp_path):
    env = user_environment(tmp_path, free_ports(3))
    engine_port = int(env["C2D_ENGINE_ADDRESS"].rsplit(":", 1)[1])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", engine_port))
        holder.listen()
        answer = run_up(env, tmp_path)
    assert answer.returncode == 2
    assert "C2D_ENGINE_ADDRESS" in answer.stderr and f"127.0.0.1:{engine_port}" in answer.stderr
    assert "Traceback" not in answer.stderr + answer.stdout
    assert not (tmp_path / "data").exists() and not (tmp_path / ".c2d").exists()


def test_processes_with_port_0_is_a_clear_usage_error(tmp_path):
    env = user_environment(tmp_path, free_ports(3))
    env["C2D_OPERATOR_ADDRESS"] = "127.0.0.1:0"
    answer = run_up(env, tmp_path, "--processes")
    assert answer.returncode == 2
    assert "no fixed port" in answer.stderr and "C2D_OPERATOR_ADDRESS" in answer.stderr
    assert "Traceback" not in answer.stderr
    assert not (tmp_path / "data").exists()


def test_the_data_directory_is_the_users_and_is_said_at_start(up):
    data = up.home / "data" / "c2d"
    assert f"data in {data}" in up.output() and "C2D_DATA_DIR" in up.output()
    assert (data / "provider-keys.json").exists()  # not in the working directory
    assert not (up.home / ".c2d").exists()
