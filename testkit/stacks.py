"""The whole c2d stack in-process on free ports, on SQLite or on a fresh
database of the real PostgreSQL server (tests and benchmarks)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg2

from cli.stack import Stack, start_stack
from services.operator_engine.settings import EngineSettings
from services.operator_service.settings import OperatorSettings
from services.provider.settings import ProviderSettings

PG_ADMIN = os.environ.get("C2D_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def fresh_postgres_database(prefix: str = "c2d_test") -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards (tests and benchmarks)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


# Each server's /metrics on a free port (RunningServer.metrics_port says which).
ANY_PORT = "127.0.0.1:0"


def settings_for(
    database_url: str = "", backend: str = "local", **engine: object
) -> tuple[ProviderSettings, OperatorSettings, EngineSettings]:
    return (
        ProviderSettings(address=ANY_PORT, metrics_address=ANY_PORT, database_url=database_url),
        OperatorSettings(address=ANY_PORT, metrics_address=ANY_PORT, database_url=database_url, engine_liveness_s=5.0),
        EngineSettings(
            address=ANY_PORT,
            metrics_address=ANY_PORT,
            database_url=database_url,
            backend=backend,
            heartbeat_s=0.5,
            **engine,  # type: ignore[arg-type]
        ),
    )


async def running_stack(database_url: str = "", **engine: object) -> AsyncIterator[Stack]:
    stack = await start_stack(*settings_for(database_url, **engine))
    try:
        yield stack
    finally:
        await stack.stop()
