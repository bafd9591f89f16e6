"""Where a local job's CPU goes: `.venv/bin/python bench/job_cost.py [--quick] [--jobs N] [--py-spy]`.

Runs N trivial jobs (bench/local_jobs.py's) submitted at once on the embedded
engine while `perf record` (root) traces every task's run time
(sched:sched_stat_runtime) with forks and execs, then charges each task's CPU
to the part of the job it belongs to by its place in the engine's process
tree and the program it runs at the time: the engine's own process (the
bench's client included), the per-job monitor, the pod launchers and the
pods, the sandbox's start (gate, drop stage, bwrap), its watchers, the
algorithm. Only this process's tree is counted, so other load on a shared
machine does not add to it (it does slow everything down: compare CPU, not
time). Kernel threads (RCU, kworkers: namespace and cgroup teardown) are
machine-wide and listed apart. `--py-spy` also samples the engine's process
and sorts its time by module. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.local_jobs import Engine

FORK = "fork-of-"
EVENTS = ("sched:sched_stat_runtime", "sched:sched_process_fork", "sched:sched_process_exec")
TRACED = [arg for event in EVENTS for arg in ("-e", event)]
_LINE = re.compile(r"^\s*(?P<comm>.*?)\s+(?P<tid>\d+)\s+(?P<time>[\d.]+):\s+sched:(?P<event>\w+):\s+(?P<trace>.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")


@dataclass
class Task:
    tid: int
    parent: int | None
    image: str  # the program it runs now ("" until its first exec: its parent's)
    images: list[str] = field(default_factory=list)
    cpu: collections.Counter[str] = field(default_factory=collections.Counter)  # image -> ns in the window


def snapshot(root: int) -> dict[int, Task]:
    """The tasks under `root` now, from /proc: those started before perf (it may start late
    on a loaded machine) are known by their place, not by the forks it saw."""
    parents, argv0 = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                parents[int(entry.name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv0[int(entry.name)] = os.path.basename(f.read().split(b"\0")[0].decode(errors="replace"))
        except (OSError, IndexError, ValueError):
            continue
    tasks: dict[int, Task] = {root: Task(root, None, "engine")}
    added = True
    while added:
        added = False
        for pid, parent in parents.items():
            if pid in tasks or parent not in tasks:
                continue
            same = argv0[pid] == argv0.get(parent) or tasks[parent].image.removeprefix(FORK) == argv0[pid]
            base = tasks[parent].image.removeprefix(FORK) if same else argv0[pid]
            tasks[pid] = Task(pid, parent, FORK + base if same else base, [] if same else [base])
            added = True
    for pid in list(tasks):
        try:
            threads = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
        except OSError:
            continue
        for tid in threads:
            image = tasks[pid].image
            tasks[tid] = Task(tid, pid, image if image.startswith(FORK) else FORK + image)
    return tasks


def parse(
    script: str, known: dict[int, Task], window: tuple[float, float]
) -> tuple[dict[int, Task], collections.Counter[str]]:
    """Tasks under the root (`known`, and all they forked) with their CPU per program in the
    window; kernel threads' CPU by name."""
    tasks = dict(known)
    kernel: collections.Counter[str] = collections.Counter()
    start, end = window
    for line in script.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        fields = dict(_FIELD.findall(m["trace"]))
        event = m["event"]
        if event == "sched_process_fork":
            parent, child = int(fields["pid"]), int(fields["child_pid"])
            if parent in tasks:  # a thread, or a process until its first exec: its parent's program
                image = tasks[parent].image
                tasks[child] = Task(child, parent, image if image.startswith(FORK) else FORK + image)
        elif event == "sched_process_exec":
            task = tasks.get(int(fields["pid"]))
            if task is not None:
                task.image = os.path.basename(fields["filename"])
                task.images.append(task.image)
        elif event == "sched_stat_runtime" and start <= float(m["time"]) <= end:
            pid = int(fields["pid"])
            if pid in tasks:
                tasks[pid].cpu[tasks[pid].image] += int(fields["runtime"])
            elif re.match(r"^(kworker|rcu|ksoftirqd|migration|kcompactd|khugepaged)", fields["comm"]):
                kernel[fields["comm"].split("/")[0]] += int(fields["runtime"])
    return tasks, kernel


def classify(tasks: dict[int, Task], root: int) -> collections.Counter[str]:
    """ns per part of the job."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for task in tasks.values():
        if task.parent is not None:
            children[task.parent].append(task.tid)

    def subtree(tid: int) -> list[Task]:
        out, stack = [], [tid]
        while stack:
            t = tasks[stack.pop()]
            out.append(t)
            stack += children[t.tid]
        return out

    parts: collections.Counter[str] = collections.Counter()
    seen: set[int] = set()
    for tid in [root, *children[root]]:
        task = tasks[tid]
        if tid == root or not task.images:  # the engine and its threads (no exec of their own)
            if tid != root:
                seen.add(tid)
                parts["engine: process"] += sum(task.cpu.values())
                for sub in subtree(tid)[1:]:
                    seen.add(sub.tid)
                    parts["engine: its other children"] += sum(sub.cpu.values())
            else:
                seen.add(tid)
                parts["engine: process"] += sum(task.cpu.values())
            continue
        tree = subtree(tid)
        seen.update(t.tid for t in tree)
        monitor = any("setpriv" in t.images for t in tree)
        for sub in tree:
            for image, ns in sub.cpu.items():
                parts[_part(sub, image, tid, monitor)] += ns
    for task in tasks.values():
        if task.tid not in seen:
            parts["unattributed"] += sum(task.cpu.values())
    return parts


def _part(task: Task, image: str, top: int, monitor: bool) -> str:
    forked = image.startswith(FORK)  # a thread, a forked child, or a child before its exec
    base = image.removeprefix(FORK)
    if not monitor:
        if task.tid == top:
            return "pods: launcher (fork server)"
        return "pods: forked pods (pod_config, pod_publish)"
    if base == "python":  # the venv's interpreter: the monitor fork server and its monitors
        if forked and task.images:
            return "monitor: its children until their exec"
        return "monitor: python (fork server, monitors)"
    if base.startswith("python"):
        return "algorithm (python3 algo.py)"
    if base == "bwrap":
        return "sandbox: bwrap"
    if base == "sh" and forked and not task.images:
        return "sandbox: watcher shells (forks)"
    if base in ("setpriv", "sh", "unshare", "mount"):
        return "sandbox: gate + drop stage (setpriv, sh, unshare, mount)"
    return f"monitor tree: {base}"


async def run(jobs: int, max_jobs: int, py_spy: bool, root: Path) -> dict[str, object]:
    data = root / "perf.data"
    perf = subprocess.Popen(
        ["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-o", str(data), "-a", *TRACED],
        stdout=subprocess.DEVNULL,
    )
    spy = None
    await asyncio.sleep(1.0)  # perf is recording
    async with Engine(root / "engine", "forkserver", max_jobs=max_jobs) as engine:
        await engine.run_job()  # the fork server and the idle monitor start
        if py_spy:
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--nonblocking",
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    str(root / "spy.txt"),
                    "-p",
                    str(os.getpid()),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)
        known = snapshot(os.getpid())
        started = time.monotonic()
        await asyncio.gather(*(engine.run_job() for _ in range(jobs)))
        ended = time.monotonic()
        # the last runs' cleanup (monitor exit, cgroup removal) is part of their cost
        await asyncio.sleep(0.5)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait()
    window = (started, ended + 0.5)
    perf.send_signal(signal.SIGINT)
    perf.wait()
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "comm,tid,time,event,trace"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    tasks, kernel = parse(script, known, window)
    parts = classify(tasks, os.getpid())
    result: dict[str, object] = {
        "jobs": jobs,
        "max_jobs": max_jobs,
        "wall_s": round(ended - started, 2),
        "jobs_per_s": round(jobs / (ended - started), 1),
        "cpu_ms_per_job": {k: round(v / 1e6 / jobs, 1) for k, v in sorted(parts.items())},
        "total_ms_per_job": round(sum(parts.values()) / 1e6 / jobs, 1),
        "kernel_threads_ms_per_job_machine_wide": round(sum(kernel.values()) / 1e6 / jobs, 1),
    }
    if spy is not None:
        result["engine_by_module_pct"] = modules(root / "spy.txt")
    return result


_MODULES = (
    ("sqlalchemy", "store: SQLAlchemy"),
    ("sqlite3", "store: sqlite3"),
    ("event_log", "store: event log"),
    ("plumbing/database", "store: plumbing.database"),
    ("grpc", "gRPC"),
    ("monitor.py", "backend: monitor launch"),
    ("pod_launcher", "backend: pod launcher"),
    ("backends/local", "backend: local"),
    ("orchestrator", "orchestrator"),
    ("bench/", "the bench's client"),
    ("subprocess.py", "subprocess"),
    ("shutil.py", "workspace (shutil)"),
    ("pathlib.py", "workspace (pathlib)"),
    ("asyncio", "asyncio loop"),
    ("threading.py", "threads idle"),
)


def modules(path: Path) -> dict[str, float]:
    """py-spy's raw stacks: samples per part, by the innermost frame of a known module."""
    counts: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        part = "other"
        for frame in reversed(frames):
            hit = next((name for key, name in _MODULES if key in frame), None)
            if hit is not None:
                part = hit
                break
        if "idle" in stack.lower() or frames[-1].startswith(("select", "epoll", "_wait")):
            part += " (waiting)"
        counts[part] += int(n)
    total = sum(counts.values()) or 1
    return {k: round(100 * v / total, 1) for k, v in counts.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, help="default 200; 10 with --quick")
    parser.add_argument("--max-jobs", type=int, default=8)
    parser.add_argument("--py-spy", action="store_true", help="also sample the engine's process")
    parser.add_argument("--quick", action="store_true", help="10 jobs, for a smoke test")
    args = parser.parse_args()
    args.jobs = args.jobs or (10 if args.quick else 200)
    with tempfile.TemporaryDirectory(prefix="c2d-jobcost-") as tmp:
        os.environ["C2D_DATA_DIR"] = str(Path(tmp, "data"))
        os.environ.setdefault("C2D_LOG_LEVEL", "WARNING")
        result = asyncio.run(run(args.jobs, args.max_jobs, args.py_spy, Path(tmp)))
    print(f"{args.jobs} trivial jobs, max_jobs {args.max_jobs}: {result['jobs_per_s']} jobs/s")
    for part, ms in result["cpu_ms_per_job"].items():  # type: ignore[attr-defined]
        print(f"  {part:58s} {ms:7.1f} ms CPU per job")
    print(f"  {'total (this process tree)':58s} {result['total_ms_per_job']:7.1f}")
    kernel = result["kernel_threads_ms_per_job_machine_wide"]
    print(f"  {'kernel threads, machine-wide (not only ours)':58s} {kernel:7.1f}")
    for part, pct in result.get("engine_by_module_pct", {}).items():  # type: ignore[attr-defined]
        print(f"  engine samples: {part:44s} {pct:5.1f} %")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
