"""bench/ smoke run: fuzzing every RPC, a load of jobs and fault trials (bench/pressure.py)."""

from __future__ import annotations

import pytest

from tests.bench import smoke

SCRIPTS = ("pressure",)


@pytest.mark.timeout(smoke.TIMEOUT_S + 60)
@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_run_exits_0_with_a_table_and_its_documented_json_line(name: str):
    smoke.run_quick(name)
