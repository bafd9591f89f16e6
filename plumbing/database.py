"""The one database session setup: SQLAlchemy 2, SQLite or PostgreSQL by URL.

Services are asyncio programs and SQLAlchemy's drivers block, so every unit
of work runs in a thread as one transaction: `await db.run(fn)` calls
`fn(session)` inside `session.begin()`. SQLite gets a single writer thread
(it has one writer anyway, and this keeps "database is locked" away);
PostgreSQL gets a small pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from sqlalchemy import Column, MetaData, Table, create_engine, event, inspect, literal
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.sql.schema import ScalarElementColumnDefault

T = TypeVar("T")
Item = TypeVar("Item")


def sqlite_url(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class Database:
    def __init__(self, url: str, metadata: MetaData, threads: int = 4) -> None:
        self.url = url
        self.metadata = metadata
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine: Engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(self.engine, "connect", _sqlite_pragmas)
            threads = 1
        else:
            # values_plus_batch: executemany UPDATEs go out in pages, not one round trip per row.
            options = {"executemany_mode": "values_plus_batch"} if "+psycopg2" in url else {}
            self.engine = create_engine(url, pool_size=threads, max_overflow=threads, **options)
            event.listen(self.engine, "checkin", _checked_in)
            event.listen(self.engine, "checkout", _ping_if_idle)
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="db")

    def create_schema(self) -> None:
        """Creates what is missing: tables, and in tables a database made by an
        earlier release already has, the columns and indexes added since (the
        provider and the engine have no Alembic history; additive changes only)."""
        self.metadata.create_all(self.engine)
        inspector = inspect(self.engine)
        with self.engine.begin() as connection:
            for table in self.metadata.sorted_tables:
                present = {column["name"] for column in inspector.get_columns(table.name)}
                for column in table.columns:
                    if column.name not in present:
                        connection.exec_driver_sql(_add_column(table, column, self.engine))
                indexed = {index["name"] for index in inspector.get_indexes(table.name)}
                for index in table.indexes:
                    if index.name not in indexed:
                        index.create(connection)

    def transaction(self, fn: Callable[[Session], T]) -> T:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            return fn(session)

    async def run(self, fn: Callable[[Session], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.transaction, fn)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()


def _add_column(table: Table, column: Column[object], engine: Engine) -> str:
    preparer = engine.dialect.identifier_preparer
    ddl = f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {preparer.format_column(column)}"
    ddl += f" {column.type.compile(engine.dialect)}"
    default = column.default.arg if isinstance(column.default, ScalarElementColumnDefault) else None
    if default is not None:
        value = literal(default, column.type).compile(engine, compile_kwargs={"literal_binds": True})
        ddl += f" DEFAULT {value}"
    if not column.nullable and default is not None:
        ddl += " NOT NULL"  # rows already there take the default
    return ddl


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (other processes, `c2d` tools) read while a job writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# A pooled connection idle for longer than this is pinged before use (a
# restarted server has closed it). A ping on every checkout (pool_pre_ping)
# cost a round trip per transaction: 5% of a busy service's CPU.
IDLE_PING_S = 5.0


def lost_connection(exc: BaseException) -> bool:
    """True if the error says the database went away (restarting, unreachable) rather
    than refused the work: the same work can succeed once it is back."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | DisconnectionError)


def _checked_in(_dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(
    dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    if time.monotonic() - record.info.get("idle_since", time.monotonic()) < IDLE_PING_S:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        dbapi_connection.rollback()
    except Exception as exc:
        raise DisconnectionError("connection lost while idle") from exc


class GroupCommit(Generic[Item, T]):
    """Writes that arrive together share one transaction.

    `await batcher.submit(item)` queues the item; one flusher task runs
    `write(session, items)` for everything queued since its last round and
    hands each caller its own result (write returns one per item, in order).
    A commit costs the same for one row or a hundred, so under load this is
    what keeps a service fast; alone, a write waits for nothing. If a batch
    fails, each of its items is retried in a transaction of its own, so one
    bad item fails only its caller. `committed(results)`, if given, runs
    after each successful commit and before any caller resumes.
    """

    def __init__(
        self,
        db: Database,
        write: Callable[[Session, Sequence[Item]], Sequence[T]],
        committed: Callable[[Sequence[T]], None] | None = None,
        max_batch: int = 500,
    ) -> None:
        self._db = db
        self._write = write
        self._committed = committed
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[T]]] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> T:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever(), name="group-commit")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wake.set()
        return await future

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[Item, asyncio.Future[T]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await self._db.run(lambda s: self._write(s, items))
        except Exception as exc:  # noqa: BLE001 - sorted out item by item below
            if len(batch) == 1:
                _fail(batch[0][1], exc)
                return
            for one in batch:
                await self._commit([one])
            return
        if self._committed is not None:
            self._committed(results)
        for (_, future), result in zip(batch, results, strict=False):
            _settle(future, result)


def _settle(future: asyncio.Future[T], result: T) -> None:
    if not future.done():  # else its caller was cancelled; the write stands
        future.set_result(result)


def _fail(future: asyncio.Future[T], exception: BaseException) -> None:
    if not future.done():  # else its caller was cancelled
        future.set_exception(exception)
