"""How a pod program (pod_config, pod_publish) starts, in one place.

A pod learns its job from its environment and talks to the engine's
JobAgentService over one channel. Run as `python -m services.pod_...` it
opens that channel itself; forked by the local backend's launcher
(services/operator_engine/backends/pod_launcher.py) it may be handed a
channel its process connected while it waited for a job, so the connection
is not on the job's clock.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plumbing import auth, server


@dataclass(frozen=True)
class Pod:
    job_id: str
    token: str
    agent_address: str
    data_root: Path

    @classmethod
    def from_environment(cls) -> Pod:
        env = os.environ
        return cls(env["C2D_JOB_ID"], env["C2D_JOB_TOKEN"], env["C2D_AGENT_ADDRESS"], Path(env["C2D_DATA_ROOT"]))


# A pod program: does the job's stage over the agent channel; its exit code.
Program = Callable[[Pod, Any], Awaitable[int]]


def channel_key() -> tuple[str, ...]:
    """What the agent channel depends on: a channel made under another key is not this pod's."""
    return (os.environ.get("C2D_AGENT_ADDRESS", ""), *(os.environ.get(name, "") for name in auth.TLS_VARIABLES))


async def run(name: str, program: Program, channel: Any = None) -> int:
    """Runs the program for the job in the environment; 2 if the environment lacks it."""
    try:
        pod = Pod.from_environment()
    except KeyError as missing:
        print(f"{name}: environment variable {missing} is required", file=sys.stderr)
        return 2
    if channel is not None:
        return await program(pod, channel)
    async with auth.internal_channel(pod.agent_address) as fresh:
        return await program(pod, fresh)


def configure_logging() -> None:
    server.configure_logging(os.environ.get("C2D_LOG_LEVEL", "INFO"))


def main(name: str, program: Program) -> None:
    """`python -m services.<name>`."""
    configure_logging()
    sys.exit(asyncio.run(run(name, program)))
