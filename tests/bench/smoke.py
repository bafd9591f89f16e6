"""Running a bench script's smoke run as a user does, and what its last line must hold.

`python bench/NAME.py --quick` prints a readable table and, as its last line, one
JSON object. The checks below are the keys each script documents and, where a
value says something about behaviour (no fuzz failure, every job completed, a
ratio that was measured at all), that value; never a performance target: the
machine running CI is shared and small.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
# A smoke run takes under a minute on a quiet machine; CI's may be loaded ten times over.
TIMEOUT_S = 900

Check = Callable[[Any], bool]


def number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive(value: Any) -> bool:
    return number(value) and value > 0


def zero(value: Any) -> bool:
    return number(value) and value == 0


def equals(expected: Any) -> Check:
    return lambda value: value == expected


def nonempty_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value)


def reads(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and all(positive(value.get(k)) for k in ("root_us", "reader_us"))
        and number(value.get("hop_us"))
    )


# Per script: each documented key of the last line, and what its value must be in a --quick run.
CHECKS: dict[str, dict[str, Check]] = {
    "control_plane": {
        "jobs": equals(200),
        "jobs_per_s": positive,
        "engine_alone_jobs_per_s": positive,
        "jobs_per_s_one_process": positive,
        "propagation_changes": positive,
        "propagation_p50_ms": number,
        "propagation_p99_ms": number,
        "propagation_low_rate_p99_ms": number,
        "jobs_in_table": equals(20_000),
        "getjob_ms_at_1m_jobs": positive,
        "list_newest_ms": positive,
        "list_deep_page_ms": positive,
    },
    "job_cost": {
        "jobs": equals(10),
        "jobs_per_s": positive,
        "cpu_ms_per_job": nonempty_dict,
        "total_ms_per_job": positive,
        "kernel_threads_ms_per_job_machine_wide": number,
    },
    "job_file_reader": {
        "bench": equals("job_file_reader"),
        "reads": equals(500),
        "callers_1": reads,
        "callers_4": reads,
    },
    "kubernetes_watch": {
        "jobs": equals(10),
        "pod_to_applied_p99_ms": number,
        "pod_to_engine_emit_p99_ms": number,
        "api_calls_per_job": positive,
        "status_patches_per_job": positive,
        "steady_state_lists": zero,  # the backend watches, it does not poll
        "watches": number,
        "jobs_per_s": positive,
    },
    "local_jobs": {
        "e2e_p50_ms": positive,
        "bare_p50_ms": positive,
        "e2e_over_bare": positive,
        "jobs_per_s": positive,
        "jobs_over_bare_burst": positive,
        "sandbox_start_ms": number,
        "monitor_cost_ms": number,
        "jobs_per_s_subprocess_pods": positive,
        "jobs_in_burst": equals(20),
        "quick": equals(True),
    },
    "pressure": {
        "rpcs_fuzzed": positive,
        "fuzz_cases": positive,
        "fuzz_failures": zero,
        "fuzz_failed_rpcs": equals([]),
        "load_jobs_submitted": equals(60),
        "load_jobs_completed": equals(60),  # every job submitted
        "transitions_out_of_order": zero,
        "rss_growth_mib": number,
        "fd_growth": zero,
        "load_server_errors": number,  # as tests/e2e/test_load.py: a figure, not asserted
        "faults_trials": equals(2),
        "faults_injected": number,  # a pod's stage may end before its fault finds it
        "invariant_violations": zero,
    },
    "provider_api": {
        "getjob_rps": positive,
        "echo_rps": positive,
        "getjob_over_echo": positive,
        "getjob_p99_ms": positive,
        "start_rps": positive,
        "start_p99_ms": positive,
    },
    "publishing": {
        "s3_over_minio": positive,
        "peak_rss_mib": positive,
        "result_download_over_direct": positive,
        "link_download_over_direct": positive,
        "link_unchecked_over_direct": positive,
        "link_cpu_s_per_gib": number,
        "grpc_ceiling_mib_s": positive,
        "total_mib": equals(32),
    },
    "sandbox_overhead": {
        "bare asyncio subprocess": positive,
        "SandboxRun, no sandbox, no limits": positive,
        "SandboxRun, bwrap, no limits": positive,
        "SandboxRun, bwrap, rlimits + cgroups + disk watch": positive,
        "SandboxRun, bwrap, limits + own network": positive,
    },
    "staging": {
        "bytes": equals(64 << 20),
        "http_over_curl": positive,
        "s3_over_minio": positive,
        "peak_rss_mib": positive,
        "http_mib_s": positive,
        "s3_mib_s": positive,
    },
}


def scripts() -> set[str]:
    """The bench scripts a user runs: bench/*.py with a __main__ (bench/cpu.py is a helper)."""
    return {p.stem for p in BENCH.glob("*.py") if 'if __name__ == "__main__":' in p.read_text()}


def run_quick(name: str) -> dict[str, Any]:
    """`python bench/NAME.py --quick` from the repository's root; returns its last line, checked."""
    try:
        done = subprocess.run(
            [sys.executable, str(BENCH / f"{name}.py"), "--quick"],
            cwd=ROOT,
            env=os.environ.copy(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"bench/{name}.py --quick ran over {TIMEOUT_S} s; stderr: {exc.stderr!r}") from exc
    assert done.returncode == 0, f"bench/{name}.py --quick exited {done.returncode}:\n{done.stderr[-4000:]}"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) >= 3, f"no table before the JSON line:\n{done.stdout}"
    figures = json.loads(lines[-1])
    assert isinstance(figures, dict), lines[-1]
    assert not lines[-2].lstrip().startswith("{"), f"the table is JSON too:\n{done.stdout}"
    missing = sorted(set(CHECKS[name]) - set(figures))
    assert not missing, f"bench/{name}.py's last line lacks {missing}: {figures}"
    wrong = {key: figures[key] for key, check in CHECKS[name].items() if not check(figures[key])}
    assert not wrong, f"bench/{name}.py --quick: unexpected values {wrong}\n{done.stdout}"
    return figures
