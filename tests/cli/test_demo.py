"""`c2d up` in one terminal, `c2d demo` in another: the job reaches 70 without any setting changed,
and the CLI's account can read it afterwards."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cli import demo
from tests.cli.conftest import Cli


def test_demo_against_a_running_up_then_the_cli_reads_its_job(cli: Cli):
    answer = cli("demo", timeout=300)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert "result correct" in answer.stdout
    account = cli.json("account", "show")  # the demo made the CLI's account
    assert f"your account {account['address']} is the consumer" in answer.stdout
    job_id = re.search(r"job (\S+) started", answer.stdout).group(1)

    saved = re.search(r"saved to (\S+)", answer.stdout).group(1)
    assert json.loads(Path(saved).read_text()) == demo.EXPECTED
    log = re.search(r"the algorithm's log saved to (\S+)", answer.stdout).group(1)
    assert Path(log).read_text() == "processed 4 rows\n"

    jobs = cli.json("jobs", "ls")["jobs"]
    assert [j["status"] for j in jobs if j["job_id"] == job_id] == [70]
    assert cli("compute", "logs", job_id).stdout == "processed 4 rows\n"
    files = cli.json("compute", "result", job_id, "-o", str(cli.cwd / "demo-result"))["files"]
    assert {f["path"] for f in files} == {"result.json", "algorithm.log"}


def test_demo_json_says_what_happened(cli: Cli):
    answer = cli("demo", "--json", timeout=300)
    assert answer.returncode == 0, answer.stderr
    outcome = json.loads(answer.stdout)  # one JSON document, nothing else on stdout
    assert outcome["ok"] is True and outcome["status"] == 70 and outcome["statuses"][-1] == 70
    assert outcome["consumer"] == cli.json("account", "show")["address"]
    assert outcome["result"] == demo.EXPECTED
    assert Path(outcome["log"]).parent == Path(outcome["saved"]).parent  # the log beside the result
