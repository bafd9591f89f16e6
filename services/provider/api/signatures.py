"""Checks a request's consumer signature and spends its nonce.

The signed fields of a request are its proto3 JSON form (field names as in
the .proto, default values omitted) without the `signature` field; the
method is the RPC's name, e.g. "StartCompute". See domain/identity.py for
the message format.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from plumbing import errors
from plumbing.database import Database
from services.provider.domain import identity
from services.provider.persistence import store


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

    def verify_and_spend(session) -> None:  # type: ignore[no-untyped-def]
        last = store.read_nonce(session, address)
        identity.verify_request(address, method, fields, signature.nonce, signature.signature, last)
        store.advance_nonce(session, address, signature.nonce)

    await db.run(verify_and_spend)
    return address
