"""bench/ smoke run: the control plane on PostgreSQL (throughput, propagation, reads in a full table)."""

from __future__ import annotations

import pytest

from tests.bench import smoke

SCRIPTS = ("control_plane",)


@pytest.mark.timeout(smoke.TIMEOUT_S + 60)
@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_run_exits_0_with_a_table_and_its_documented_json_line(name: str):
    smoke.run_quick(name)
