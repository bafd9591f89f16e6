"""A real `c2d up` (a subprocess on free ports) and the real `c2d` command to talk to it.

The stack and the CLI run with their own config and data directories (XDG_*),
without C2D_DATA_DIR or C2D_STAGING_ALLOW_HOSTS: the defaults a user has.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from c2d_sdk import Client, Unreachable
from testkit.servers import free_ports

BIN = Path(sys.executable).parent
C2D = BIN / "c2d"
DROPPED = ("C2D_DATA_DIR", "C2D_STAGING_ALLOW_HOSTS", "C2D_SERVICE_TOKEN", "C2D_PROVIDER_ADDRESS")


def user_environment(home: Path, ports: list[int] | None = None) -> dict[str, str]:
    """The environment of a user whose config and data live under ``home``."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    env.update(XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"), COLUMNS="200")
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    if ports:
        for variable, port in zip(("C2D_PROVIDER", "C2D_OPERATOR", "C2D_ENGINE"), ports, strict=True):
            env[f"{variable}_ADDRESS"] = f"127.0.0.1:{port}"
    return env


@dataclass
class Cli:
    """Runs the real `c2d` command as a user would."""

    env: dict[str, str]
    cwd: Path
    runs: list[list[str]] = field(default_factory=list)

    def __call__(self, *args: str, input: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
        self.runs.append(list(args))
        return subprocess.run(
            [str(C2D), *args], env=self.env, cwd=self.cwd, capture_output=True, text=True, input=input, timeout=timeout
        )

    def json(self, *args: str, input: str | None = None) -> Any:
        """The --json answer of a command that must succeed."""
        answer = self(*args, "--json", input=input)
        assert answer.returncode == 0, f"c2d {' '.join(args)}: exit {answer.returncode}\n{answer.stderr}"
        return json.loads(answer.stdout)

    @property
    def provider(self) -> str:
        return self.env["C2D_PROVIDER_ADDRESS"]


def wait_for_environment(address: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with Client(address) as client:
                if any(e.available for e in client.environments()):
                    return
        except Unreachable:
            pass
        time.sleep(0.3)
    raise AssertionError(f"no environment became available on {address}")


class RunningUp:
    """A `c2d up` process and the user it runs for."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = user_environment(home, free_ports(3))
        self.log = (home / "up.log").open("w")
        self.process = subprocess.Popen(
            [str(C2D), "up"], env=self.env, cwd=home, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for_environment(self.env["C2D_PROVIDER_ADDRESS"])

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(60)
        finally:
            if self.process.returncode is None:
                self.process.kill()
            self.log.close()

    def output(self) -> str:
        return (self.home / "up.log").read_text()


@pytest.fixture(scope="session")
def up(tmp_path_factory) -> Iterator[RunningUp]:
    """One `c2d up` for the CLI's tests (each module is a user of its own on it)."""
    running = RunningUp(tmp_path_factory.mktemp("up"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def cli(up: RunningUp, tmp_path_factory) -> Cli:
    """The `c2d` command of a new user (config directory and working directory of its own) on `c2d up`."""
    home = tmp_path_factory.mktemp("user")
    (home / "work").mkdir()
    return Cli({**up.env, "XDG_CONFIG_HOME": str(home / "config")}, home / "work")
