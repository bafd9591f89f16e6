"""Per-run cgroups for the local engine: memory, CPU quota and pids limits.

Detection works per controller, so v1, v2 and the "hybrid" layout (v1
controllers plus an empty cgroup2 mount, as on the machines this was built
on) are all handled:

* v1: a controller is usable when a ``cgroup`` mount carries it. Job cgroups
  live in ``<mount>/<engine's own cgroup>/c2d/<job>`` — nested under the
  engine's own cgroup rather than at the root, so the jobs stay inside
  whatever accounting the engine itself is subject to (when the engine sits
  at the root that is simply ``/sys/fs/cgroup/<controller>/c2d/<job>``).
  Files: ``memory.limit_in_bytes`` (+ ``memory.memsw.limit_in_bytes`` so swap
  is no way around it), ``cpu.cfs_quota_us``/``cpu.cfs_period_us``,
  ``pids.max``. OOM kills are read from ``memory.oom_control`` (``oom_kill``).
* v2: the controller must be listed in the unified mount's
  ``cgroup.controllers`` and be enabled down to ``<engine cgroup>/c2d``
  (``cgroup.subtree_control``); the kernel refuses that when the engine's own
  cgroup holds processes and is not the root, in which case v2 limits are
  simply unavailable. Files: ``memory.max`` (+ ``memory.swap.max``),
  ``cpu.max``, ``pids.max``; OOM kills from ``memory.events``; ``cgroup.kill``
  when present. The v2 path has not been exercised on a real v2 host here.

Writing any of this needs root (or a delegated subtree). Whatever is not
usable is left out, and the caller reports only what was applied.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

CONTROLLERS = ("memory", "cpu", "pids")
CPU_PERIOD_US = 100_000
_PARENT = "c2d"
# a file that must exist in a cgroup for the controller to be usable
_V1_PROBE = {"memory": "memory.limit_in_bytes", "cpu": "cpu.cfs_quota_us", "pids": "pids.max"}


class CgroupError(RuntimeError):
    pass


@dataclass(frozen=True)
class ControllerPlace:
    version: int  # 1 or 2
    parent: Path  # the c2d/ directory under which job cgroups are made


@dataclass(frozen=True)
class CgroupHost:
    controllers: dict[str, ControllerPlace] = field(default_factory=dict)

    @property
    def version(self) -> int | None:
        versions = {p.version for p in self.controllers.values()}
        if not versions:
            return None
        # hybrid hosts with limits from both hierarchies report v1, where most are
        return 1 if 1 in versions else 2

    def describe(self) -> str:
        if not self.controllers:
            return "cgroups: none usable"
        names = ", ".join(c for c in CONTROLLERS if c in self.controllers)
        return f"cgroup v{self.version} ({names})"


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value: str) -> None:
    # open without O_CREAT/O_TRUNC: cgroupfs files already exist and a
    # truncating open is refused by some kernels
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(root, mountpoint, fstype, super options) of each cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            fstype = rfields[0]
            if fstype not in ("cgroup", "cgroup2"):
                continue
            mountpoint = fields[4].replace("\\040", " ")
            out.append((fields[3], mountpoint, fstype, set(rfields[2].split(","))))
    return out


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for the unified hierarchy) -> this process's cgroup path."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                own[c] = path
    return own


def _under_mount(mountpoint: str, mount_root: str, cgroup_path: str) -> Path | None:
    if mount_root != "/" and not (cgroup_path == mount_root or cgroup_path.startswith(mount_root + "/")):
        return None  # our cgroup is not visible through this mount
    rel = cgroup_path[len(mount_root) :] if mount_root != "/" else cgroup_path
    return Path(mountpoint) / rel.lstrip("/")


def _prepare_v1(base: Path, controller: str) -> Path | None:
    parent = base / _PARENT
    try:
        parent.mkdir(exist_ok=True)
    except OSError:
        return None
    if not (parent / _V1_PROBE[controller]).exists() or not os.access(parent, os.W_OK):
        return None
    return parent


def _prepare_v2(base: Path) -> tuple[Path | None, set[str]]:
    """Enable what we can from the engine's cgroup down to c2d/; returns c2d/ and its usable controllers."""
    try:
        offered = set(_read(base / "cgroup.controllers").split())
    except OSError:
        return None, set()
    wanted = offered & set(CONTROLLERS)
    if not wanted:
        return None, set()
    parent = base / _PARENT
    try:
        parent.mkdir(exist_ok=True)
    except OSError:
        return None, set()
    for directory in (base, parent):
        for c in sorted(wanted):
            try:
                _write(directory / "cgroup.subtree_control", f"+{c}")
            except OSError:
                pass  # EBUSY (engine's cgroup holds processes) or not delegated
    try:
        enabled = set(_read(parent / "cgroup.subtree_control").split())
    except OSError:
        return None, set()
    usable = wanted & enabled
    return (parent if usable and os.access(parent, os.W_OK) else None), usable


@functools.lru_cache(maxsize=1)
def detect() -> CgroupHost:
    """Find where job cgroups can be made; creates the shared c2d/ directories."""
    try:
        mounts = _mounts()
        own = _own_cgroups()
    except OSError:
        return CgroupHost()
    places: dict[str, ControllerPlace] = {}
    for root, mountpoint, fstype, opts in mounts:
        if fstype != "cgroup":
            continue
        for c in CONTROLLERS:
            if c in opts and c not in places and c in own:
                base = _under_mount(mountpoint, root, own[c])
                parent = _prepare_v1(base, c) if base is not None else None
                if parent is not None:
                    places[c] = ControllerPlace(1, parent)
    missing = [c for c in CONTROLLERS if c not in places]
    if missing and "" in own:
        for root, mountpoint, fstype, _ in mounts:
            if fstype != "cgroup2":
                continue
            base = _under_mount(mountpoint, root, own[""])
            if base is None:
                continue
            parent, usable = _prepare_v2(base)
            if parent is not None:
                for c in missing:
                    if c in usable:
                        places[c] = ControllerPlace(2, parent)
            break
    return CgroupHost(places)


def cgroup_name(job_id: str) -> str:
    """A directory-safe name for a job; unsafe ids keep a hash so they stay distinct."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", job_id)[:64].lstrip(".") or "job"
    if safe != job_id:
        safe += "-" + hashlib.sha256(job_id.encode()).hexdigest()[:8]
    return safe


@dataclass
class JobCgroup:
    """The cgroups of one run (one directory per hierarchy used)."""

    name: str
    dirs: dict[str, tuple[int, Path]]  # controller -> (version, directory)
    applied: tuple[str, ...]  # e.g. ("cgroup:memory", "cgroup:pids")

    @classmethod
    def create(
        cls,
        host: CgroupHost,
        job_id: str,
        *,
        memory_bytes: int | None = None,
        cpu_cores: float | None = None,
        max_pids: int | None = None,
    ) -> JobCgroup:
        """Make the job's cgroups and set the limits; nothing runs in them yet.

        Every usable controller gets a directory even without a limit, so the
        run's processes can always be found (and killed) through it.
        """
        name = cgroup_name(job_id)
        dirs: dict[str, tuple[int, Path]] = {}
        made: list[Path] = []
        try:
            for c, place in host.controllers.items():
                d = place.parent / name
                if d in made:  # v2: one directory serves every controller
                    dirs[c] = (place.version, d)
                    continue
                place.parent.mkdir(exist_ok=True)  # in case someone removed it since detect()
                if d.exists():
                    _reclaim_stale(d)
                d.mkdir()
                made.append(d)
                dirs[c] = (place.version, d)
            group = cls(name, dirs, ())
            group.applied = group._apply(memory_bytes, cpu_cores, max_pids)
            return group
        except BaseException:
            for d in made:
                _rmdir_retry(d, 0.5)
            raise

    def _apply(self, memory_bytes: int | None, cpu_cores: float | None, max_pids: int | None) -> tuple[str, ...]:
        applied = []
        if memory_bytes is not None and "memory" in self.dirs:
            v, d = self.dirs["memory"]
            if v == 1:
                _write(d / "memory.limit_in_bytes", str(memory_bytes))
                try:  # memsw must be >= the limit and exists only with swap accounting
                    _write(d / "memory.memsw.limit_in_bytes", str(memory_bytes))
                except OSError:
                    pass
            else:
                _write(d / "memory.max", str(memory_bytes))
                try:
                    _write(d / "memory.swap.max", "0")
                except OSError:
                    pass
            applied.append("cgroup:memory")
        if cpu_cores is not None and "cpu" in self.dirs:
            v, d = self.dirs["cpu"]
            quota = max(1000, int(cpu_cores * CPU_PERIOD_US))
            if v == 1:
                _write(d / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(d / "cpu.cfs_quota_us", str(quota))
            else:
                _write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            applied.append("cgroup:cpu")
        if max_pids is not None and "pids" in self.dirs:
            _, d = self.dirs["pids"]
            _write(d / "pids.max", str(max_pids))
            applied.append("cgroup:pids")
        return tuple(applied)

    def _unique_dirs(self) -> list[tuple[int, Path]]:
        seen: dict[Path, int] = {}
        for v, d in self.dirs.values():
            seen.setdefault(d, v)
        return [(v, d) for d, v in seen.items()]

    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for _, d in self._unique_dirs()]

    def join_files(self) -> list[Path]:
        """Where a single-threaded process moves itself by writing "0": v1 ``tasks`` (the
        writing thread only, which the kernel moves without the global lock, and so without
        the RCU grace period, that moving a whole process takes), v2 ``cgroup.procs``."""
        return [d / ("tasks" if v == 1 else "cgroup.procs") for v, d in self._unique_dirs()]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for f in self.procs_files():
            try:
                found.update(int(x) for x in _read(f).split())
            except OSError:
                pass
        return found

    def kill_all(self) -> int:
        """One pass of SIGKILL to everything in the job's cgroups; returns how many were signalled."""
        for v, d in self._unique_dirs():
            if v == 2 and (d / "cgroup.kill").exists():
                try:
                    _write(d / "cgroup.kill", "1")
                except OSError:
                    pass
        n = 0
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
                n += 1
            except ProcessLookupError:
                pass
        return n

    def oom_killed(self) -> bool:
        if "memory" not in self.dirs:
            return False
        v, d = self.dirs["memory"]
        path = d / ("memory.oom_control" if v == 1 else "memory.events")
        try:
            for line in _read(path).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def pids_limit_hits(self) -> int:
        """How often a fork was refused by pids.max (0 when unknown)."""
        if "pids" not in self.dirs:
            return 0
        _, d = self.dirs["pids"]
        try:
            for line in _read(d / "pids.events").splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def remove(self, timeout_s: float = 1.0) -> None:
        """Kill leftovers and delete the directories (retried: exiting tasks linger briefly)."""
        deadline = time.monotonic() + timeout_s
        while self.kill_all() and time.monotonic() < deadline:
            time.sleep(0.01)
        for _, d in self._unique_dirs():
            _rmdir_retry(d, max(0.1, deadline - time.monotonic()))


def sweep_empty(host: CgroupHost, prefix: str = "") -> int:
    """Remove empty job cgroups (named with ``prefix``) that runs of a crashed engine left.

    Meant for engine start-up. A cgroup with processes is never touched (the
    kernel refuses). With several engines on one host, one engine's sweep can
    race another's start between mkdir and moving its process in; that start
    then fails cleanly. Returns how many directories were removed.
    """
    removed = 0
    for parent in {place.parent for place in host.controllers.values()}:
        try:
            children = [c for c in parent.iterdir() if c.is_dir() and c.name.startswith(prefix)]
        except OSError:
            continue
        for child in children:
            try:
                child.rmdir()
                removed += 1
            except OSError:
                pass  # busy: a live run
    return removed


def _is_zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return True  # gone already


def _reclaim_stale(d: Path) -> None:
    """A directory left by a crashed run of the same job: reuse it only if nothing runs there.

    Zombies may linger in it until whoever inherited them reaps them; they are
    waited for (up to a second), live processes are refused.
    """
    try:
        live = [p for p in _read(d / "cgroup.procs").split() if not _is_zombie(p)]
    except OSError:
        live = []
    if live:
        raise CgroupError(f"cgroup {d} still has processes {live[:5]}: is this job already running?")
    _rmdir_retry(d, 1.0)


def _rmdir_retry(d: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise CgroupError(f"cannot remove cgroup {d}: {e}") from e
            time.sleep(0.01)
