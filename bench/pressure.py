"""Pressure benchmark: `.venv/bin/python bench/pressure.py [--profile ci|long] [--examples N] [--rpc NAME]`.

Proof under pressure (issue 19), one section per kind of pressure; each
section returns its table rows and its keys of the final JSON line, so a
section is added by writing one function and listing it in SECTIONS.

1. fuzz: every RPC of every service (enumerated from the generated
   descriptors) gets hypothesis-generated hostile requests over real gRPC,
   on the embedded stack with a fresh PostgreSQL database (tests/fuzz: the
   same harness, regression examples and failure rules as CI). Reports the
   RPCs fuzzed, the cases sent, the status codes answered and the RPCs that
   failed (INTERNAL/UNKNOWN/UNAVAILABLE, a hang, a server down, internals
   in a message).

Prints a table and, as its last line, one JSON object. Not a test: figures
to report (target: fuzz_failures == 0).
"""

from __future__ import annotations

import argparse
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

from tests.fuzz.harness import all_rpcs, fuzz, profile, running_stack
from tests.fuzz.regressions import REGRESSIONS

Section = Callable[[argparse.Namespace], tuple[list[str], dict[str, Any]]]


def fuzz_section(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    os.environ["C2D_FUZZ_PROFILE"] = args.profile
    chosen = settings(profile(), max_examples=args.examples) if args.examples else profile()
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


SECTIONS: dict[str, Section] = {"fuzz": fuzz_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="ci", choices=["ci", "long"], help="the hypothesis profile (tests/fuzz)")
    parser.add_argument("--examples", type=int, default=0, help="examples per RPC (default: the profile's)")
    parser.add_argument("--rpc", default="", help="only the RPCs whose Service/Method name contains this")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
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
