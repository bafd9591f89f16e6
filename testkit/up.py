"""`c2d up` as a child process, for tests and benchmarks: its environment on
free ports, started and waited for until it says it is up, stopped as Ctrl-C
stops it.

What it prints is read by a thread until it exits: nobody else reads the pipe,
and a full one would block the servers that log to it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from testkit.servers import REPO_ROOT, free_ports, stop_process

# The last line `c2d up` prints once every server serves ("... stops it." / "... stops them.").
UP_LINE = "Ctrl-C stops"
SERVER_NAMES = ("provider", "operator-service", "operator-engine")


def up_environment(data_dir: Path, **variables: str) -> dict[str, str]:
    """The environment of a `c2d up --processes` whose servers listen on free
    ports (`--processes` wires them by fixed ones), its data and service token
    in data_dir, test files served from loopback allowed; then `variables`."""
    provider, operator, engine = free_ports(3)
    env = {
        **os.environ,
        "C2D_DATA_DIR": str(data_dir),
        "C2D_STAGING_ALLOW_HOSTS": "127.0.0.1",
        "C2D_PROVIDER_ADDRESS": f"127.0.0.1:{provider}",
        "C2D_OPERATOR_ADDRESS": f"127.0.0.1:{operator}",
        "C2D_ENGINE_ADDRESS": f"127.0.0.1:{engine}",
        "C2D_LOG_LEVEL": "WARNING",
        **variables,
    }
    env.pop("C2D_SERVICE_TOKEN", None)  # the servers share the data dir's token
    return env


@dataclass
class Up:
    """A running `c2d up`: its process, the address of each server it named, what it printed."""

    process: subprocess.Popen[str]
    addresses: dict[str, str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def said(self) -> str:
        """All it printed so far; everything, once it has exited."""
        if self.process.poll() is not None and self.reader is not None:
            self.reader.join(30)
        return "".join(self.lines)


def start_up(env: Mapping[str, str], processes: bool = True) -> Up:
    """`c2d up` (`--processes`: one process per server), once it says it is up."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", *(["--processes"] if processes else [])],
        cwd=REPO_ROOT,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    up = Up(process, {})
    while not (up.lines and up.lines[-1].startswith(UP_LINE)):
        line = process.stdout.readline()
        if not line:
            process.wait()
            raise RuntimeError("c2d up ended before it was up:\n" + "".join(up.lines))
        up.lines.append(line)
        words = line.split()
        if len(words) >= 2 and words[0] in SERVER_NAMES:
            up.addresses[words[0]] = words[1]
    up.reader = threading.Thread(target=_read_on, args=(process.stdout, up.lines), daemon=True)
    up.reader.start()
    return up


def _read_on(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


@contextlib.contextmanager
def running_up(env: Mapping[str, str], processes: bool = True) -> Iterator[Up]:
    """`c2d up` while the block runs; then SIGTERM, as Ctrl-C (the engine's grace, then its siblings)."""
    up = start_up(env, processes)
    try:
        yield up
    finally:
        stop_process(up.process, grace=30.0)
