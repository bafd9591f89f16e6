"""Sandbox start overhead: `.venv/bin/python bench/sandbox_overhead.py [--quick]`.

For /bin/true, the time from the call that starts it to its exit (true runs
for well under a millisecond, so this is start-to-first-instruction plus
exec and exit), as a bare asyncio subprocess and through SandboxRun with and
without bubblewrap and cgroup limits, and with a network of its own. Medians
over N runs. Not a test: a figure to report, not to assert on a shared
machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.operator_engine.backends.local import sandbox
from services.operator_engine.backends.local.sandbox import SandboxLimits, SandboxRun, SandboxSpec, detect_capabilities


async def bare() -> float:
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec("/bin/true")
    await proc.wait()
    return time.monotonic() - t0


async def through_sandbox(
    ws: Path, use_sandbox: bool, limits: SandboxLimits, allow_network: bool = False
) -> tuple[float, float]:
    t0 = time.monotonic()
    spec = SandboxSpec(
        "bench", ws, ("/bin/true",), {}, limits=limits, use_sandbox=use_sandbox, allow_network=allow_network
    )
    run = await SandboxRun.start(spec)
    outcome = await run.wait()
    done = time.monotonic()
    assert outcome.exit_code == 0, outcome
    # the supervisor's clock: release of the gate + run time = the moment the exit was seen
    return run._started + outcome.duration_s - t0, done - t0


async def main(n: int) -> None:
    detect_capabilities()  # probe bwrap and cgroups once, as an engine does at startup
    plain = SandboxLimits(wall_timeout_s=10)
    limited = SandboxLimits(
        wall_timeout_s=10,
        memory_bytes=256 << 20,
        cpu_cores=1,
        max_processes=32,
        cpu_seconds=10,
        disk_quota_bytes=1 << 30,
    )
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "data"  # algorithm.log goes to admin/ beside it
        ws.mkdir()
        rows = {"bare asyncio subprocess": [await bare() for _ in range(n)]}
        for label, sandboxed, limits, allow_network in [
            ("SandboxRun, no sandbox, no limits", False, plain, False),
            ("SandboxRun, bwrap, no limits", True, plain, False),
            ("SandboxRun, bwrap, rlimits + cgroups + disk watch", True, limited, False),
            # a network of its own: namespace + nft rules, slirp4netns ready, nsenter
            ("SandboxRun, bwrap, limits + own network", True, limited, True),
        ]:
            pairs = [await through_sandbox(ws, sandboxed, limits, allow_network) for _ in range(n)]
            rows[label] = [p[0] for p in pairs]
            rows[label + " (incl. cleanup)"] = [p[1] for p in pairs]
        if sandbox._drops_privileges():
            # the baseline of the job's own uid: bwrap as root with plain bind mounts, as before
            # the drop stage (its private mount namespace, overlays and setpriv) existed
            drops = sandbox._drops_privileges
            sandbox._drops_privileges = lambda: False  # type: ignore[assignment]
            try:
                pairs = [await through_sandbox(ws, True, limited, False) for _ in range(n)]
            finally:
                sandbox._drops_privileges = drops  # type: ignore[assignment]
            rows["  baseline: same, as root (no uid drop, bind mounts)"] = [p[0] for p in pairs]
    base = statistics.median(rows["bare asyncio subprocess"])
    for label, values in rows.items():
        med = statistics.median(values)
        print(f"{label:58s} median {med * 1000:6.1f} ms  (+{(med - base) * 1000:5.1f} ms)", file=sys.stdout)
    print(json.dumps({label: round(statistics.median(values) * 1000, 2) for label, values in rows.items()}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 runs each instead of 30, for a smoke test")
    asyncio.run(main(5 if parser.parse_args().quick else 30))
