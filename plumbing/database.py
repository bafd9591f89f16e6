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
from pathlib import Path
from typing import Callable, TypeVar

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

T = TypeVar("T")


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
            self.engine = create_engine(url, pool_size=threads, max_overflow=threads, pool_pre_ping=True, **options)
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="db")

    def create_schema(self) -> None:
        self.metadata.create_all(self.engine)

    def transaction(self, fn: Callable[[Session], T]) -> T:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            return fn(session)

    async def run(self, fn: Callable[[Session], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.transaction, fn)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    # WAL lets readers (other processes, `c2d` tools) read while a job writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
