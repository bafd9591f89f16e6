"""The README's "Use it" section, run as written against a real `c2d up`: its files, its command
lines, its Python and its grpcurl calls (only the provider's address and grpcurl's path differ)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import BIN, Cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
USE_IT = README.split("## Use it", 1)[1].split("\n## ", 1)[0]


def block(marker: str) -> str:
    found = re.search(rf"<!-- use-it:{re.escape(marker)} -->\n```\w*\n(.*?)```", USE_IT, re.S)
    assert found, f"the README's Use it section has no {marker!r} block"
    return found.group(1)


def as_here(text: str, cli: Cli) -> str:
    """The README's text with this test's provider and this venv's grpcurl."""
    return (
        text.replace("localhost:50051", cli.provider)
        .replace("127.0.0.1:50051", cli.provider)
        .replace(".venv/bin/", f"{BIN}/")
    )


@pytest.fixture(scope="module")
def readme_dir(cli: Cli) -> Path:
    for name in re.findall(r"<!-- use-it:file (\S+) -->", USE_IT):
        (cli.cwd / name).write_text(block(f"file {name}"))
    return cli.cwd


def run_shell(script: str, cli: Cli) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cli.cwd,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_command_line_section_and_grpcurl(cli: Cli, readme_dir: Path):
    answer = run_shell(as_here(block("cli") + block("grpcurl"), cli), cli)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    # 4 cities, mean 11.25 °C, in the unit the --param asked for
    assert json.loads((readme_dir / "results" / "result.json").read_text()) == {"mean": 52.25, "unit": "fahrenheit"}
    assert (readme_dir / "results" / "algorithm.log").read_text() == "mean of 4 rows in fahrenheit\n"
    assert "c2d.provider.v1.ProviderService" in answer.stdout  # grpcurl list, through reflection
    details = re.search(r'"job": \{.*?"status": "JOB_STATUS_FINISHED"', answer.stdout, re.S)
    assert details, answer.stdout  # GetJobDetails, signed by `c2d sign`, answered
    assert "mean of 4 rows in fahrenheit" in answer.stdout  # `c2d compute logs`
    log = base64.b64encode(b"mean of 4 rows in fahrenheit\n").decode()
    assert f'"data": "{log}"' in answer.stdout  # StreamJobLogs through grpcurl: the same bytes, base64


def run_python(code: str, cli: Cli, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", as_here(code, cli)], cwd=cwd, env=cli.env, capture_output=True, text=True, timeout=300
    )


def test_the_python_section(cli: Cli, readme_dir: Path):
    answer = run_python(block("python"), cli, readme_dir)
    assert answer.returncode == 0, answer.stderr
    assert "70 Job finished" in answer.stdout and "mean of 4 rows in celsius" in answer.stdout
    assert json.loads((readme_dir / "python-results" / "result.json").read_text()) == {"mean": 11.25, "unit": "celsius"}


def test_the_sdk_readme_example(cli: Cli, tmp_path):
    sdk_readme = (Path(__file__).resolve().parents[2] / "sdk" / "python" / "README.md").read_text()
    example = re.search(r"<!-- sdk-example:async -->\n```python\n(.*?)```", sdk_readme, re.S).group(1)
    answer = run_python(example, cli, tmp_path)
    assert answer.returncode == 0, answer.stderr
    assert "status 70 Job finished" in answer.stdout and "3 lines" in answer.stdout
    assert (tmp_path / "results" / "algorithm.log").read_text() == "3 lines\n"
