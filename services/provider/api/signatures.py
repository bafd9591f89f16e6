"""Checks a request's consumer signature and spends its nonce.

The signed fields of a request are its proto3 JSON form (field names as in
the .proto, default values omitted) without the `signature` field; the
method is the RPC's name, e.g. "StartCompute". See domain/identity.py for
the message format.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from plumbing import errors
from plumbing.database import Database
from services.provider.domain import identity
from services.provider.persistence import store


class NonceBook:
    """Spends nonces in batches: the requests waiting at one moment share one
    transaction and one trip to the database thread. One trip per request
    made every signed call queue behind SQLite's single writer thread (and
    the GIL hand-off to it), whatever the call did next."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: list[tuple[str, int, asyncio.Future[None]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def spend(self, address: str, nonce: int) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((address, nonce, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.ensure_future(self._drain())
        await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                outcomes = await self._db.run(lambda session, batch=batch: store.spend_nonces(session, [(a, n) for a, n, _ in batch]))
            except Exception as exc:  # noqa: BLE001 - the database failed: every request in the batch hears it
                outcomes = [exc] * len(batch)
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue  # its caller went away
                if outcome is None:
                    future.set_result(None)
                else:
                    future.set_exception(outcome)


_books: weakref.WeakKeyDictionary[Database, NonceBook] = weakref.WeakKeyDictionary()


def _book(db: Database) -> NonceBook:
    book = _books.get(db)
    if book is None:
        book = _books[db] = NonceBook(db)
    return book


def signed_fields(request: Message) -> dict[str, Any]:
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("signature")  # type: ignore[arg-type]
    return json_format.MessageToDict(copy, preserving_proto_field_name=True)


async def authenticate(db: Database, method: str, request: Message) -> str:
    """Returns the caller's checksummed address, or raises a Refusal."""
    if not request.HasField("signature"):  # type: ignore[arg-type]
        raise errors.Unauthenticated(
            f"{method} must be signed: set signature {{address, nonce, signature}}", "signature_missing"
        )
    signature = request.signature  # type: ignore[attr-defined]
    address = identity.normalize_address(signature.address)
    fields = signed_fields(request)

    # The signature first (an unsigned caller learns nothing about nonces),
    # outside the transaction: SQLite has one writer thread to keep free.
    identity.verify_request(address, method, fields, signature.nonce, signature.signature, None)
    await _book(db).spend(address, signature.nonce)
    return address
