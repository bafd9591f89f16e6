"""The spec a monitor reads from its state directory is the one the engine wrote."""

from __future__ import annotations

import json
from pathlib import Path

from services.operator_engine.backends.local.monitor import _spec_from_json, _spec_to_json
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
