"""The per-job monitor: one small process per algorithm run that owns its sandbox,
so that the run outlives the engine (as podman's conmon and containerd's shim do).

The engine starts `python -m ...monitor` ahead, in a session of its own,
with no parent-death signal, and hands it a run's STATE_DIR on its stdin
(MonitorLauncher). The monitor then starts the SandboxRun (sandbox.py:
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
import json
import os
import signal
import subprocess
import sys
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
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


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
    """Starts runs under monitors, one of them always started ahead and idle, so a
    run does not wait for an interpreter to start and import the sandbox."""

    def __init__(self) -> None:
        self._idle: subprocess.Popen[bytes] | None = None

    def start(self, spec: SandboxSpec, state: Path) -> Monitored:
        """The run's monitor is given `state` (the run's spec in it), the directory it
        keeps the run's pid and outcome in; its log goes beside it (monitor.log)."""
        state.mkdir(parents=True, exist_ok=True)
        for name in (PID, OUTCOME):
            (state / name).unlink(missing_ok=True)
        _write_atomically(state / SPEC, json.dumps(_spec_to_json(spec)))
        process = self._idle if self._idle is not None and self._idle.poll() is None else _spawn()
        self._idle = _spawn()  # the next run's, starting while this one runs
        assert process.stdin is not None
        try:
            process.stdin.write(f"{state}\n".encode())
            process.stdin.close()
        except BrokenPipeError:  # it died idle: a fresh one takes the run
            process = _spawn()
            assert process.stdin is not None
            process.stdin.write(f"{state}\n".encode())
            process.stdin.close()
        return Monitored(state, process.pid, process)

    def close(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None and idle.stdin is not None:
            idle.stdin.close()  # EOF: it exits
            idle.wait()
            if idle.stdout is not None:
                idle.stdout.close()


def _spawn() -> subprocess.Popen[bytes]:
    # Not asyncio's subprocess: its transport kills a child still running when the
    # engine's loop closes, and a monitor must outlive the engine.
    return subprocess.Popen(
        [sys.executable, "-m", __name__],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # no signal to the engine's process group reaches it
    )


class Monitored:
    """A run under its monitor, as the engine sees it: started now, or found after a restart."""

    def __init__(self, state: Path, pid: int, process: subprocess.Popen[bytes] | None = None) -> None:
        self.state, self.pid, self._process = state, pid, process

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
        if self._process is not None:
            assert self._process.stdout is not None
            await _readable(self._process.stdout.fileno())  # its outcome line, or EOF: it died
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
                os.kill(self.pid, signal.SIGTERM)  # still unreaped if ours: the pid is its own
            except ProcessLookupError:
                pass
        return await self.outcome()

    async def reap(self) -> None:
        """Waits for the monitor to finish its cleanup (the run's cgroups), if it is ours."""
        if self._process is not None:
            await _exited(self._process.pid)
            self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()


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
    """Started ahead, idle: waits for its run's state directory on stdin (EOF: the
    engine closed it or is gone, and it is not needed), then monitors that run."""
    sandbox.probe()  # while idle, off the run's clock
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
    asyncio.run(_monitor(state))


if __name__ == "__main__":
    _serve()
