"""Runs the three servers: in one process (the embedded default of `c2d up`,
the demo and the end-to-end tests) or one process each (`c2d up --processes`)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from plumbing import auth, settings
from plumbing.server import RunningServer, local_address
from services.operator_engine import server as engine_server
from services.operator_engine.settings import EngineSettings
from services.operator_service import server as operator_server
from services.operator_service.settings import OperatorSettings
from services.provider import server as provider_server
from services.provider.settings import ProviderSettings


@dataclass
class Stack:
    engine: RunningServer
    operator: RunningServer
    provider: RunningServer

    @property
    def provider_address(self) -> str:
        return f"127.0.0.1:{self.provider.port}"

    async def stop(self) -> None:
        await self.provider.stop(1)
        await self.operator.stop(1)
        await self.engine.stop(1)


def from_environment() -> tuple[ProviderSettings, OperatorSettings, EngineSettings]:
    return (
        settings.load(ProviderSettings, "C2D_PROVIDER"),
        settings.load(OperatorSettings, "C2D_OPERATOR"),
        settings.load(EngineSettings, "C2D_ENGINE"),
    )


# The setting that moves each server's port, for the messages that name it.
ADDRESS_SETTINGS = {
    "provider": "C2D_PROVIDER_ADDRESS",
    "operator-service": "C2D_OPERATOR_ADDRESS",
    "operator-engine": "C2D_ENGINE_ADDRESS",
}
DEFAULT_PORTS = {"provider": 50051, "operator-service": 50052, "operator-engine": 50053}


def _bindable(address: str) -> bool:
    """True if this process could listen on host:port now (as gRPC does: SO_REUSEADDR)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        family, kind, protocol, _, where = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(where)
    except (OSError, ValueError):
        return False
    return True


def listen_problem(
    provider: ProviderSettings, operator: OperatorSettings, engine: EngineSettings, fixed_ports: bool
) -> str | None:
    """What stops the servers from listening, said with the setting to change; None if nothing.
    Checked before anything is created (the data directory included)."""
    for name, address in listen_addresses(provider, operator, engine).items():
        variable = ADDRESS_SETTINGS[name]
        if fixed_ports and address.rsplit(":", 1)[-1] in ("", "0"):
            return (
                f"the {name}'s address {address!r} has no fixed port, and one process per server needs one: "
                f"set {variable} to host:port (e.g. 127.0.0.1:{DEFAULT_PORTS[name]})"
            )
        if not _bindable(address):
            return (
                f"the {name} cannot listen on {address}: the port is in use (another `c2d up`?) or the host is "
                f"not this machine's. Stop what holds it, or set {variable} to another host:port."
            )
    return None


async def run_in_process(provider: ProviderSettings, operator: OperatorSettings, engine: EngineSettings) -> int:
    """The three servers in this process until SIGINT or SIGTERM."""
    from plumbing.server import freeze_startup_heap

    running = await start_stack(provider, operator, engine)
    freeze_startup_heap()
    print(
        "c2d is up:\n"
        f"  provider          127.0.0.1:{running.provider.port}\n"
        f"  operator-service  127.0.0.1:{running.operator.port}\n"
        f"  operator-engine   127.0.0.1:{running.engine.port}\n"
        "Ctrl-C stops it.",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()
    return 0


def sandbox_warning(engine: EngineSettings) -> str | None:
    if engine.backend == "local" and engine.sandbox and shutil.which("bwrap") is None:
        return (
            "bubblewrap (bwrap) is not installed: the engine will REFUSE to run algorithms.\n"
            "Install it (apt-get install bubblewrap), or, only for code you trust, set "
            "C2D_ENGINE_SANDBOX=false."
        )
    if engine.backend == "local" and not engine.sandbox:
        return "C2D_ENGINE_SANDBOX=false: algorithms run WITHOUT a sandbox. Never do this with untrusted code."
    return None


def _prepare(engine: EngineSettings) -> None:
    warning = sandbox_warning(engine)
    if warning:
        print(f"\n!!! {warning}\n", file=sys.stderr)
    os.makedirs(settings.data_dir(), exist_ok=True)


async def start_stack(provider: ProviderSettings, operator: OperatorSettings, engine: EngineSettings) -> Stack:
    _prepare(engine)
    engine_running = await engine_server.start(engine)
    engines = (f"{engine.engine_id}={local_address(engine.address, engine_running.port)}",)
    operator_running = await operator_server.start(dataclasses.replace(operator, engines=engines))
    provider = dataclasses.replace(provider, operator_address=local_address(operator.address, operator_running.port))
    provider_running = await provider_server.start(provider)
    return Stack(engine_running, operator_running, provider_running)


# -- one process per server (`c2d up --processes`) ---------------------------------------

SERVER_MODULES = (
    ("operator-engine", "services.operator_engine"),
    ("operator-service", "services.operator_service"),
    ("provider", "services.provider"),
)


def listen_addresses(provider: ProviderSettings, operator: OperatorSettings, engine: EngineSettings) -> dict[str, str]:
    return {"operator-engine": engine.address, "operator-service": operator.address, "provider": provider.address}


def process_environments(
    provider: ProviderSettings, operator: OperatorSettings, engine: EngineSettings
) -> dict[str, dict[str, str]]:
    """Each server's environment: this one's, with the operator-service pointed
    at the engine and the provider at the operator-service (fixed ports: a
    server in another process cannot tell us the port 0 made it take)."""
    for name, address in listen_addresses(provider, operator, engine).items():
        if address.rsplit(":", 1)[-1] in ("", "0"):
            raise ValueError(f"the {name}'s address {address!r} has no fixed port: one process per server needs one")
    base = {**os.environ, "C2D_DATA_DIR": str(settings.data_dir())}
    return {
        "operator-engine": base,
        "operator-service": {**base, "C2D_OPERATOR_ENGINES": f"{engine.engine_id}={local_address(engine.address)}"},
        "provider": {**base, "C2D_PROVIDER_OPERATOR_ADDRESS": local_address(operator.address)},
    }


# A child that died is started again after a pause that doubles from the first to the
# last of these while it keeps dying; one that stayed up a minute starts over at the first.
RESTART_BACKOFF_S = (0.5, 30.0)
STEADY_S = 60.0


@dataclass
class Child:
    """One server process of `c2d up --processes`, restarted when it dies."""

    name: str
    module: str
    environment: dict[str, str]
    address: str
    stop_timeout_s: float  # from SIGTERM to SIGKILL
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0

    async def spawn(self, stop: asyncio.Event | None = None) -> bool:
        """Starts it and waits until it serves; False if it ended first (or `stop` was set)."""
        self.process = await asyncio.create_subprocess_exec(sys.executable, "-m", self.module, env=self.environment)
        return await _serving(local_address(self.address), self.process, internal=self.name != "provider", stop=stop)

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()


async def run_processes(
    provider: ProviderSettings,
    operator: OperatorSettings,
    engine: EngineSettings,
    say: Callable[[str], object] = print,
) -> int:
    """Runs each server as its own process (its own interpreter and GIL) until
    SIGINT or SIGTERM. A server that dies is started again (with backoff),
    and its siblings keep running: the engine's jobs go on through a crash of
    the provider or the operator-service (which resumes the engine's state
    stream where it left it), and a restarted engine resumes its jobs."""
    _prepare(engine)
    environments = process_environments(provider, operator, engine)
    addresses = listen_addresses(provider, operator, engine)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The engine's own stop is bounded by its grace; a little more before the SIGKILL.
    timeouts = {"operator-engine": engine.stop_grace_s + 5.0}
    children = [
        Child(name, module, environments[name], addresses[name], timeouts.get(name, 10.0))
        for name, module in SERVER_MODULES
    ]
    started: list[Child] = []
    watchers: list[asyncio.Task[None]] = []
    try:
        for child in children:  # in the order each needs the one before
            started.append(child)
            if not await child.spawn(stop):
                if stop.is_set():
                    return 0
                returncode = child.process.returncode if child.process else None
                say(f"c2d: the {child.name} did not start (exit code {returncode}); see its log above")
                return 1
        say(
            f"c2d is up, one process per server (data in {settings.data_dir()}):\n"
            + "".join(f"  {c.name:<17} {c.address}  (pid {c.process.pid if c.process else '?'})\n" for c in children)
            + "Ctrl-C stops them."
        )
        watchers = [asyncio.create_task(_keep_running(child, stop, say)) for child in children]
        await stop.wait()
        return 0
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        # The provider first (no new requests come in), then the operator-service (no
        # new dispatch), the engine last: it keeps queued jobs queued and its stages
        # resumable, so nothing upstream sees it gone while it still had work coming.
        for child in reversed(started):
            await child.stop()


async def _keep_running(child: Child, stop: asyncio.Event, say: Callable[[str], object]) -> None:
    """Starts `child` again whenever it dies, until `stop` is set."""
    pause = RESTART_BACKOFF_S[0]
    while True:
        assert child.process is not None
        up_since = time.monotonic()
        code = await child.process.wait()
        if stop.is_set():
            return
        if time.monotonic() - up_since >= STEADY_S:
            pause = RESTART_BACKOFF_S[0]
        say(f"c2d: the {child.name} exited (code {code}); starting it again in {pause:g} s")
        try:
            await asyncio.wait_for(stop.wait(), pause)
            return  # stopping meanwhile
        except TimeoutError:
            pass
        pause = min(pause * 2, RESTART_BACKOFF_S[1])
        child.restarts += 1
        serving = await child.spawn(stop)
        pid = child.process.pid if child.process else "?"
        say(f"c2d: the {child.name} {'is back' if serving else 'did not come up'} (pid {pid})")


async def _serving(
    address: str, process: asyncio.subprocess.Process, internal: bool, stop: asyncio.Event | None = None
) -> bool:
    """Waits until the server at `address` answers its health check SERVING; False once its
    process ends (or `stop` is set). No clock: a server still importing on a loaded host is
    not a server that failed (the engine took over 60 s there), and Ctrl-C ends the wait.
    The internal servers' ports take mutual TLS when it is configured."""
    async with auth.internal_channel(address) if internal else grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while process.returncode is None and not (stop is not None and stop.is_set()):
            try:
                # typeshed's HealthStub declares none of the methods grpc_health gives it
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)  # type: ignore[attr-defined]
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    return False
