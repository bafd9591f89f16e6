"""How the local backend starts pod_config and pod_publish.

The engine imports no other service: it finds the pod programs by name,
through the entry points of group "c2d.pods" (pyproject.toml), each an
`async run(pod, channel) -> exit code`.

A fresh interpreter per stage spends ~0.6 s importing grpc, aiohttp and the
pod programs before doing anything, which dominates a small job. The fork
server is a long-lived helper process (`python -m
services.operator_engine.backends.local.pod_launcher`) that loads the programs
once and forks one child per stage. Each child gets its own session (so a
stop or timeout kills its whole process group), its own environment and its
log file as stdout/stderr, exactly as a fresh process would. The helper never
creates a gRPC channel or an event loop itself, so each child starts clean.

The children are forked ahead, one idle child per program: it takes its new
session, starts gRPC's asyncio runtime, starts connecting to the engine's
JobAgentService (the helper's environment names it) and waits on a pipe, so
a stage pays none of that (nor the fork) on its own clock. A pod ends with
os._exit as soon as its program returns: no interpreter or event-loop
teardown on the clock either. The helper hands it the job
(environment, log path) through the pipe and forks the next one after replying.

A pod runs as an unprivileged uid (a root engine's: the job's own, as its
algorithm; PodAccess), for good, before it reads anything of its job: no
groups, gid and uid (saved ids too) all that uid, no capability, an empty
bounding set and no_new_privs in every thread. What it needs it gets before
that drop: its log and token files opened, its workspace as its working
directory (the job's paths are relative to it, so the data directory above
stays closed to it), local results storage as an open directory. The helper
is started with none of the engine's environment, and the job's token goes
to the pod through a root-only file, never through the helper: every pod it
forks inherits its memory. Imports a pod may make on first use are made
before the drop (the interpreter's files need not be readable by the pod).

The engine talks to the helper over its stdin/stdout, one JSON object a line:

    engine -> helper  {"op": "run", "id": N, "program": "pod_config", "env": {...}, "log": PATH,
                       "token": PATH, "access": {"uid": UID, "workspace": PATH, "results_root": PATH}}
                      {"op": "kill", "id": N}
    helper -> engine  {"id": N, "pid": PID}        the child runs
                      {"id": N, "exit": RC}        it ended (RC < 0: killed by signal -RC)

Kills go through the helper because only the helper can reap the child: it
signals the group only while the child is unreaped, so the group id cannot
have been reused. When the engine dies (the helper's stdin reaches EOF) the
helper kills every child's group and exits; it also has a parent-death
signal, and each child one on the helper.

`SubprocessLauncher` is the plain alternative: a fresh interpreter per stage
(`python -m services.operator_engine.backends.local.pod_launcher <program>
<module:function>`, C2D_ENGINE_POD_LAUNCHER=subprocess; the engine resolved
the entry point, so the pod does not scan the installed packages again).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import logging
import os
import pkgutil
import select
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import grpc.aio

from plumbing import auth, pods, processes

log = logging.getLogger("c2d.engine")

POD_PROGRAMS = "c2d.pods"  # the entry-point group the pod programs are declared in
# Modules a pod may import on first use, loaded before it drops its privileges.
_PRELOADED = (
    "_strptime",
    "traceback",
    "concurrent.futures.thread",
    "encodings.idna",
    "encodings.ascii",
    "encodings.latin_1",
    "encodings.utf_8_sig",
)


@functools.cache
def programs() -> dict[str, metadata.EntryPoint]:
    """The installed pod programs by name (pod_config, pod_publish)."""
    return {entry.name: entry for entry in metadata.entry_points(group=POD_PROGRAMS)}


def _check_known(program: str) -> None:
    if program not in programs():
        raise ValueError(f"unknown pod program {program!r}: entry points of {POD_PROGRAMS!r} are {sorted(programs())}")


@dataclass(frozen=True)
class PodExit:
    returncode: int | None  # None: the launcher itself failed (detail says why)
    detail: str = ""


class PodProcess(Protocol):
    async def wait(self) -> PodExit: ...

    async def kill(self) -> None:
        """Kills the pod's whole process group and waits for it to be reaped."""


@dataclass(frozen=True)
class PodAccess:
    """What a pod reaches, handed to it (as descriptors) before it drops its privileges.

    The job's workspace is its working directory, so the job's paths are relative to
    it and none of its parents (often closed to the pod: the data directory holds the
    service token and the engine's database) need to let the pod through. Local results
    storage is an open directory, C2D_STORAGE_LOCAL_ROOT=/proc/self/fd/N."""

    uid: int | None = None  # the pod's uid and gid; None: it keeps the engine's (not root)
    workspace: Path | None = None
    results_root: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "workspace": str(self.workspace) if self.workspace else None,
            "results_root": str(self.results_root) if self.results_root else None,
        }


NO_ACCESS = PodAccess()


def _enter(access: Mapping[str, Any]) -> None:
    """In the pod, before it reads any of its job (and after no_new_privileges): what
    `access` gives, then the drop to its uid."""
    if access.get("workspace"):
        fd = os.open(access["workspace"], os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fchdir(fd)
        finally:
            os.close(fd)
    if access.get("results_root"):
        fd = os.open(access["results_root"], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        os.environ["C2D_STORAGE_LOCAL_ROOT"] = f"/proc/self/fd/{fd}"
    if access.get("uid") is not None:
        processes.become(access["uid"])


# The helper's own environment: nothing of the engine's (a service token, a database
# URL) may be in its memory, which every pod it forks inherits.
_HELPER_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
TOKEN_VARIABLE = "C2D_JOB_TOKEN"


class Launcher(Protocol):
    async def start(
        self, program: str, env: Mapping[str, str], log_path: Path, access: PodAccess = NO_ACCESS
    ) -> PodProcess: ...

    async def close(self) -> None: ...


# -- a fresh interpreter per stage ---------------------------------------------


class _Subprocess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    async def wait(self) -> PodExit:
        return PodExit(await self._process.wait())

    async def kill(self) -> None:
        if self._process.returncode is None:  # unreaped: its group id is still ours
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await self._process.wait()


class SubprocessLauncher:
    async def start(
        self, program: str, env: Mapping[str, str], log_path: Path, access: PodAccess = NO_ACCESS
    ) -> PodProcess:
        _check_known(program)
        with open(log_path, "ab") as out:  # noqa: ASYNC230 - opening a local file does not block
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __name__,
                program,
                programs()[program].value,
                json.dumps(access.to_json()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,
            )
        return _Subprocess(process)

    async def close(self) -> None:
        return None


# -- the fork server, engine side ---------------------------------------------------


class _Forked:
    def __init__(
        self, launcher: ForkServerLauncher, run_id: int, pid: int, ended: asyncio.Future[PodExit], token: Path | None
    ) -> None:
        self._launcher, self._id, self.pid, self._ended, self._token = launcher, run_id, pid, ended, token

    async def wait(self) -> PodExit:
        try:
            return await asyncio.shield(self._ended)
        finally:
            if self._ended.done() and self._token is not None:
                self._token.unlink(missing_ok=True)  # the pod took it, unless it died first

    async def kill(self) -> None:
        if not self._ended.done():
            self._launcher._send({"op": "kill", "id": self._id})
        await self.wait()


class ForkServerLauncher:
    """Starts pods through one pre-imported helper process (started on first use)."""

    def __init__(self) -> None:
        self._helper: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._starting: dict[int, asyncio.Future[int]] = {}
        self._ended: dict[int, asyncio.Future[PodExit]] = {}
        self._helper_of: dict[int, asyncio.subprocess.Process] = {}  # run id -> the helper that runs it
        self._next_id = 0
        self._lock = asyncio.Lock()

    async def start(
        self, program: str, env: Mapping[str, str], log_path: Path, access: PodAccess = NO_ACCESS
    ) -> PodProcess:
        _check_known(program)
        await self._ensure_helper(env)
        env = dict(env)
        # The job's token bypasses the helper, whose memory the next pods inherit: a file
        # only root reads, which the pod takes (and removes) before it drops its privileges.
        token = _write_token(log_path, env.pop(TOKEN_VARIABLE)) if TOKEN_VARIABLE in env else None
        self._next_id += 1
        run_id = self._next_id
        loop = asyncio.get_running_loop()
        started, ended = loop.create_future(), loop.create_future()
        self._starting[run_id], self._ended[run_id] = started, ended
        assert self._helper is not None
        self._helper_of[run_id] = self._helper
        self._send(
            {
                "op": "run",
                "id": run_id,
                "program": program,
                "env": env,
                "log": str(log_path),
                "token": str(token) if token else None,
                "access": access.to_json(),
            }
        )
        try:
            pid = await asyncio.shield(started)
        except BaseException:
            # The child may be forked already: it must not outlive the stage.
            self._send({"op": "kill", "id": run_id})
            if token is not None:
                token.unlink(missing_ok=True)
            raise
        return _Forked(self, run_id, pid, ended, token)

    async def close(self) -> None:
        helper = self._helper
        if helper is None:
            return
        self._helper = None
        if helper.stdin is not None:
            helper.stdin.close()  # EOF: the helper kills what runs and exits
        try:
            await asyncio.wait_for(helper.wait(), 5.0)
        except TimeoutError:
            helper.kill()
            await helper.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _ensure_helper(self, pod_env: Mapping[str, str]) -> None:
        async with self._lock:
            if self._helper is not None and self._helper.returncode is None:
                return
            # Where the pods' agent is, so each idle child connects to it ahead.
            agent = {name: pod_env[name] for name in ("C2D_AGENT_ADDRESS", *auth.TLS_VARIABLES) if name in pod_env}
            own = {name: os.environ[name] for name in _HELPER_ENV if name in os.environ}
            # the pods' tracing settings too: an idle child's channel decides, once per process
            # (plumbing.tracing), whether tracing is on, before its job's environment arrives
            own |= {name: value for name, value in pod_env.items() if name.startswith("OTEL_")}
            self._helper = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __name__,
                *(f"{name}={entry.value}" for name, entry in programs().items()),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,
                start_new_session=True,
                env={**own, **agent},
            )
            self._reader = asyncio.create_task(self._read_forever(self._helper), name="pod-launcher-reader")

    def _send(self, message: dict) -> None:
        helper = self._helper
        if helper is None or helper.stdin is None or helper.stdin.is_closing():
            return  # gone: _read_forever fails whatever was pending
        helper.stdin.write(json.dumps(message).encode() + b"\n")

    async def _read_forever(self, helper: asyncio.subprocess.Process) -> None:
        assert helper.stdout is not None
        try:
            while line := await helper.stdout.readline():
                message = json.loads(line)  # noqa: TID251 - the engine's own launcher protocol
                run_id = message["id"]
                if "pid" in message:
                    future = self._starting.pop(run_id, None)
                    if future is not None and not future.done():
                        future.set_result(message["pid"])
                elif "exit" in message:
                    self._helper_of.pop(run_id, None)
                    ended = self._ended.pop(run_id, None)
                    if ended is not None and not ended.done():
                        ended.set_result(PodExit(message["exit"]))
                elif "error" in message:
                    failure = RuntimeError(f"pod launcher: {message['error']}")
                    future = self._starting.pop(run_id, None)
                    self._ended.pop(run_id, None)
                    self._helper_of.pop(run_id, None)
                    if future is not None and not future.done():
                        future.set_exception(failure)
        finally:
            # The helper is gone (and took its children with it): nobody waits forever on
            # what it ran. Runs of a newer helper are not its business.
            if helper is self._helper:
                self._helper = None
            gone = [run_id for run_id, owner in self._helper_of.items() if owner is helper]
            for run_id in gone:
                del self._helper_of[run_id]
                future = self._starting.pop(run_id, None)
                if future is not None and not future.done():
                    future.set_exception(RuntimeError("the pod launcher process exited"))
                ended = self._ended.pop(run_id, None)
                if ended is not None and not ended.done():
                    ended.set_result(PodExit(None, "the pod launcher process exited"))


def _write_token(log_path: Path, token: str) -> Path:
    path = log_path.with_name(log_path.name + ".token")
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return path


def _take_token(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with os.fdopen(fd, "rb") as f:
            return f.read(pods.MAX_TOKEN_BYTES).decode()
    finally:
        os.unlink(path)


def make_launcher(kind: str) -> Launcher:
    if kind == "forkserver":
        return ForkServerLauncher()
    if kind == "subprocess":
        return SubprocessLauncher()
    raise ValueError(f"C2D_ENGINE_POD_LAUNCHER={kind!r}: expected forkserver or subprocess")


# -- the fork server, helper side -------------------------------------------------------


def _child(name: str, module: str, requests: int, helper_pid: int, program: pods.Program) -> None:
    """In a child forked ahead: get ready, wait for a job on `requests`, become the pod; never return."""
    code = 1
    try:
        os.setsid()
        processes.die_with(helper_pid)
        processes.no_new_privileges()  # before gRPC starts its threads, which inherit it
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        # nothing of the helper's (the protocol pipes, other children's requests) leaks
        os.closerange(3, requests)
        os.closerange(requests + 1, 1 << 16)
        # Both programs talk gRPC: its asyncio runtime (core, poller thread) starts while the
        # child waits, not on the job's clock, and so does the connection to the engine's
        # agent. Started after the fork, as gRPC requires.
        grpc.aio.init_grpc_aio()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        ahead_key, ahead = pods.channel_key(), _connect_ahead()
        with os.fdopen(requests, "rb") as pipe:
            request = pipe.read()
        if not request:  # the helper is gone or closing: no job will come
            os._exit(0)
        job = json.loads(request)  # noqa: TID251 - the engine's own launcher protocol
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        os.environ.clear()
        os.environ.update(job["env"])
        if job.get("token"):
            os.environ[TOKEN_VARIABLE] = _take_token(job["token"])
        sys.argv = [module]  # as running the program's module would see it
        # Before the drop: logging and tracing import what the interpreter's own library
        # holds (which an unprivileged uid may not read); the engine set the variables they read.
        pods.configure_logging(name)
        _enter(job.get("access") or {})
        processes.die_with(helper_pid)  # again: the drop cleared it
        usable = (
            ahead is not None
            and pods.channel_key() == ahead_key
            and (ahead.get_state() == grpc.ChannelConnectivity.READY)
        )
        # No loop teardown: the process ends right after, and what it wrote is flushed below.
        code = loop.run_until_complete(pods.run(name, program, ahead if usable else None))
    except BaseException:  # noqa: BLE001 - the child must end here whatever happens
        import traceback

        traceback.print_exc()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - a closed stream must not stop the exit
                pass
        os._exit(code)


def _connect_ahead() -> grpc.aio.Channel | None:
    """A channel to the agent the helper was told of, connecting in gRPC's
    own threads while the child waits (None when there is no address)."""
    address = os.environ.get("C2D_AGENT_ADDRESS")
    if not address:
        return None
    try:
        channel = auth.internal_channel(address)
        channel.get_state(try_to_connect=True)
        return channel
    except Exception:  # noqa: BLE001 - the pod connects on its own then
        return None


def serve(entries: Mapping[str, str]) -> None:
    """The helper's loop: fork pods on request, report their pids and exits. `entries`:
    the programs (name -> module:function), as the engine resolved them."""
    processes.die_with(os.getppid())
    helper_pid = os.getpid()
    # Imported once here, so each child starts with them loaded: a pod may no longer be
    # able to read the interpreter's files once it has dropped its privileges
    # (_strptime: datetime imports it on first use, which pod_publish's manifest makes).
    for module in _PRELOADED:
        importlib.import_module(module)

    mains: dict[str, pods.Program] = {name: pkgutil.resolve_name(entry) for name, entry in entries.items()}
    modules = {name: entry.partition(":")[0] for name, entry in entries.items()}
    protocol_out = os.dup(1)
    os.dup2(2, 1)  # a stray print must not corrupt the protocol
    sys.stdout = sys.stderr
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    children: dict[int, int | None] = {}  # pid -> run id (None: forked ahead, idle), until reaped
    by_id: dict[int, int] = {}
    # One idle child per program, forked ahead so a pod starts without a fork on its clock;
    # program -> (pid, write end of its request pipe).
    ready: dict[str, tuple[int, int]] = {}
    pending = b""

    def reply(message: dict) -> None:
        os.write(protocol_out, json.dumps(message).encode() + b"\n")

    def fork_ahead(program: str) -> None:
        requests, request_w = os.pipe()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(program, modules[program], requests, helper_pid, mains[program])
        os.close(requests)
        children[pid] = None
        ready[program] = (pid, request_w)

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run_id = children.pop(pid, None)
            if run_id is not None:
                by_id.pop(run_id, None)
                reply({"id": run_id, "exit": os.waitstatus_to_exitcode(status)})
            for program, (idle, request_w) in list(ready.items()):
                if idle == pid:  # an idle child died: the next run forks anew
                    os.close(request_w)
                    del ready[program]

    def kill_group(pid: int) -> None:
        # Only for unreaped children, so the pid and group id are still theirs. The pid too:
        # a child that has not reached setsid() yet has no group of its own.
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def hand_over(program: str, job: bytes) -> int:
        """Gives the job to the program's idle child (forked now if there is none); its pid."""
        while True:
            if program not in ready:
                fork_ahead(program)
            pid, request_w = ready.pop(program)
            try:
                view = memoryview(job)
                while view:
                    view = view[os.write(request_w, view) :]
                return pid
            except BrokenPipeError:
                continue  # it died idle (reaped later): a fresh child takes the job
            finally:
                os.close(request_w)  # EOF: the whole request is there

    def run(run_id: int, program: str, job: dict) -> None:
        pid = hand_over(program, json.dumps(job).encode())
        children[pid] = run_id
        by_id[run_id] = pid
        reply({"id": run_id, "pid": pid})
        fork_ahead(program)  # for the next run, after the reply

    for program in mains:
        fork_ahead(program)
    while True:
        try:
            readable, _, _ = select.select([0, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        reap()
        if 0 not in readable:
            continue
        data = os.read(0, 1 << 16)
        if not data:  # the engine is gone or closed us: nothing may outlive it
            for pid in children:
                kill_group(pid)
            while children:
                pid, _status = os.wait()
                children.pop(pid, None)
            return
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            request = json.loads(line)  # noqa: TID251 - the engine's own launcher protocol
            run_id = request["id"]
            if request["op"] == "kill":
                if run_id in by_id:
                    kill_group(by_id[run_id])
                continue
            if request["program"] not in mains:
                reply({"id": run_id, "error": f"unknown program {request['program']!r}"})
                continue
            del request["op"], request["id"]
            run(run_id, request.pop("program"), request)


def _run_one(name: str, entry: str, access: str) -> None:
    """One pod in this interpreter (SubprocessLauncher): loaded, then entered, then run."""
    program = pkgutil.resolve_name(entry)
    for module in _PRELOADED:
        importlib.import_module(module)
    processes.no_new_privileges()
    _enter(json.loads(access))  # noqa: TID251 - the engine's own launcher protocol
    pods.main(name, program)


if __name__ == "__main__":
    if len(sys.argv) == 4 and "=" not in sys.argv[1]:
        _run_one(*sys.argv[1:])
    else:
        serve(dict(arg.split("=", 1) for arg in sys.argv[1:]))
