"""Runs the three servers in one process: the embedded default of `c2d up`,
the demo and the end-to-end tests."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass

from plumbing import settings
from plumbing.server import RunningServer
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


async def start_stack(provider: ProviderSettings, operator: OperatorSettings, engine: EngineSettings) -> Stack:
    warning = sandbox_warning(engine)
    if warning:
        print(f"\n!!! {warning}\n", file=sys.stderr)
    os.makedirs(settings.data_dir(), exist_ok=True)
    engine_running = await engine_server.start(engine)
    host = engine.address.rsplit(":", 1)[0]
    operator = dataclasses.replace(operator, engines=(f"{engine.engine_id}={host}:{engine_running.port}",))
    operator_running = await operator_server.start(operator)
    provider = dataclasses.replace(
        provider, operator_address=f"{operator.address.rsplit(':', 1)[0]}:{operator_running.port}"
    )
    provider_running = await provider_server.start(provider)
    return Stack(engine_running, operator_running, provider_running)
