"""What the unprivileged reader costs: `.venv/bin/python bench/job_file_reader.py [--quick]`.

`job_files.open_file(..., unprivileged=True)` (the engine's log reader, the
provider's local results) opens on a reader thread whose fsuid/fsgid are 65534
when the process is root. This times one open + fstat + 64 KiB read + close of
a small file two levels below the root, as the log reader does it, both ways:
as root on the calling thread, and through the reader thread; one caller, then
four callers at once (the reader has job_files.READER_THREADS threads). The
difference is the thread hop. Prints a table and, as its last line, one JSON
object. Not a test: a figure to report (target: the hop adds under 100 µs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plumbing import job_files

RELPATH = "admin/algorithm.log"


def one_read(root: Path, unprivileged: bool) -> None:
    with job_files.open_file(root, RELPATH, unprivileged=unprivileged) as f:
        f.read(64 * 1024)


def per_read_us(root: Path, unprivileged: bool, reads: int, callers: int) -> float:
    """Median over 5 rounds of the wall time per read, with `callers` threads reading at once."""
    rounds = []
    for _ in range(5):
        start = threading.Barrier(callers + 1)

        def caller(start: threading.Barrier = start) -> None:
            start.wait()
            for _ in range(reads):
                one_read(root, unprivileged)

        threads = [threading.Thread(target=caller) for _ in range(callers)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        rounds.append((time.perf_counter() - t0) / (reads * callers) * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer reads")
    args = parser.parse_args()
    reads = 500 if args.quick else 5000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "job")
        (root / "admin").mkdir(parents=True)
        root.chmod(0o755)
        fd = os.open(root / RELPATH, os.O_WRONLY | os.O_CREAT, 0o640)
        os.write(fd, b"x" * 4096)
        job_files.share_with_reader(fd)
        os.close(fd)
        print(job_files.describe_reader())
        one_read(root, True)  # the reader threads made
        figures = {}
        print(f"{'callers':>8} {'as root µs/read':>16} {'reader µs/read':>15} {'hop µs':>8}")
        for callers in (1, 4):
            direct = per_read_us(root, False, reads, callers)
            hop = per_read_us(root, True, reads, callers)
            figures[f"callers_{callers}"] = {
                "root_us": round(direct, 1),
                "reader_us": round(hop, 1),
                "hop_us": round(hop - direct, 1),
            }
            print(f"{callers:>8} {direct:>16.1f} {hop:>15.1f} {hop - direct:>8.1f}")
    print(json.dumps({"bench": "job_file_reader", "euid": os.geteuid(), "reads": reads, **figures}))


if __name__ == "__main__":
    main()
