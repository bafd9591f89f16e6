"""Run one stranger's algorithm in a bubblewrap sandbox, with limits, and report how it ended.

What the algorithm sees (``use_sandbox=True``)
    New user, pid, net, ipc, uts and cgroup namespaces (and no way to make
    more user namespaces), no capabilities, its own session. It is uid and
    gid 1000 inside, and never root outside either: a root engine drops to
    a host uid of the job's own (``host_uid``) before bwrap makes the user
    namespace, and that uid owns only the job's outputs/ and logs/; another
    engine's sandbox has the engine's own (unprivileged) uid. A read-only root
    holding only /usr (and the /bin, /lib… links to it), a few harmless /etc
    files (ld.so cache, alternatives,
    localtime; with network also resolv.conf, hosts, nsswitch.conf, ssl certs),
    a fresh /proc and /dev, a private /tmp (tmpfs, capped at ``memory_bytes``
    when that is set, and charged to the memory cgroup), and /data:
    inputs/, transformations/, ddos/ read-only, outputs/ and logs/ writable.
    No network at all (not even the host's 127.0.0.1) unless
    ``allow_network``; then a network of its own (``network.py``: its own
    namespace, slirp4netns, nftables rules the algorithm cannot touch), which
    reaches public addresses and never the host, its loopback, private ranges
    or metadata addresses. The environment is exactly ``spec.env`` plus PATH and
    HOME=/tmp (spec.env wins if it sets them).

How it is started (race-free limits)
    The engine spawns ``setpriv --pdeathsig KILL`` (so the run dies if the
    engine does) running ``/bin/sh`` as a gate that blocks reading one line
    on its stdin. While it waits the engine sets its rlimits with prlimit(2);
    then it releases the gate, which checks its parent is still the engine,
    moves itself into the job's cgroups and execs bwrap
    (``--die-with-parent``, so the pid namespace dies with bwrap). Nothing
    of the algorithm runs before its limits are in place. The gate moves
    itself because that is cheap: on cgroup v1 it writes 0 to ``tasks``
    (its only thread), which the kernel does without the global lock that
    moving another process takes (an RCU grace period: 10-30 ms on a busy
    host, all of it on the job's clock). The parent-death
    signal follows the thread that spawned the run: run the event loop in a
    thread that lives as long as the engine (the main thread).

If the engine dies
    Parent-death signals alone do not do (bwrap's --die-with-parent is racy,
    bubblewrap#633: a bwrap killed in its first milliseconds leaves its child
    stuck or running). So the gate's stdin stays open as a lifeline that the
    engine never writes to again: on EOF a host-side watcher forked by the
    gate (outside the sandbox: the algorithm can neither see nor kill it)
    kills everything in the run's cgroups and the run's process group, and a
    watcher inside the sandbox kills everything in the pid namespace (which
    is what remains on hosts without cgroups). Empty cgroups of such runs are
    reclaimed when the same job starts again.

Limits
    * ``memory_bytes``: cgroup memory limit (memsw/swap too); an OOM kill is
      read from the cgroup and reported. It is *not* used for RLIMIT_AS when
      the cgroup works, because address space is not memory: node and
      threaded Python reserve gigabytes they never touch. When no memory
      cgroup is usable and ``address_space_bytes`` is None it falls back to
      RLIMIT_AS, as a strict limit beats none.
    * ``cpu_seconds``: RLIMIT_CPU per process (soft: SIGXCPU; hard one second
      later: SIGKILL). ``cpu_cores``: cgroup CFS quota for the whole run.
    * ``max_processes``: cgroup pids.max, counting threads too, plus the
      helpers (outer bwrap, the namespace's init, the lifeline watcher). Without a pids
      cgroup it falls back to RLIMIT_NPROC, which counts every process of the
      host uid, and which the kernel does not enforce at all for root (kuid 0;
      the user namespace does not change that). A root engine's sandboxes run
      as the job's own uid, so it holds there; an unsandboxed run as root has
      no process limit without the pids cgroup, and it is not listed in force.
    * ``max_file_bytes``: RLIMIT_FSIZE. Core dumps are always off (RLIMIT_CORE 0)
      so no image of the algorithm's memory reaches a host core handler.
    * ``disk_quota_bytes``: outputs/ + logs/ are walked every 100 ms (sizes or
      allocated blocks, whichever is larger, symlinks not followed); over the
      quota the run is killed (``disk_quota_exceeded``). A fast writer can
      overshoot by what it writes in one poll interval; set ``max_file_bytes``
      to bound single files tighter. Exceeding it and exiting between two
      polls is caught by a final check.
    * ``log_max_bytes``: stdout and stderr share one pipe that the engine
      copies to algorithm.log (so it can be followed while it grows);
      past the cap the rest is drained and dropped, after one marker line.
      That file (``spec.log_path``) is outside the workspace: the algorithm
      has no path to it, so it cannot swap it for a link to a host file that
      the log's readers would then serve; and those readers open it as
      job_files' unprivileged reader (group 65534: the file is 0640), so
      even then they could serve nothing root-only.
    * ``wall_timeout_s``: the whole tree is killed; ``timed_out``.

Exit status: bwrap reports an algorithm killed by signal N as exit code
128+N, and that is read back as signal N (the shell and Kubernetes
convention; an algorithm that itself exits 137 reads as SIGKILL too).

``use_sandbox=False`` (only for environments configured so) runs the same
command directly with the same rlimits, cgroups, timeout, quota and log
capture, but without namespaces: ``/data`` in argv and env values is
rewritten to the workspace (values already under the workspace are left
alone, so callers may pass host paths), the cwd is the workspace, HOME a
private temporary directory. Processes that leave the session survive a stop only
if no cgroup is usable.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from plumbing import job_files

from . import cgroups, network
from .cgroups import CgroupError, JobCgroup
from .network import JobNetwork, NetworkUnavailable

__all__ = [
    "CgroupError",
    "SandboxCapabilities",
    "SandboxLimits",
    "SandboxOutcome",
    "SandboxRun",
    "SandboxSpec",
    "SandboxUnavailable",
    "detect_capabilities",
    "disk_usage",
]

DATA = "/data"
RO_DIRS = ("inputs", "transformations", "ddos")
RW_DIRS = ("outputs", "logs")
LOG_NAME = "algorithm.log"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
DISK_POLL_S = 0.1
KILL_DEADLINE_S = 1.0
# counted in pids.max besides the algorithm: the host-side watcher, and when sandboxed
# the outer bwrap, the pid namespace's init and the in-sandbox watcher
SANDBOX_HELPER_PROCESSES = 4
NETWORK_HELPER_PROCESSES = 1  # slirp4netns, in the run's cgroups
DIRECT_HELPER_PROCESSES = 1
_ETC_ALWAYS = ("/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
# with network; resolv.conf and hosts are the job network's own (network.py)
_ETC_NETWORK = (
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
)
_ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# The gate. Arguments: the engine's pid (or -), N, N cgroup.procs files, N files to join
# the cgroups through (JobCgroup.join_files), the command.
# 1. Block until the engine writes a line (the rlimits are in place by then).
# 2. setpriv armed the parent-death signal before this shell started: if our parent is
#    still the engine, its death will kill us; if not, it died already and we must not run.
# 3. Move into the job's cgroups; children forked from now on (the watcher too) start there.
# 4. Stdin stays open as fd 3, the lifeline: the engine holds its write end for the whole
#    run and never writes again, so EOF means the engine is gone (or done with the run).
#    A host-side watcher (outside the sandbox, so the algorithm can neither see nor kill
#    it) then kills every process of the run's cgroups, then the run's process group
#    (itself included: while it lives, that group id cannot be reused by anyone else).
#    This covers what parent-death signals cannot: bwrap's --die-with-parent is racy
#    (bubblewrap#633: a bwrap killed while its child still sets up leaves the child stuck
#    or running).
# 5. exec the command: bwrap, or the algorithm itself when unsandboxed.
_GATE = r"""
read -r _ || exit 125
read -r _ _ _ ppid _ </proc/$$/stat
[ "$1" = - ] || [ "$ppid" = "$1" ] || exit 125
n=$2; shift 2; files=
while [ "$n" -gt 0 ]; do files="$files $1"; shift; n=$((n - 1)); done
for f in $files; do
  echo 0 >"$1" || { echo "c2d: the sandbox could not join its cgroup" >&2; exit 125; }
  shift
done
exec 3<&0 </dev/null
(
  read -r _ <&3
  read -r me _ </proc/self/stat
  for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    left=
    for f in $files; do
      while read -r p; do
        [ "$p" = "$me" ] || { kill -KILL "$p"; left=1; }
      done <"$f"
    done
    [ -z "$left" ] && break
  done
  kill -KILL -$$
) >/dev/null 2>&1 &
exec "$@"
"""
# Inside the sandbox, beside the algorithm: on EOF of the lifeline, kill every process of
# the pid namespace (only if pid 1 is bwrap's init, i.e. we really are in one). It matters
# on hosts without cgroups, where the host-side watcher only reaches the process group.
# {unset_pwd} drops the PWD that bwrap --chdir exports (one exec fewer than env -u PWD).
_LIFELINE_SANDBOX = (
    '(read -r _ <&3; read -r init </proc/1/comm; [ "$init" = bwrap ] && kill -KILL -1) '
    '>/dev/null 2>&1 & {unset_pwd}exec "$@" 3<&-'
)
_LAUNCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Never root, inside the sandbox or out. The algorithm is uid/gid SANDBOX_INNER_ID in its
# user namespace; on a root engine that maps to a host uid of its own per job (not 0, in
# no group, owning nothing on the host but the job's outputs/ and logs/), from this range.
SANDBOX_INNER_ID = 1000
SANDBOX_HOST_IDS = range(2_000_000_000, 2_001_000_000)
# Root engine: the sandbox's user namespace must belong to the job's host uid, so bwrap runs
# as that uid, and may not be able to reach the workspace (its parents are often 0700). This
# stage, as root in a mount namespace of its own (vanishing with the run), shows the workspace
# to bwrap at /tmp (bwrap's own /tmp is a fresh tmpfs) as one overlay mount whose upper layer
# is the workspace itself, written in place; bwrap binds its parts from there, read-only or
# not. An overlay's root is its own: the sandbox's /proc/self/mountinfo shows "/inputs" and
# options relative to the workspace, where a bind mount would show the host path of the data
# directory. Its empty lower layer and work dir are in a scratch dir beside the engine's log,
# where the algorithm has no path. (An overlay keeps a name it looked up and found missing as
# missing if the file then appears underneath: nothing but the algorithm writes during a run.)
# Arguments: the workspace, the scratch dir relative to it, the host uid, the command.
_DROP_TO_JOB_UID = r"""
cd "$1" || exit 125
s=$2; uid=$3; shift 3
mount -t overlay c2d-data -o "lowerdir=$s/empty,upperdir=.,workdir=$s/work" /tmp || exit 125
exec setpriv --reuid="$uid" --regid="$uid" --clear-groups --pdeathsig KILL -- "$@"
"""
_STAGED = "/tmp"  # where _DROP_TO_JOB_UID shows the /data parts to bwrap
_SCRATCH = ".sandbox"  # beside algorithm.log: _DROP_TO_JOB_UID's empty layer and work dirs
_PLAIN_RELATIVE = re.compile(r"^[A-Za-z0-9._/-]+$")  # safe in an overlay's options
_SIGNAL_NOTES: dict[int, str] = {
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "file size limit exceeded",
}


class SandboxUnavailable(Exception):
    """The sandbox was asked for but cannot run here (no bwrap, or user namespaces fail)."""


@dataclass(frozen=True)
class SandboxLimits:
    wall_timeout_s: float
    cpu_seconds: int | None = None  # RLIMIT_CPU, per process
    memory_bytes: int | None = None  # cgroup memory; RLIMIT_AS only as a fallback (module doc)
    address_space_bytes: int | None = None  # RLIMIT_AS
    max_processes: int | None = None  # cgroup pids.max (+2 helpers); RLIMIT_NPROC fallback
    max_file_bytes: int | None = None  # RLIMIT_FSIZE
    cpu_cores: float | None = None  # cgroup CFS quota
    disk_quota_bytes: int | None = None  # outputs/ + logs/, polled
    log_max_bytes: int = 10 << 20  # algorithm.log cap

    def __post_init__(self) -> None:
        if not self.wall_timeout_s > 0:
            raise ValueError("wall_timeout_s must be positive")
        for name in (
            "cpu_seconds",
            "memory_bytes",
            "address_space_bytes",
            "max_processes",
            "max_file_bytes",
            "disk_quota_bytes",
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if self.cpu_cores is not None and self.cpu_cores <= 0:
            raise ValueError("cpu_cores must be positive")
        if self.log_max_bytes < 0:
            raise ValueError("log_max_bytes must not be negative")


@dataclass(frozen=True)
class SandboxSpec:
    job_id: str
    workspace: Path  # inputs/, transformations/, ddos/, outputs/, logs/ (the job's /data)
    argv: tuple[str, ...]  # as seen inside the sandbox
    env: Mapping[str, str]  # the algorithm's whole environment, besides PATH and HOME
    allow_network: bool = False
    limits: SandboxLimits = field(default_factory=lambda: SandboxLimits(wall_timeout_s=3600.0))
    use_sandbox: bool = True
    # where the engine writes algorithm.log: outside the workspace, so the algorithm cannot
    # replace it (with a link to a host file, say); default: admin/ beside the workspace
    log_path: Path | None = None

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("argv must not be empty")
        if self.log_path is not None and self.workspace.resolve() in self.log_path.resolve().parents:
            raise ValueError("log_path must be outside the workspace: the algorithm could replace it")
        for key, value in self.env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise ValueError(f"invalid environment variable {key!r}")


@dataclass(frozen=True)
class SandboxOutcome:
    exit_code: int | None
    signal: int | None
    oom_killed: bool
    timed_out: bool
    stopped: bool
    disk_quota_exceeded: bool
    duration_s: float
    # extras for describe() and the job record
    wall_timeout_s: float | None = None
    disk_quota_bytes: int | None = None
    log_truncated: bool = False

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not (
            self.oom_killed or self.timed_out or self.stopped or self.disk_quota_exceeded
        )

    def describe(self) -> str:
        if self.stopped:
            return "stopped"
        if self.timed_out:
            return f"timed out after {_seconds(self.wall_timeout_s or self.duration_s)} s"
        if self.disk_quota_exceeded:
            quota = f" of {self.disk_quota_bytes} bytes" if self.disk_quota_bytes else ""
            return f"killed: disk quota{quota} exceeded"
        if self.signal is not None:
            note = "out of memory" if self.oom_killed else _SIGNAL_NOTES.get(self.signal) or _signal_name(self.signal)
            return f"killed by signal {self.signal} ({note})"
        text = f"exit code {self.exit_code}"
        return text + " (a process ran out of memory)" if self.oom_killed else text


def _seconds(value: float) -> str:
    return f"{value:g}" if value == int(value) or value < 10 else f"{value:.0f}"


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return "unknown signal"


@dataclass(frozen=True)
class SandboxCapabilities:
    bwrap: str | None  # usable bwrap, None when missing or user namespaces fail
    cgroup_version: int | None  # 1, 2 or None
    limits_in_force: tuple[str, ...]
    problem: str | None = None  # why bwrap is not usable
    network_problem: str | None = None  # why network-allowed jobs cannot get a network of their own

    def describe(self) -> str:
        if self.bwrap and self.network_problem:
            box = f"bubblewrap {self.bwrap} (no network; network-allowed jobs refused: {self.network_problem})"
        elif self.bwrap:
            box = (
                f"bubblewrap {self.bwrap} (no network unless allowed, and then a network of its own: "
                "no host, private or metadata address)"
            )
        else:
            box = f"no sandbox ({self.problem or 'bubblewrap unavailable'})"
        groups = f"cgroup v{self.cgroup_version}" if self.cgroup_version else "no cgroups"
        return f"{box}; {groups}; limits: {', '.join(self.limits_in_force) or 'none'}"


def host_uid(job_id: str) -> int:
    """The host uid (and gid) a root engine runs the job's algorithm as."""
    return SANDBOX_HOST_IDS[zlib.crc32(job_id.encode()) % len(SANDBOX_HOST_IDS)]


@functools.cache  # a PATH walk per run and tool was a few ms of every start
def _which(name: str) -> str | None:
    return shutil.which(name, path=_LAUNCH_PATH)


def _util(name: str) -> str:
    path = _which(name)
    if path is None:
        raise SandboxUnavailable(f"{name} not found (Debian package util-linux): needed to run as an unprivileged uid")
    return path


@functools.cache
def _drops_privileges() -> bool:
    """Root (with the job uids mapped in its user namespace: not so in a sandbox's own) drops
    to the job's uid; any other engine already runs the sandbox as an unprivileged uid."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map") as f:
            extents = [tuple(map(int, line.split())) for line in f]
    except OSError:
        return False
    first, last = SANDBOX_HOST_IDS[0], SANDBOX_HOST_IDS[-1]
    return any(inside <= first and last < inside + count for inside, _outside, count in extents)


def _resolve_bwrap(bwrap: str | None) -> str | None:
    if bwrap is None:
        return _which_bwrap(os.environ.get("PATH"))
    return bwrap if os.path.isfile(bwrap) and os.access(bwrap, os.X_OK) else None


@functools.cache  # per PATH: an engine started with another PATH looks again
def _which_bwrap(path: str | None) -> str | None:
    return shutil.which("bwrap", path=path)


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in _ROOT_LINKS:
        path = Path("/", name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for etc in _ETC_ALWAYS:
        args += ["--ro-bind-try", etc, etc]
    return args


_PROBED: dict[str, str | None] = {}  # bwrap path -> _probe_bwrap's answer


def _probe_bwrap(path: str) -> str | None:
    """None when bwrap can build a sandbox here, else why not (cached: ~30 ms)."""
    if path not in _PROBED:
        _PROBED[path] = _run_probe(path)
    return _PROBED[path]


def probe(bwrap: str | None = None) -> None:
    """Probes bubblewrap for this process ahead, so that start() need not (a helper started ahead)."""
    path = _resolve_bwrap(bwrap)
    if path is not None:
        _probe_bwrap(path)


def _run_probe(path: str) -> str | None:
    bwrap = [
        path,
        "--unshare-all",
        "--unshare-user",
        "--die-with-parent",
        "--cap-drop",
        "ALL",
        *_system_binds(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--",
        "/bin/true",
    ]
    if not _drops_privileges():
        return _probe_run(path, bwrap)
    # as the sandboxes will run: the drop stage (a mount namespace, the overlay, setpriv) first
    missing = [tool for tool in ("unshare", "mount", "setpriv") if not shutil.which(tool, path=_LAUNCH_PATH)]
    if missing:
        return f"{', '.join(missing)} not found (Debian package util-linux): needed to run as an unprivileged uid"
    with tempfile.TemporaryDirectory(prefix="c2d-probe-") as tmp:
        workspace, scratch = Path(tmp, "data"), Path(tmp, _SCRATCH)
        for d in (workspace, scratch / "empty", scratch / "work"):
            d.mkdir(parents=True)
        workspace.chmod(0o755)
        drop = [*_drop_command(workspace, os.path.relpath(scratch, workspace), SANDBOX_HOST_IDS[0])]
        return _probe_run(path, [*drop, *bwrap])


def _probe_run(path: str, argv: list[str]) -> str | None:
    try:
        done = subprocess.run(  # noqa: PLW1510 - the exit code is the answer
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=10, env={"PATH": _LAUNCH_PATH}
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{path}: {e}"
    if done.returncode != 0:
        return f"{path} failed: {done.stderr.decode(errors='replace').strip() or done.returncode}"
    return None


def _drop_command(workspace: Path, scratch: str, uid: int) -> list[str]:
    """The prefix of bwrap's command that runs it as `uid` (_DROP_TO_JOB_UID)."""
    return [
        _util("unshare"),
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        _DROP_TO_JOB_UID,
        "c2d-drop",
        str(workspace),
        scratch,
        str(uid),
    ]


def _rlimit_names(euid: int) -> list[str]:
    names = ["rlimit:cpu", "rlimit:as", "rlimit:fsize"]
    if euid != 0:  # root is exempt from RLIMIT_NPROC
        names.append("rlimit:nproc")
    return names


def detect_capabilities(*, bwrap: str | None = None) -> SandboxCapabilities:
    """What this host can enforce. ``bwrap`` overrides the PATH lookup."""
    path = _resolve_bwrap(bwrap)
    problem = "bwrap not found" if path is None else _probe_bwrap(path)
    usable = path if problem is None else None
    host = cgroups.detect()
    limits = _rlimit_names(os.geteuid())
    limits += [f"cgroup:{c}" for c in cgroups.CONTROLLERS if c in host.controllers]
    limits.append("disk:watch")
    network_problem = None
    if usable:
        limits.append("net:none")
        network_problem = network.probe()
        if network_problem is None:
            limits.append("net:own")
    return SandboxCapabilities(usable, host.version, tuple(limits), problem, network_problem)


def disk_usage(*roots: Path) -> int:
    """Bytes under the roots: per entry the larger of size and allocated blocks; links not followed."""
    total = 0
    stack = [str(r) for r in roots]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # deleted while walking
                    total += max(st.st_size, st.st_blocks * 512)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def _to_host(value: str, workspace: Path) -> str:
    ws = str(workspace)
    if value == ws or value.startswith(ws + "/"):
        return value  # already a host path (a workspace that itself lives under /data)
    if value == DATA or value.startswith(DATA + "/"):
        return str(workspace) + value[len(DATA) :]
    return value


class SandboxRun:
    """One running algorithm. Create with :meth:`start`."""

    pid: int
    limits_in_force: tuple[str, ...]  # what this run is actually held to
    log_path: Path
    # Set by start() (the constructor is closed: a run exists only once started).
    _spec: SandboxSpec
    _limits: SandboxLimits
    _workspace: Path
    _cgroup: JobCgroup | None
    _home: str | None
    _scratch: Path | None  # the overlay layers of a root engine (_DROP_TO_JOB_UID)
    _log_fd: int
    _network: JobNetwork | None
    _proc: asyncio.subprocess.Process
    _started: float
    _reason: str | None  # "timeout" | "stopped" | "disk": the first one wins
    _settled: bool  # the reason can no longer change
    _kill_requested: asyncio.Event
    _log_truncated: bool
    _ended: asyncio.Future[SandboxOutcome]
    _task: asyncio.Task[SandboxOutcome]

    def __init__(self) -> None:
        raise TypeError("use await SandboxRun.start(spec)")

    @classmethod
    async def start(cls, spec: SandboxSpec, *, bwrap: str | None = None) -> SandboxRun:
        """Start the algorithm; returns once its gate is released (the gate moves into the
        cgroups itself, so the algorithm runs under all its limits from its first instruction).

        Raises SandboxUnavailable when use_sandbox is set and bwrap is missing
        or cannot create namespaces, CgroupError when the job's cgroup is still
        occupied by a live run.
        """
        self = object.__new__(cls)
        self._spec = spec
        self._limits = spec.limits
        workspace = spec.workspace.resolve()
        self._workspace = workspace
        bwrap_path = None
        if spec.use_sandbox:
            bwrap_path = _resolve_bwrap(bwrap)
            if bwrap_path is None:
                raise SandboxUnavailable(f"bubblewrap not found ({bwrap or 'bwrap on PATH'})")
            # probed once per engine (detect_capabilities): no thread hop for every run
            problem = (
                _PROBED[bwrap_path] if bwrap_path in _PROBED else await asyncio.to_thread(_probe_bwrap, bwrap_path)
            )
            if problem is not None:
                raise SandboxUnavailable(f"bubblewrap cannot create a sandbox: {problem}")
        for d in RO_DIRS + RW_DIRS:
            (workspace / d).mkdir(parents=True, exist_ok=True)
        if spec.use_sandbox and _drops_privileges():
            uid = host_uid(spec.job_id)
            workspace.chmod(0o755)  # the job's uid passes through it (bound on /tmp, see _DROP_TO_JOB_UID)
            for d in RW_DIRS:  # made by the engine and pod_config: no link of the job's here yet
                os.chown(workspace / d, uid, uid, follow_symlinks=False)

        rlimits, in_force, cg = self._plan_limits()
        self._cgroup = cg
        self._home = None
        self._scratch = None
        self._log_fd = -1
        self.log_path = spec.log_path or workspace.parent / "admin" / LOG_NAME
        self._network = None
        try:
            if spec.use_sandbox and spec.allow_network:
                self._network = await self._open_network(cg)
            env = {"PATH": SANDBOX_PATH, "HOME": "/tmp", **spec.env}
            # bwrap --chdir and the shells export PWD; the algorithm gets exactly env
            keep_pwd = "PWD" in env
            if spec.use_sandbox:
                assert bwrap_path is not None
                lifeline = _LIFELINE_SANDBOX.format(unset_pwd="" if keep_pwd else "unset PWD; ")
                command = [
                    bwrap_path,
                    *self._bwrap_args(env),
                    "--",
                    "/bin/sh",
                    "-c",
                    lifeline,
                    "c2d-lifeline",
                    *spec.argv,
                ]
                if _drops_privileges():
                    command = [
                        *_drop_command(workspace, self._scratch_for_overlays(), host_uid(spec.job_id)),
                        *command,
                    ]
                    in_force.append("uid:job")
                if self._network is not None:  # bwrap starts inside the job's own namespace
                    command = [*self._network.enter_command(), *command]
                launch_env = {"PATH": _LAUNCH_PATH}  # nothing of the engine's environment
                cwd = "/"
                in_force.append("net:own" if spec.allow_network else "net:none")
            else:
                self._home = tempfile.mkdtemp(prefix=f"c2d-home-{cgroups.cgroup_name(spec.job_id)}-")
                env = {k: _to_host(v, workspace) for k, v in env.items()}
                if "HOME" not in spec.env:
                    env["HOME"] = self._home
                # fd 3 (the lifeline) stays open in the algorithm: without namespaces there
                # is no watcher beside it, and an inherited read end is harmless
                unset_pwd = [] if keep_pwd else ["/usr/bin/env", "-u", "PWD", "--"]
                command = [*unset_pwd, *(_to_host(a, workspace) for a in spec.argv)]
                launch_env, cwd = env, str(workspace)
            setpriv = _which("setpriv")
            procs_files = [str(f) for f in cg.procs_files()] if cg else []
            join_files = [str(f) for f in cg.join_files()] if cg else []
            launcher = [
                "/bin/sh",
                "-c",
                _GATE,
                "c2d-gate",
                str(os.getpid()) if setpriv else "-",
                str(len(procs_files)),
                *procs_files,
                *join_files,
            ]
            if setpriv:  # armed before the gate, so no window where the engine's death is missed
                launcher = [setpriv, "--pdeathsig", "KILL", "--", *launcher]
            if self._limits.disk_quota_bytes is not None:
                in_force.append("disk:watch")
            self.limits_in_force = tuple(in_force)

            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_fd = os.open(
                self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640
            )
            # StreamJobLogs reads it unprivileged, and the job's pod_publish (its uid) publishes it
            job_files.share_with_reader(
                self._log_fd, host_uid(spec.job_id) if spec.use_sandbox and _drops_privileges() else -1
            )
            proc = await asyncio.create_subprocess_exec(
                *launcher,
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                env=launch_env,
                cwd=cwd,
                pass_fds=self._network.etc_fds() if self._network else (),
            )
            if self._network is not None:
                self._network.sent()
        except BaseException:
            await self._close_network()
            self._release_resources()
            raise
        self._proc = proc
        self.pid = proc.pid
        try:
            for res, soft, hard in rlimits:
                resource.prlimit(proc.pid, res, (soft, hard))
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")  # and keep it open: it is the lifeline
            await proc.stdin.drain()
        except BaseException:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            await proc.wait()
            await self._close_network()
            self._release_resources()
            raise
        self._started = time.monotonic()
        self._reason = None
        self._settled = False
        self._kill_requested = asyncio.Event()
        self._log_truncated = False
        self._ended = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._supervise(), name=f"sandbox-{spec.job_id}")
        return self

    def _plan_limits(self) -> tuple[list[tuple[int, int, int]], list[str], JobCgroup | None]:
        lim = self._limits
        host = cgroups.detect()
        sandboxed = self._spec.use_sandbox
        max_pids = None
        if lim.max_processes is not None:
            max_pids = lim.max_processes + (SANDBOX_HELPER_PROCESSES if sandboxed else DIRECT_HELPER_PROCESSES)
            if sandboxed and self._spec.allow_network:
                max_pids += NETWORK_HELPER_PROCESSES
        cg = None
        if host.controllers:
            cg = JobCgroup.create(
                host, self._spec.job_id, memory_bytes=lim.memory_bytes, cpu_cores=lim.cpu_cores, max_pids=max_pids
            )
        applied = set(cg.applied) if cg else set()
        rl: list[tuple[int, int, int]] = [(resource.RLIMIT_CORE, 0, 0)]
        in_force = list(cg.applied) if cg else []
        if lim.cpu_seconds is not None:
            rl.append((resource.RLIMIT_CPU, lim.cpu_seconds, lim.cpu_seconds + 1))
            in_force.append("rlimit:cpu")
        address_space = lim.address_space_bytes
        if address_space is None and lim.memory_bytes is not None and "cgroup:memory" not in applied:
            address_space = lim.memory_bytes
        if address_space is not None:
            rl.append((resource.RLIMIT_AS, address_space, address_space))
            in_force.append("rlimit:as")
        if lim.max_file_bytes is not None:
            rl.append((resource.RLIMIT_FSIZE, lim.max_file_bytes, lim.max_file_bytes))
            in_force.append("rlimit:fsize")
        if max_pids is not None and "cgroup:pids" not in applied:
            rl.append((resource.RLIMIT_NPROC, max_pids, max_pids))
            if os.geteuid() != 0 or (sandboxed and _drops_privileges()):  # root is exempt; the job's uid is not
                in_force.append("rlimit:nproc")
        return rl, in_force, cg

    def _scratch_for_overlays(self) -> str:
        """A fresh scratch dir for _DROP_TO_JOB_UID, beside the log; its path from the workspace."""
        scratch = self.log_path.parent / f"{_SCRATCH}-{cgroups.cgroup_name(self._spec.job_id)}"
        shutil.rmtree(scratch, ignore_errors=True)  # a previous run's overlay work dirs
        (scratch / "empty").mkdir(parents=True)
        (scratch / "work").mkdir()
        self._scratch = scratch
        relative = os.path.relpath(scratch, self._workspace)
        if not _PLAIN_RELATIVE.match(relative):
            raise SandboxUnavailable(f"the log's directory {self.log_path.parent} cannot name an overlay layer")
        return relative

    async def _open_network(self, cg: JobCgroup | None) -> JobNetwork:
        join_files = cg.join_files() if cg else []
        try:
            return await JobNetwork.open(join_files)
        except NetworkUnavailable as exc:
            raise SandboxUnavailable(f"the job's own network cannot be made: {exc}") from None

    def _bwrap_args(self, env: Mapping[str, str]) -> list[str]:
        spec, ws = self._spec, self._workspace
        args = ["--unshare-all", "--unshare-user"]
        if spec.allow_network:
            args.append("--share-net")  # the job's own namespace, the one bwrap starts in
        # no nested user namespaces: they are the usual door to kernel privilege bugs
        args += [
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--hostname",
            "c2d",
            "--uid",
            str(SANDBOX_INNER_ID),
            "--gid",
            str(SANDBOX_INNER_ID),
            "--clearenv",
        ]
        for key, value in env.items():
            args += ["--setenv", key, value]
        args += _system_binds()
        if self._network is not None:
            for etc in _ETC_NETWORK:
                args += ["--ro-bind-try", etc, etc]
            args += self._network.etc_args()
        args += ["--proc", "/proc", "--dev", "/dev"]
        if self._limits.memory_bytes is not None:  # /tmp is memory: never bigger than the limit
            args += ["--size", str(self._limits.memory_bytes)]
        args += ["--tmpfs", "/tmp", "--dir", DATA]
        source = Path(_STAGED) if _drops_privileges() else ws
        for d in RO_DIRS:
            args += ["--ro-bind", str(source / d), f"{DATA}/{d}"]
        for d in RW_DIRS:
            args += ["--bind", str(source / d), f"{DATA}/{d}"]
        args += ["--remount-ro", "/", "--chdir", DATA]
        return args

    # --- running -------------------------------------------------------

    async def wait(self) -> SandboxOutcome:
        """The outcome, once the run and its cleanup are over (safe to call many times)."""
        return await asyncio.shield(self._task)

    async def outcome(self) -> SandboxOutcome:
        """The outcome as soon as it is known: every process of the run is dead and its log
        drained, while its cgroups may still be being removed (wait() waits for that too)."""
        await asyncio.wait({self._ended, self._task}, return_when=asyncio.FIRST_COMPLETED)
        return self._ended.result() if self._ended.done() else self._task.result()

    async def stop(self) -> None:
        """Kill the whole process tree (within a second); the outcome says stopped."""
        self._request_kill("stopped")
        await self.wait()

    def _request_kill(self, reason: str) -> None:
        if self._reason is None and not self._settled:  # a run that already ended is not "stopped"
            self._reason = reason
        self._kill_requested.set()

    async def _supervise(self) -> SandboxOutcome:
        proc, lim = self._proc, self._limits
        pump = asyncio.create_task(self._pump_log())
        watch = asyncio.create_task(self._watch_disk()) if lim.disk_quota_bytes else None
        exited = asyncio.create_task(proc.wait())
        killer = asyncio.create_task(self._kill_requested.wait())
        try:
            done, _ = await asyncio.wait(
                {exited, killer}, timeout=lim.wall_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if exited not in done and self._reason is None:
                self._reason = "timeout"
            self._settled = True
            if exited not in done:
                await self._kill_tree(exited)
            ended = time.monotonic()
            self._cut_lifeline()  # the host-side watcher now sweeps too
            await self._kill_leftovers()
            try:  # EOF comes once every writer is gone; do not hang on one we could not kill
                await asyncio.wait_for(asyncio.shield(pump), KILL_DEADLINE_S)
            except TimeoutError:
                pump.cancel()
            quota_hit = self._reason == "disk"
            if not quota_hit and self._reason is None and lim.disk_quota_bytes is not None:
                used = await asyncio.to_thread(disk_usage, *self._rw_dirs())
                quota_hit = used > lim.disk_quota_bytes
            oom = self._cgroup.oom_killed() if self._cgroup else False
            outcome = self._outcome(proc.returncode, oom, quota_hit, ended - self._started)
            self._ended.set_result(outcome)
            return outcome
        finally:
            for task in (killer, watch, pump):
                if task is not None and not task.done():
                    task.cancel()
            if not exited.done():  # cancelled from outside: never leave the tree running
                await self._kill_tree(exited)
            self._cut_lifeline()
            await self._close_network()
            await asyncio.to_thread(self._release_resources)

    def _cut_lifeline(self) -> None:
        if self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.close()

    def _outcome(self, rc: int | None, oom: bool, quota_hit: bool, duration: float) -> SandboxOutcome:
        exit_code, sig = rc, None
        if rc is not None and rc < 0:
            exit_code, sig = None, -rc
        elif rc is not None and self._spec.use_sandbox and 128 < rc <= 128 + 64:
            exit_code, sig = None, rc - 128  # bwrap's report of a signalled algorithm
        return SandboxOutcome(
            exit_code=exit_code,
            signal=sig,
            oom_killed=oom,
            timed_out=self._reason == "timeout",
            stopped=self._reason == "stopped",
            disk_quota_exceeded=quota_hit,
            duration_s=duration,
            wall_timeout_s=self._limits.wall_timeout_s,
            disk_quota_bytes=self._limits.disk_quota_bytes,
            log_truncated=self._log_truncated,
        )

    async def _kill_tree(self, exited: asyncio.Task) -> None:
        deadline = time.monotonic() + KILL_DEADLINE_S
        while True:
            if self._proc.returncode is None:
                # only while unreaped: the pid (and so the group id) cannot be reused yet
                try:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            left = self._cgroup.kill_all() if self._cgroup else 0
            if (exited.done() and not left) or time.monotonic() >= deadline:
                break
            await asyncio.wait({exited}, timeout=0.01)
        if not exited.done():
            await exited

    async def _kill_leftovers(self) -> None:
        # sandboxed, bwrap reports the algorithm's exit before its pid namespace is gone
        # (its init dies by parent-death signal): this waits for that and for the host-side
        # watcher, and catches unsandboxed background children (the run is over, they go
        # too). Once the cgroups are empty nothing of the run is left, so no watcher can
        # sweep a later run of the same job. Without cgroups the watcher sweeps the process
        # group once the lifeline is cut: it, unlike us after the reaping, keeps that group
        # id from being reused.
        if self._cgroup is None:
            return
        deadline = time.monotonic() + KILL_DEADLINE_S
        # polling the kernel: there is no event to wait on
        while self._cgroup.kill_all() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.002)

    async def _pump_log(self) -> None:
        stream = self._proc.stdout
        assert stream is not None
        cap, written = self._limits.log_max_bytes, 0
        while True:
            chunk = await stream.read(1 << 16)
            if not chunk:
                return
            if written < cap:
                part = chunk[: cap - written]
                self._write_log(part)
                written += len(part)
                if len(part) == len(chunk):
                    continue
            if not self._log_truncated:
                self._log_truncated = True
                self._write_log(f"\n[c2d] algorithm.log truncated at {cap} bytes; further output dropped\n".encode())

    def _write_log(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._log_fd, view) :]
        except OSError:
            pass  # a full disk must not stop the drain, or the algorithm blocks

    def _rw_dirs(self) -> list[Path]:
        return [self._workspace / d for d in RW_DIRS]

    async def _watch_disk(self) -> None:
        quota = self._limits.disk_quota_bytes
        assert quota is not None
        while True:
            await asyncio.sleep(DISK_POLL_S)
            if await asyncio.to_thread(disk_usage, *self._rw_dirs()) > quota:
                self._request_kill("disk")
                return

    async def _close_network(self) -> None:
        if self._network is not None:  # before the cgroups go: slirp4netns is in them
            await self._network.close()
            self._network = None

    def _release_resources(self) -> None:
        if self._cgroup is not None:
            try:
                self._cgroup.remove()
            except CgroupError:
                pass  # left for the next run of this job to reclaim
            self._cgroup = None
        if self._log_fd >= 0:
            os.close(self._log_fd)
            self._log_fd = -1
        if self._home:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
