"""Checks a request's consumer signature and spends its nonce.

The signed fields of a request are its proto3 JSON form (field names as in
the .proto, default values omitted) without the `signature` field; the
method is the RPC's name, e.g. "StartCompute". See domain/identity.py for
the message format.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import multiprocessing
import os
import weakref
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from sqlalchemy.orm import Session

from plumbing import errors, processes
from plumbing.database import Database
from services.provider.domain import identity
from services.provider.persistence import store
from services.provider.persistence.models import Base

# How long a batch of signed requests waits for company before its trip to the
# database thread. Under load (64 clients) 1 ms gave GetJobDetails 10% more
# RPS than taking only what one event-loop turn had read; 2 and 4 ms no more.
BATCH_WINDOW_S = 0.001
# Batches on their way at once: the next one is collected and sent while one
# is being settled, so the worker never waits for the event loop.
TRIPS_IN_FLIGHT = 2


@dataclass(slots=True)
class _Pending:
    address: str
    method: str
    fields: dict[str, Any]
    nonce: int
    signature: str
    answer: asyncio.Future[None]


class RequestVerifier:
    """Checks signatures and spends nonces in batches: the requests waiting at
    one moment are verified and spend their nonces in one trip, in one
    transaction (group commit), either to a worker process (`in_worker`, the
    provider's default) or to a database thread.

    On the event loop, a signature check cost more than a whole bare RPC; in a
    thread of this process, the curve work and the nonce transaction still
    took the interpreter lock from the event loop at every hand-off (the loop
    idled at half a core while requests queued). In its own interpreter the
    worker takes nothing from the loop: GetJobDetails did 15-20% more
    requests/s. Up to TRIPS_IN_FLIGHT batches are on their way at once."""

    def __init__(self, db: Database, in_worker: bool = False) -> None:
        self._db = db
        self._in_worker = in_worker
        self._pending: list[_Pending] = []
        self._draining: asyncio.Task[None] | None = None
        self._trips: set[asyncio.Future[None]] = set()
        self._worker: concurrent.futures.ProcessPoolExecutor | None = None
        if in_worker:
            self._start_worker()

    def _start_worker(self) -> None:
        # spawn, not fork: a forked gRPC process is not safe. Started now (its
        # imports take most of a second), not on the first signed request.
        self._worker = concurrent.futures.ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_open_worker_store,
            initargs=(self._db.url, os.getpid()),
        )
        self._worker.submit(int)

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.to_thread(worker.shutdown, True, cancel_futures=True)

    async def _settle(self, batch: list[_Pending]) -> list[Exception | None]:
        if not self._in_worker:
            return await self._db.run(functools.partial(_settle, batch=batch))
        if self._worker is None:
            self._start_worker()
        assert self._worker is not None
        items = [(p.address, p.method, p.fields, p.nonce, p.signature) for p in batch]
        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker, _settle_in_worker, items)
        except concurrent.futures.process.BrokenProcessPool:
            self._worker = None  # it died: the next batch starts a new one
            raise

    async def check(self, address: str, method: str, fields: dict[str, Any], nonce: int, signature: str) -> None:
        """Returns once the request is verified and its nonce spent, or raises the Refusal."""
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(address, method, fields, nonce, signature, answer))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.ensure_future(self._drain())
        await answer

    async def _drain(self) -> None:
        while self._pending:
            # Requests arriving within BATCH_WINDOW_S join this batch: fewer, larger trips.
            await asyncio.sleep(BATCH_WINDOW_S)
            while len(self._trips) >= TRIPS_IN_FLIGHT:
                await asyncio.wait(self._trips, return_when=asyncio.FIRST_COMPLETED)
            batch, self._pending = self._pending, []
            trip = asyncio.ensure_future(self._trip(batch))
            self._trips.add(trip)
            trip.add_done_callback(self._trips.discard)

    async def _trip(self, batch: list[_Pending]) -> None:
        try:
            outcomes = await self._settle(batch)
        except Exception as exc:  # noqa: BLE001 - the database failed: every request left hears it
            outcomes = [exc] * len(batch)
        for pending, outcome in zip(batch, outcomes, strict=True):
            _answer(pending, outcome)


def _settle(session: Session, batch: list[_Pending]) -> list[Exception | None]:
    """Each request's refusal or None: signatures first, then the nonces of
    the signed ones in this transaction (verifying issues no statement, so the
    database is not touched until the curve work is done)."""
    outcomes = _verify_all(batch)
    signed = [index for index, refusal in enumerate(outcomes) if refusal is None]
    if signed:
        spent = store.spend_nonces(session, [(batch[i].address, batch[i].nonce) for i in signed])
        for index, outcome in zip(signed, spent, strict=True):
            outcomes[index] = outcome
    return outcomes


# -- in the worker process ---------------------------------------------------------

_worker_db: Database | None = None


def _open_worker_store(url: str, provider_pid: int) -> None:
    global _worker_db  # noqa: PLW0603 - the worker process's one database, set once at its start
    processes.die_with(provider_pid)  # a provider killed, or leaving by os._exit, takes it along
    _worker_db = Database(url, Base.metadata, threads=1)


def _settle_in_worker(items: list[tuple[str, str, dict[str, Any], int, str]]) -> list[Exception | None]:
    assert _worker_db is not None
    batch = [_Pending(*item, None) for item in items]  # type: ignore[arg-type]
    return _worker_db.transaction(lambda session: _settle(session, batch))


def _verify_all(batch: list[_Pending]) -> list[Exception | None]:
    refusals: list[Exception | None] = []
    for p in batch:
        try:
            identity.verify_request(p.address, p.method, p.fields, p.nonce, p.signature, None)
            refusals.append(None)
        except Exception as exc:  # noqa: BLE001 - that request's answer, not the batch's
            refusals.append(exc)
    return refusals


def _answer(pending: _Pending, outcome: BaseException | None) -> None:
    if pending.answer.done():
        return  # its caller went away
    if outcome is None:
        pending.answer.set_result(None)
    else:
        pending.answer.set_exception(outcome)


_verifiers: weakref.WeakKeyDictionary[Database, RequestVerifier] = weakref.WeakKeyDictionary()


def _verifier_for(db: Database) -> RequestVerifier:
    verifier = _verifiers.get(db)
    if verifier is None:
        verifier = _verifiers[db] = RequestVerifier(db)
    return verifier


def verify_in_worker(db: Database) -> None:
    """Signed requests on this database are settled in a worker process from now on."""
    _verifiers[db] = RequestVerifier(db, in_worker=True)


async def close_verifier(db: Database) -> None:
    verifier = _verifiers.pop(db, None)
    if verifier is not None:
        await verifier.close()


# Field types whose proto3 JSON form is the Python value itself (64-bit
# integers are JSON strings, enums names, bytes base64, floats special).
_PLAIN_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_STRING,
        FieldDescriptor.TYPE_BOOL,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
    }
)


def signed_fields(request: Message) -> dict[str, Any]:
    """The request's proto3 JSON form without its signature. When every set
    field is a plain scalar (GetJobDetails, ...) it is built straight from the
    set fields: json_format's copy and walk cost more than the rest of a
    request's check on the event loop."""
    fields: dict[str, Any] = {}
    for field, value in request.ListFields():
        if field.name == "signature":
            continue
        if field.is_repeated or field.type not in _PLAIN_TYPES:
            copy = type(request)()
            copy.CopyFrom(request)
            copy.ClearField("signature")  # type: ignore[arg-type]
            return json_format.MessageToDict(copy, preserving_proto_field_name=True)
        fields[field.name] = value
    return fields


async def authenticate(db: Database, method: str, request: Message) -> str:
    """Returns the caller's checksummed address, or raises a Refusal."""
    if not request.HasField("signature"):  # type: ignore[arg-type]
        raise errors.Unauthenticated(
            f"{method} must be signed: set signature {{address, nonce, signature}}", "signature_missing"
        )
    signature = request.signature  # type: ignore[attr-defined]
    address = identity.normalize_address(signature.address)
    fields = signed_fields(request)

    # The signature first (an unsigned caller learns nothing about nonces).
    await _verifier_for(db).check(address, method, fields, signature.nonce, signature.signature)
    return address
