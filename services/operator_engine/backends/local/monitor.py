"""The per-job monitor: one small process per algorithm run that owns its sandbox,
so that the run outlives the engine (as podman's conmon and containerd's shim do).

An interpreter start and the sandbox's imports cost more CPU than a trivial
run itself, so monitors are not started as new interpreters: the engine starts
one monitor fork server (`python -m ...monitor`, its "zygote") that imports
and probes the sandbox once, then forks each monitor from it, one ahead, each
in a session of its own with no parent-death signal; the engine hands it a
run's STATE_DIR on its stdin (MonitorLauncher). A forked monitor depends on
nothing of the fork server: when the engine goes, the fork server sees its
socket close and exits, and the monitors already running go on (orphans,
reaped by init). The monitor then starts the SandboxRun (sandbox.py:
the sandbox's parent-death signal and lifeline now follow the monitor, not the
engine), keeps its log flowing into algorithm.log, enforces its timeout and
quota, and when the run ends writes the outcome to STATE_DIR/outcome.json
(and as one line on its stdout, which the engine that started it reads). A
SIGTERM stops the run (the outcome says stopped).

An engine that restarts finds the run through STATE_DIR (`Monitored.find`):
the monitor's pid with its start time (so a reused pid is not mistaken for
it), or the outcome it left. Only a host reboot (or a kill of the monitor
itself) loses a run. STATE_DIR is in the job's admin directory, which the
algorithm never sees.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from services.operator_engine.backends.local import sandbox
from services.operator_engine.backends.local.cgroups import CgroupError
from services.operator_engine.backends.local.sandbox import (
    SandboxLimits,
    SandboxOutcome,
    SandboxRun,
    SandboxSpec,
    SandboxUnavailable,
)

SPEC, PID, OUTCOME = "spec.json", "pid", "outcome.json"


class MonitorFailed(RuntimeError):
    """The run could not start, or its monitor died without saying how it ended."""


# -- the state it keeps ------------------------------------------------------------------


def _spec_to_json(spec: SandboxSpec) -> dict[str, Any]:
    data = dataclasses.asdict(spec)
    data["workspace"] = str(spec.workspace)
    data["log_path"] = None if spec.log_path is None else str(spec.log_path)
    data["env"] = dict(spec.env)
    return data


def _spec_from_json(data: dict[str, Any]) -> SandboxSpec:
    return SandboxSpec(
        **{
            **data,
            "workspace": Path(data["workspace"]),
            "log_path": None if data["log_path"] is None else Path(data["log_path"]),
            "argv": tuple(data["argv"]),
            "limits": SandboxLimits(**data["limits"]),
        }
    )


def _outcome_from_json(data: dict[str, Any]) -> SandboxOutcome:
    if "error" in data:
        raise MonitorFailed(data["error"])
    return SandboxOutcome(**data)


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the pid, names it for good."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None  # a zombie has ended, whoever is yet to reap it (a killed monitor's parent may be gone)
    return fields[19]


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)


# -- the monitor process --------------------------------------------------------------------


async def _monitor(state: Path) -> None:
    _write_atomically(state / PID, f"{os.getpid()} {_start_time(os.getpid())}")
    spec = _spec_from_json(json.loads((state / SPEC).read_text()))  # noqa: TID251 - the engine's own file
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        run = await SandboxRun.start(spec)
    except (SandboxUnavailable, CgroupError, OSError, ValueError) as exc:  # said to the engine
        _report(state, {"error": f"the sandbox could not start: {exc}"})
        return
    stopping = asyncio.create_task(stop.wait())
    ended = asyncio.create_task(run.outcome())
    await asyncio.wait({stopping, ended}, return_when=asyncio.FIRST_COMPLETED)
    if not ended.done():
        await run.stop()
    stopping.cancel()
    _report(state, dataclasses.asdict(await ended))
    await run.wait()  # its cgroups removed, after the engine has the outcome


def _report(state: Path, outcome: dict[str, Any]) -> None:
    text = json.dumps(outcome)
    _write_atomically(state / OUTCOME, text)
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass  # the engine that started us is gone; the file is what counts


# -- the engine's side ----------------------------------------------------------------------


class MonitorLauncher:
    """Starts runs under monitors forked from the fork server, one of them always forked
    ahead and idle, so a run waits neither for an interpreter nor for a fork."""

    def __init__(self) -> None:
        self._zygote: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._idle: _Forked | None = None
        self._start_zygote()  # it imports and probes the sandbox while the engine starts

    def start(self, spec: SandboxSpec, state: Path) -> Monitored:
        """The run's monitor is given `state` (the run's spec in it), the directory it
        keeps the run's pid and outcome in; its log goes beside it (monitor.log)."""
        state.mkdir(parents=True, exist_ok=True)
        for name in (PID, OUTCOME):
            (state / name).unlink(missing_ok=True)
        _write_atomically(state / SPEC, json.dumps(_spec_to_json(spec)))
        monitor, self._idle = self._idle, None
        if monitor is None or not monitor.hand(state):  # none yet, or it died idle
            monitor = self._fork()
            if not monitor.hand(state):
                raise MonitorFailed("a freshly forked monitor died before it was given its run")
        self._idle = self._fork()  # the next run's, idle while this one runs
        return Monitored(state, monitor.pid, monitor.stdout, monitor.pidfd)

    def _fork(self) -> _Forked:
        if self._socket is None or self._zygote is None or self._zygote.poll() is not None:
            self._start_zygote()
        assert self._socket is not None
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        try:
            socket.send_fds(self._socket, [b"fork"], [stdin_r, stdout_w])
            reply = self._socket.recv(32)
        except OSError as exc:
            for fd in (stdin_w, stdout_r):
                os.close(fd)
            raise MonitorFailed(f"the monitor fork server failed: {exc}") from None
        finally:
            os.close(stdin_r)
            os.close(stdout_w)
        if not reply:
            for fd in (stdin_w, stdout_r):
                os.close(fd)
            raise MonitorFailed("the monitor fork server died")
        pid = int(reply)
        # Opened while it waits for its run on our pipe, so the pidfd names it for good.
        return _Forked(pid, os.pidfd_open(pid), stdin_w, stdout_r)

    def _start_zygote(self) -> None:
        self._close_zygote()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            # Not asyncio's subprocess: its transport kills a child still running when the
            # engine's loop closes; and its monitors must outlive the engine.
            self._zygote = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # no signal to the engine's process group reaches it
            )
        self._socket = ours

    def _close_zygote(self) -> None:
        if self._socket is not None:
            self._socket.close()  # EOF: it exits (its monitors go on)
            self._socket = None
        if self._zygote is not None:
            self._zygote.wait()
            self._zygote = None

    def close(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.dismiss()  # EOF: it exits
        self._close_zygote()


@dataclasses.dataclass
class _Forked:
    """A monitor forked ahead, waiting for its run's state directory on its stdin."""

    pid: int
    pidfd: int
    stdin: int
    stdout: int

    def hand(self, state: Path) -> bool:
        try:
            os.write(self.stdin, f"{state}\n".encode())
        except BrokenPipeError:
            self.dismiss()
            return False
        finally:
            if self.stdin >= 0:
                os.close(self.stdin)
                self.stdin = -1
        return True

    def dismiss(self) -> None:
        if self.stdin >= 0:
            os.close(self.stdin)
            self.stdin = -1
        select.select([self.pidfd], [], [], 10)  # it exits on EOF: wait for it
        for fd in (self.pidfd, self.stdout):
            os.close(fd)


class Monitored:
    """A run under its monitor, as the engine sees it: started now, or found after a restart."""

    def __init__(self, state: Path, pid: int, stdout: int | None = None, pidfd: int | None = None) -> None:
        # stdout and pidfd: of a monitor this engine process forked (then ours to close)
        self.state, self.pid, self._stdout, self._pidfd = state, pid, stdout, pidfd

    @classmethod
    def find(cls, state: Path) -> Monitored | None:
        """The run a previous engine process left: alive under its monitor, or ended with
        its outcome kept; None when neither (the host rebooted, or there was none)."""
        if (state / OUTCOME).exists():
            return cls(state, 0)
        try:
            pid_text, started = (state / PID).read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if _start_time(pid) != started:
            return cls(state, 0) if (state / OUTCOME).exists() else None  # it ended meanwhile
        return cls(state, pid)

    async def outcome(self) -> SandboxOutcome:
        """How the run ended, once it has."""
        if self._stdout is not None:
            await _readable(self._stdout)  # its outcome line, or EOF: it died
        elif self.pid:
            await _exited(self.pid)
        try:
            text = (self.state / OUTCOME).read_text()
        except FileNotFoundError:
            raise MonitorFailed(f"the algorithm's monitor (pid {self.pid}) died without an outcome") from None
        return _outcome_from_json(json.loads(text))  # noqa: TID251 - the monitor's own file

    async def stop(self) -> SandboxOutcome:
        if self.pid and not (self.state / OUTCOME).exists():
            try:
                if self._pidfd is not None:  # ours: the pidfd cannot name another process
                    signal.pidfd_send_signal(self._pidfd, signal.SIGTERM)
                else:
                    os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return await self.outcome()

    async def reap(self) -> None:
        """Waits for the monitor to finish its cleanup (the run's cgroups), if it is ours."""
        if self._pidfd is not None:
            await _readable(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._stdout is not None:
            os.close(self._stdout)
            self._stdout = None


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _exited(pid: int) -> None:
    """Waits for a process to end, our child or not (its pidfd turns readable then)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await _readable(pidfd)
    finally:
        os.close(pidfd)


def _serve() -> None:
    """A forked monitor, idle: waits for its run's state directory on stdin (EOF: the
    engine closed it or is gone, and it is not needed), then monitors that run."""
    line = sys.stdin.readline().strip()
    if not line:
        return
    state = Path(line)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # it no longer hears from the engine
    log = os.open(state.parent / "monitor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    os.dup2(log, 2)
    for fd in (devnull, log):
        os.close(fd)
    if sys.version_info < (3, 12):  # 3.11's default watcher starts a thread per child process
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
    asyncio.run(_monitor(state))


def _warm() -> None:
    """What every monitor would otherwise load or compute for itself, once here."""
    import concurrent.futures.thread  # noqa: F401 - asyncio's default executor, imported on first use

    from services.operator_engine.backends.local import cgroups

    cgroups.cgroup_name("c2d")  # its pattern compiled
    cgroups.detect()
    # Objects made so far are never collected: the collector would write to every one of
    # them in every monitor, copying the fork server's memory page by page.
    gc.freeze()


def _zygote() -> None:
    """The fork server: the sandbox imported and probed once; for each request (a pipe for
    the monitor's stdin and one for its stdout, passed on its socket, fd 0) it forks a
    monitor in a session of its own and replies with its pid. It never starts a thread or
    an event loop, so each monitor starts clean. Exits at EOF (the engine is gone)."""
    sandbox.probe()
    _warm()
    requests = socket.socket(fileno=os.dup(0))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its monitors are reaped by the kernel
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(requests, 16, 2)
        except OSError:
            return
        if not message:
            return
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a monitor waits for its own children
            os.setsid()  # no signal to the fork server's session reaches it
            requests.close()
            os.dup2(fds[0], 0)
            os.dup2(fds[1], 1)
            code = 1
            try:
                for fd in fds:
                    os.close(fd)
                _serve()
                code = 0
            except BaseException:  # noqa: BLE001 - said in monitor.log; the engine reads no outcome
                traceback.print_exc()
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                os._exit(code)  # nothing of the fork server's interpreter to tear down
        for fd in fds:
            os.close(fd)
        try:
            requests.send(str(pid).encode())
        except OSError:
            return


if __name__ == "__main__":
    _zygote()
