"""The spec a monitor reads from its state directory is the one the engine wrote."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from services.operator_engine.backends.local import monitor
from services.operator_engine.backends.local.monitor import Monitored, _spec_from_json, _spec_to_json
from services.operator_engine.backends.local.sandbox import SandboxLimits, SandboxSpec


def test_a_spec_with_its_log_outside_the_workspace_goes_through_json_and_back(tmp_path: Path) -> None:
    spec = SandboxSpec(
        job_id="job-1",
        workspace=tmp_path / "data",
        argv=("python3", "/data/transformations/algorithm"),
        env={"DIDS": "[]"},
        limits=SandboxLimits(wall_timeout_s=60.0),
        log_path=tmp_path / "admin" / "algorithm.log",
    )
    assert _spec_from_json(json.loads(json.dumps(_spec_to_json(spec)))) == spec
    without_log = SandboxSpec(job_id="job-2", workspace=tmp_path / "data", argv=("true",), env={})
    assert _spec_from_json(json.loads(json.dumps(_spec_to_json(without_log)))) == without_log


def test_a_killed_monitor_not_yet_reaped_is_not_taken_for_alive(tmp_path: Path) -> None:
    """A monitor killed with its engine gone may stay a zombie for a while (its parent, the
    monitor fork server, is gone too): a restarted engine must not re-attach to it and wait
    for an outcome that never comes, but end the run as "engine restarted"."""
    child = subprocess.Popen(["sleep", "60"])  # stands in for the monitor; not reaped until wait()
    try:
        (tmp_path / monitor.PID).write_text(f"{child.pid} {monitor._start_time(child.pid)}")
        assert Monitored.find(tmp_path) is not None  # alive: re-attached to

        child.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.01)
        assert Monitored.find(tmp_path) is None  # ended, outcome-less: lost with its monitor
    finally:
        child.kill()
        child.wait()
