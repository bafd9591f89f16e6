"""bench/ smoke runs: moving bytes (S3 and HTTP staging, publishing and downloads, the job file reader)."""

from __future__ import annotations

import pytest

from tests.bench import smoke

SCRIPTS = ("publishing", "staging", "job_file_reader")


@pytest.mark.timeout(smoke.TIMEOUT_S + 60)
@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_run_exits_0_with_a_table_and_its_documented_json_line(name: str):
    smoke.run_quick(name)
