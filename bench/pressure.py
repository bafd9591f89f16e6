"""Pressure benchmark: `.venv/bin/python bench/pressure.py [--only fuzz,load,faults] [--quick] [--profile ci|long] ...`.

Proof under pressure (issue 19), one section per kind of pressure; each
section returns its table rows and its keys of the final JSON line, so a
section is added by writing one function and listing it in SECTIONS.

1. fuzz: every RPC of every service (enumerated from the generated
   descriptors) gets hypothesis-generated hostile requests over real gRPC,
   on the embedded stack with a fresh PostgreSQL database (testkit/fuzz: the
   same harness, regression examples and failure rules as CI). Reports the
   RPCs fuzzed, the cases sent, the status codes answered and the RPCs that
   failed (INTERNAL/UNKNOWN/UNAVAILABLE, a hang, a server down, internals
   in a message).

2. load: `c2d up --processes` (one process per server, local backend, a
   fresh PostgreSQL database); 50 consumers, each with its own key and
   channel, submit 2000 of the demo's jobs at once (each with its own two
   orders, signed), with a WatchJob stream open on 100 of them from their
   start. Checks that every job completes and that every watcher sees every
   transition of its job (1 10 20 30 40 60 70) in order; reads each
   server's RSS (VmRSS) and open fds (/proc/PID/fd) before and after, both
   once the fd counts held still. "Before" is taken after a warm-up batch
   (100 jobs; --quick: 20), so the allocator's and the connection pools'
   growth on the first jobs does not count.

3. faults: trials of testkit/faults.py on one `c2d up --processes` stack
   (a private PostgreSQL, the results storage on a small tmpfs of its own):
   each seed draws a fault (kill -9 of the engine, the operator-service, the
   provider or a job's pod; a PostgreSQL crash-restart; the state stream
   cut; the results storage full; the replies to 1-3 COMMITs lost), its
   moment and 3-5 jobs; then the invariants (every job terminal or
   progressing; the engine's log against the service's history; orders
   against jobs; results readable by their owner only). --trials N (default 20) from --seed S (default 0); a
   violation prints the seed's replay command.

--quick is a smoke run (tests/bench runs it in CI): 3 examples per RPC
(tests/fuzz runs the ci profile's 12), 60 jobs from 10 clients, 10
watchers, after the same warm-up of 20 (tests/e2e/test_load.py runs 200),
and 2 fault trials (tests/e2e/test_faults.py runs seeds 0-19).

Prints a table and, as its last line, one JSON object. Not a test: figures
to report (targets: fuzz_failures == 0; all load jobs completed, no
transition out of order, fd_growth == 0, rss_growth_mib small).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis import settings

from testkit.faults import TrialResult, fault_stack, replay_command, run_trial, tally
from testkit.fuzz.harness import all_rpcs, fuzz, profile, running_stack
from testkit.fuzz.regressions import REGRESSIONS
from testkit.load import LOCAL_PATH, run_load
from testkit.stacks import fresh_postgres_database

# --quick: CI runs the full-sized sections as tests (tests/fuzz, tests/e2e); this checks the script itself.
QUICK_EXAMPLES = 3  # per RPC, besides the regression examples
QUICK_TRIALS = 2
Section = Callable[[argparse.Namespace], tuple[list[str], dict[str, Any]]]


def fuzz_section(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    os.environ["C2D_FUZZ_PROFILE"] = args.profile
    examples = args.examples or (QUICK_EXAMPLES if args.quick else 0)
    chosen = settings(profile(), max_examples=examples) if examples else profile()
    rpcs = [rpc for rpc in all_rpcs() if not args.rpc or args.rpc in rpc.name]
    failed: dict[str, str] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as data, running_stack(Path(data) / "c2d") as stack:
        for rpc in rpcs:
            try:
                fuzz(stack, rpc, REGRESSIONS.get(rpc.name, []), chosen)
            except Exception as exc:
                # What the harness saw first (hypothesis may report a flaky or grouped failure instead).
                seen = stack.tally.failures.get(rpc.name) or [str(exc).splitlines()[0]]
                failed[rpc.name] = seen[0][:200]
        tally = stack.tally
    elapsed = time.perf_counter() - started
    codes: Counter[str] = Counter()
    for (_, code), n in tally.codes.items():
        codes[code] += n
    rows = [f"{'RPC':<44}{'cases':>7}  {'answers':<50}"]
    for rpc in rpcs:
        answers = {code: n for (name, code), n in tally.codes.items() if name == rpc.name}
        text = ", ".join(f"{code} {n}" for code, n in sorted(answers.items(), key=lambda kv: -kv[1]))
        rows.append(f"{rpc.name:<44}{tally.cases[rpc.name]:>7}  {text[:80]}")
        if rpc.name in failed:
            rows.append(f"  FAILED: {failed[rpc.name]}")
    cases = sum(tally.cases.values())
    rows.append(f"{'total':<44}{cases:>7}  {len(failed)} RPC(s) failed; {elapsed:.0f} s; profile {args.profile}")
    rows.append("answers: " + ", ".join(f"{code} {n}" for code, n in codes.most_common()))
    return rows, {
        "rpcs_fuzzed": len(rpcs),
        "fuzz_cases": cases,
        "fuzz_failures": len(failed),
        "fuzz_failed_rpcs": sorted(failed),
        "fuzz_seconds": round(elapsed, 1),
        "fuzz_profile": args.profile,
    }


def load_section(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    jobs, clients, watchers, warmup = (60, 10, 10, 20) if args.quick else (2000, 50, 100, 100)
    with tempfile.TemporaryDirectory() as data, fresh_postgres_database("c2d_bench") as url:
        result = asyncio.run(
            run_load(Path(data) / "c2d", url, jobs, clients, watchers, warmup, say=lambda s: print(s, file=sys.stderr))
        )
    bad = result.out_of_order()
    rows = [
        f"{jobs} jobs from {clients} clients at once, {watchers} WatchJob streams; local backend, "
        f"PostgreSQL, one process per server; after a warm-up of {warmup} jobs",
        f"completed {result.completed} of {result.submitted} in {result.seconds:.0f} s "
        f"({result.completed / result.seconds:.1f} jobs/s); watchers out of order: {len(bad)} of {len(result.watched)}",
        f"{'server':<18}{'RSS before':>12}{'RSS after':>12}{'fds before':>12}{'fds after':>11}",
    ]
    for name, before in result.before.items():
        after = result.after[name]
        rss = f"{before.rss_kib / 1024:>8.1f} MiB{after.rss_kib / 1024:>8.1f} MiB"
        rows.append(f"{name:<18}{rss}{before.fds:>12}{after.fds:>11}")
    for job_id, why in list(result.failed.items())[:5]:
        rows.append(f"  NOT COMPLETED {job_id}: {why[:150]}")
    rows.append(f"servers' ERROR log lines: {len(result.server_errors)}")
    rows += [f"  {line[:300]}" for line in result.server_errors[:3]]
    for watched in bad[:5]:
        rows.append(f"  OUT OF ORDER {watched.job_id}: {[s for _, s in watched.updates]} {watched.error}")
    return rows, {
        "load_jobs_submitted": result.submitted,
        "load_jobs_completed": result.completed,
        "load_clients": clients,
        "watchers": len(result.watched),
        "transitions_out_of_order": len(bad),
        "transitions_expected": LOCAL_PATH,
        "rss_growth_mib": round(result.rss_growth_mib(), 1),
        "fd_growth": result.fd_growth(),
        "load_warmup_jobs": warmup,
        "load_server_errors": len(result.server_errors),
        "seconds": round(result.seconds, 1),
    }


def faults_section(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    trials = args.trials or (QUICK_TRIALS if args.quick else 20)
    seeds = range(args.seed, args.seed + trials)

    async def run() -> tuple[list[TrialResult], float]:
        with tempfile.TemporaryDirectory() as base:
            started = time.perf_counter()
            async with fault_stack(Path(base)) as stack:
                print(f"stack up in {time.perf_counter() - started:.0f} s; {trials} trials ...", file=sys.stderr)
                started = time.perf_counter()
                done = []
                for seed in seeds:
                    done.append(await run_trial(stack, seed))
                    print(done[-1].report(), file=sys.stderr)
                return done, time.perf_counter() - started

    results, elapsed = asyncio.run(run())
    rows = [f"{'seed':>5}  {'fault':<20}{'moment':<34}{'jobs':>5}  {'ended (status x jobs)':<26}{'violations':>10}"]
    for r in results:
        ended = Counter(status for status, _ in r.statuses.values())
        text = " ".join(f"{status}x{n}" for status, n in sorted(ended.items()))
        fault = r.plan.fault if r.injected else f"({r.plan.fault})"
        rows.append(
            f"{r.plan.seed:>5}  {fault:<20}{r.plan.moment.describe()[:33]:<34}{len(r.job_ids):>5}  {text:<26}"
            f"{len(r.violations):>10}"
        )
        rows += [f"       VIOLATION {v[:200]}" for v in r.violations]
        if r.violations:
            rows.append(f"       replay: {replay_command(r.plan.seed)}")
    figures = tally(results)
    rows.append(
        f"{figures['trials']} trials, {figures['jobs']} jobs in {elapsed:.0f} s; faults injected "
        f"{figures['faults_injected']} ({', '.join(f'{k} {n}' for k, n in figures['faults_by_kind'].items())}); "
        f"invariant violations {figures['invariant_violations']} ((fault): its moment never came)"
    )
    return rows, {
        **{f"faults_{k}" if k in ("trials", "jobs") else k: v for k, v in figures.items()},
        "faults_seconds": round(elapsed, 1),
    }


SECTIONS: dict[str, Section] = {"fuzz": fuzz_section, "load": load_section, "faults": faults_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="ci", choices=["ci", "long"], help="the hypothesis profile (tests/fuzz)")
    parser.add_argument(
        "--examples", type=int, default=0, help="examples per RPC (default: the profile's; 3 with --quick)"
    )
    parser.add_argument("--rpc", default="", help="only the RPCs whose Service/Method name contains this")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--only", dest="sections", help="the same as --sections")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run (fuzz: 3 examples per RPC; load: 60 jobs, 10 clients; faults: 2 trials)",
    )
    parser.add_argument("--trials", type=int, default=0, help="fault trials (default 20; --quick 2)")
    parser.add_argument("--seed", type=int, default=0, help="the first fault trial's seed")
    args = parser.parse_args()
    result: dict[str, Any] = {}
    for name in args.sections.split(","):
        rows, keys = SECTIONS[name](args)
        print(f"\n== {name} ==")
        print("\n".join(rows))
        result.update(keys)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
