"""Checks a request's consumer signature and spends its nonce.

The signed fields of a request are its proto3 JSON form (field names as in
the .proto, default values omitted) without the `signature` field; the
method is the RPC's name, e.g. "StartCompute". See domain/identity.py for
the message format.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import weakref
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from plumbing import errors
from plumbing.database import Database
from services.provider.domain import identity
from services.provider.persistence import store


@dataclass
class _Pending:
    address: str
    method: str
    fields: dict[str, Any]
    nonce: int
    signature: str
    answer: asyncio.Future[None]


class RequestVerifier:
    """Checks signatures and spends nonces in batches: the requests waiting at
    one moment are verified in one trip to a worker thread, then spend their
    nonces in one transaction (group commit). On the event loop, a signature
    check cost more than a whole bare RPC: its C calls release the GIL and
    each got it back only after the loop's other work; and one database trip
    per request queued every signed call behind SQLite's single writer."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Its own thread: signature checks never queue behind file reads in the default executor.
        self._verify_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="signatures")
        self._pending: list[_Pending] = []
        self._draining: asyncio.Task[None] | None = None

    async def check(self, address: str, method: str, fields: dict[str, Any], nonce: int, signature: str) -> None:
        """Returns once the request is verified and its nonce spent, or raises the Refusal."""
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(address, method, fields, nonce, signature, answer))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.ensure_future(self._drain())
        await answer

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._settle(batch)
            except Exception as exc:  # noqa: BLE001 - a worker or the database failed: every request left hears it
                for pending in batch:
                    _answer(pending, exc)

    async def _settle(self, batch: list[_Pending]) -> None:
        refusals = await asyncio.get_running_loop().run_in_executor(self._verify_thread, _verify_all, batch)
        signed = []
        for pending, refusal in zip(batch, refusals, strict=True):
            if refusal is None:
                signed.append(pending)
            else:
                _answer(pending, refusal)
        if not signed:
            return
        spends = [(p.address, p.nonce) for p in signed]
        outcomes = await self._db.run(lambda session: store.spend_nonces(session, spends))
        for pending, outcome in zip(signed, outcomes, strict=True):
            _answer(pending, outcome)


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

    # The signature first (an unsigned caller learns nothing about nonces).
    await _verifier_for(db).check(address, method, fields, signature.nonce, signature.signature)
    return address
