"""Every bench script has a smoke run in CI, and only one: a script left out would rot unseen."""

from __future__ import annotations

import collections
import importlib
from pathlib import Path

from tests.bench import smoke


def test_every_bench_script_is_smoke_tested_once_with_its_documented_keys():
    # One test file per group of scripts, so that xdist's --dist loadfile spreads them over workers.
    modules = [importlib.import_module(f"tests.bench.{p.stem}") for p in Path(__file__).parent.glob("test_bench_*.py")]
    tested = collections.Counter(name for module in modules for name in getattr(module, "SCRIPTS", ()))

    assert set(tested) == smoke.scripts() == set(smoke.CHECKS)
    assert max(tested.values()) == 1, tested
