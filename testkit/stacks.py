"""The whole c2d stack in-process on free ports, on SQLite or on a fresh
database of the real PostgreSQL server (tests and benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import psycopg2

from c2d.provider.v1 import provider_pb2, provider_pb2_grpc
from cli.stack import Stack, start_stack
from services.operator_engine.settings import EngineSettings
from services.operator_service.settings import OperatorSettings
from services.provider.settings import ProviderSettings

PG_ADMIN = os.environ.get("C2D_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _database_url(name: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    return f"{base}/{name}"


def _admin(database: str = "") -> psycopg2.extensions.connection:
    connection = psycopg2.connect(PG_ADMIN.rsplit("/", 1)[0] + "/" + database if database else PG_ADMIN)
    connection.autocommit = True
    return connection


def _disconnect_all(cur: psycopg2.extensions.cursor, name: str) -> None:
    cur.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )


@contextlib.contextmanager
def fresh_postgres_database(prefix: str = "c2d_test") -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards (tests and benchmarks)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _database_url(name)
    finally:
        with admin.cursor() as cur:
            _disconnect_all(cur, name)
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


class EmptiedDatabases:
    """Empty PostgreSQL databases for one test process, each emptied after use
    for the next test instead of dropped: a DROP DATABASE forces a checkpoint
    (one to two seconds here, each test), dropping its schemas does not. An
    emptied database is what CREATE DATABASE gives: one empty `public` schema
    as PostgreSQL 15 makes it. One that someone still uses or that is not
    empty when its turn comes again (a server that outlived its test) is left
    alone and dropped at the end."""

    def __init__(self, prefix: str = "c2d_test") -> None:
        self.prefix = prefix
        self.names: list[str] = []  # every database made, dropped by close()
        self.spare: list[str] = []  # emptied, ready for the next test

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """The URL of an empty database for the block; emptied afterwards."""
        name = self._take()
        yield _database_url(name)
        with contextlib.closing(_admin()) as admin, admin.cursor() as cur:
            _disconnect_all(cur, name)
        with contextlib.closing(_admin(name)) as connection, connection.cursor() as cur:
            # One transaction, not waiting for its WAL flush: a crash before the flush leaves
            # the tables, and _take() then passes the database over.
            connection.autocommit = False
            cur.execute("SET LOCAL synchronous_commit = off")
            cur.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
            )
            for (schema,) in cur.fetchall():
                cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
            cur.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
            cur.execute("COMMENT ON SCHEMA public IS 'standard public schema'")
            cur.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
            connection.commit()
        self.spare.append(name)

    def _take(self) -> str:
        while self.spare:
            name = self.spare.pop()
            with contextlib.closing(_admin(name)) as connection, connection.cursor() as cur:
                cur.execute(_UNUSED_AND_EMPTY)
                if cur.fetchone() == (True,):
                    return name
        name = f"{self.prefix}_{uuid.uuid4().hex[:12]}"
        with contextlib.closing(_admin()) as admin, admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return name

    def close(self) -> None:
        with contextlib.closing(_admin()) as admin, admin.cursor() as cur:
            for name in self.names:
                _disconnect_all(cur, name)
                cur.execute(f'DROP DATABASE IF EXISTS "{name}"')


# Nobody else connected, no schema but public, nothing in it, no large object.
_UNUSED_AND_EMPTY = """
SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid())
   AND NOT EXISTS (SELECT FROM pg_namespace
                   WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'public'))
   AND NOT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public')
   AND NOT EXISTS (SELECT FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public')
   AND NOT EXISTS (SELECT FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public')
   AND NOT EXISTS (SELECT FROM pg_largeobject_metadata)
"""


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


ENVIRONMENT_WAIT_S = 60.0  # as testkit/market.py waits: a stack starting on a loaded 2-core host


async def wait_for_environment(provider_address: str) -> None:
    """Until the provider lists an available environment: the engine's first heartbeat,
    relayed by the operator-service once its state stream runs."""
    deadline = time.monotonic() + ENVIRONMENT_WAIT_S
    async with grpc.aio.insecure_channel(provider_address) as channel:
        stub = provider_pb2_grpc.ProviderServiceStub(channel)
        while time.monotonic() < deadline:
            envs = (await stub.ListComputeEnvironments(provider_pb2.ListComputeEnvironmentsRequest())).environments
            if any(e.available for e in envs):
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"the engine's environment did not become available in {ENVIRONMENT_WAIT_S:g} s")
