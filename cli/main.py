"""`c2d`: up, demo, config."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from plumbing import settings
from plumbing.server import configure_logging, freeze_startup_heap


def _up() -> int:
    from cli.stack import from_environment, start_stack

    async def run() -> None:
        import signal

        stack = await start_stack(*from_environment())
        freeze_startup_heap()
        print(
            f"c2d is up (data in {settings.data_dir()}):\n"
            f"  provider          127.0.0.1:{stack.provider.port}\n"
            f"  operator-service  127.0.0.1:{stack.operator.port}\n"
            f"  operator-engine   127.0.0.1:{stack.engine.port}\n"
            "Ctrl-C stops it.",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await stack.stop()

    asyncio.run(run())
    return 0


def _config() -> int:
    from services.operator_engine.settings import EngineSettings
    from services.operator_service.settings import OperatorSettings
    from services.provider.settings import ProviderSettings

    for cls, prefix in (
        (ProviderSettings, "C2D_PROVIDER"),
        (OperatorSettings, "C2D_OPERATOR"),
        (EngineSettings, "C2D_ENGINE"),
    ):
        for name, default, doc in settings.describe(cls, prefix):
            print(f"{name:36} {default!s:24} {doc}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="c2d", description="compute-to-data")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run provider, operator-service and operator-engine on localhost")
    up.add_argument(
        "--processes",
        action="store_true",
        help="one process per server (each its own interpreter: more throughput on several cores)",
    )
    commands.add_parser("demo", help="publish, order, run and download one job (starts the stack if needed)")
    commands.add_parser("config", help="list every setting with its default")
    args = parser.parse_args()
    configure_logging(os.environ.get("C2D_LOG_LEVEL", "WARNING"))
    if args.command == "up" and args.processes:
        from cli.stack import from_environment, run_processes

        sys.exit(asyncio.run(run_processes(*from_environment())))
    if args.command == "up":
        sys.exit(_up())
    if args.command == "demo":
        from cli.demo import demo_main

        sys.exit(asyncio.run(demo_main()))
    sys.exit(_config())


if __name__ == "__main__":
    main()
