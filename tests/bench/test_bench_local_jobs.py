"""bench/ smoke runs: jobs on the local backend, their CPU and the sandbox's start."""

from __future__ import annotations

import pytest

from tests.bench import smoke

SCRIPTS = ("local_jobs", "job_cost", "sandbox_overhead")


@pytest.mark.timeout(smoke.TIMEOUT_S + 60)
@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_run_exits_0_with_a_table_and_its_documented_json_line(name: str):
    smoke.run_quick(name)
