"""A gRPC server a test leaves serving after its event loop closed fails that
test, and the run still exits: freeing such a server in pytest's last garbage
collection used to hang the process after its summary (tests/conftest.py hid
it with os._exit)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

LEAKING = """
import grpc


async def test_leaves_a_server_serving():
    server = grpc.aio.server()
    server.add_insecure_port("127.0.0.1:0")
    await server.start()
    cycle = {"server": server}
    cycle["self"] = cycle  # freed only by a garbage collection, after the loop closed


def test_after_it():
    pass
"""


def test_a_server_left_serving_fails_its_test_and_the_run_exits(tmp_path: Path):
    (tmp_path / "test_leak.py").write_text(textwrap.dedent(LEAKING))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "testkit.fixtures", "-o", "asyncio_mode=auto", "-q"]
        + ["-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path / "test_leak.py")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=240,  # the hang this guards against never ends
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "test_leak.py::test_leaves_a_server_serving left 1 gRPC server(s) serving" in run.stdout, run.stdout
    assert "2 passed, 1 error" in run.stdout, run.stdout  # blamed once, on the test that left it
