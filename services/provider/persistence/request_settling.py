"""Where a batch of signed requests is settled: verified, and its nonces spent
in one transaction (domain/signed_requests.py's `Settler` port).

`WorkerSettler`, the provider's default, does it in a worker process with
its own database connection, so the curve work never takes the interpreter
lock from the event loop; `ThreadSettler` in a database thread of this
process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import multiprocessing
import os

from sqlalchemy.orm import Session

from plumbing import processes
from plumbing.database import Database
from services.provider.domain import signed_requests
from services.provider.domain.signed_requests import SignedRequest
from services.provider.persistence import store
from services.provider.persistence.models import Base


def settle_in_session(session: Session, batch: list[SignedRequest]) -> list[Exception | None]:
    return signed_requests.settle(batch, lambda spends: store.spend_nonces(session, spends))


class ThreadSettler:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def settle(self, batch: list[SignedRequest]) -> list[Exception | None]:
        return await self._db.run(functools.partial(settle_in_session, batch=batch))

    async def close(self) -> None:
        pass  # the database's threads are the database's


class WorkerSettler:
    """One worker process, started with the provider and replaced if it dies."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._worker: concurrent.futures.ProcessPoolExecutor | None = None
        self._start_worker()

    def _start_worker(self) -> None:
        # spawn, not fork: a forked gRPC process is not safe. Started now (its
        # imports take most of a second), not on the first signed request.
        self._worker = concurrent.futures.ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_open_worker_database,
            initargs=(self._database_url, os.getpid()),
        )
        self._worker.submit(int)

    async def settle(self, batch: list[SignedRequest]) -> list[Exception | None]:
        if self._worker is None:
            self._start_worker()
        assert self._worker is not None
        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker, _settle_in_worker, batch)
        except concurrent.futures.process.BrokenProcessPool:
            self._worker = None  # it died: the next batch starts a new one
            raise

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.to_thread(worker.shutdown, True, cancel_futures=True)


# -- in the worker process ---------------------------------------------------------

_worker_db: Database | None = None


def _open_worker_database(url: str, provider_pid: int) -> None:
    global _worker_db  # noqa: PLW0603 - the worker process's one database, set once at its start
    processes.die_with(provider_pid)  # a provider killed, or leaving by os._exit, takes it along
    _worker_db = Database(url, Base.metadata, threads=1)


def _settle_in_worker(batch: list[SignedRequest]) -> list[Exception | None]:
    assert _worker_db is not None
    return _worker_db.transaction(lambda session: settle_in_session(session, batch))
