"""freeze_startup_heap: what lives at start-up leaves the collector's passes,
and garbage waiting for collection is collected, not frozen with it."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import gc, weakref
from plumbing.server import freeze_startup_heap

class Node:
    pass

gc.disable()  # so only freeze_startup_heap can collect the cycle
cycle = Node(); cycle.me = cycle
gone = weakref.ref(cycle)
del cycle
kept = [Node() for _ in range(1000)]
freeze_startup_heap()
assert gone() is None, "the garbage cycle was frozen, not collected"
assert gc.get_freeze_count() >= 1000, gc.get_freeze_count()
print("ok")
"""


def test_start_up_objects_are_frozen_and_garbage_collected_first():
    # Its own interpreter: freezing is for the whole process.
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
