"""py_ecc (imported through eth-account) raises the recursion limit to 100,000
at import, past what the C stack holds: a deep value then killed the process
with SIGSEGV. Every c2d process imports eth-account through plumbing.ethereum,
which puts the limit back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Every c2d module that signs or verifies (request_settling: the signature worker), and the programs that import them.
PROBE = """
import json, sys
default = sys.getrecursionlimit()
import services.provider.server, services.provider.persistence.request_settling, cli.client, cli.main, cli.demo
assert "py_ecc" in sys.modules, "the probe must import eth-account to mean anything"
print(default, sys.getrecursionlimit(), flush=True)
try:
    json.loads("[" * 1_000_000)
except RecursionError:
    print("RecursionError", flush=True)
"""


def test_importing_the_provider_and_the_cli_leaves_the_recursion_limit_at_its_default():
    probe = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, (probe.returncode, probe.stdout, probe.stderr[-2000:])
    limits, outcome = probe.stdout.splitlines()
    default, after = limits.split()
    assert after == default, f"the recursion limit went from {default} to {after}"
    assert outcome == "RecursionError"  # a deep value is an error in that process, not a crash
