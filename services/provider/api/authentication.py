"""Who is calling: a servicer's signed request, checked and its nonce spent.

The signed fields of a request are its proto3 JSON form without the
`signature` field (domain/identity.py's `signed_fields`); the method is the
RPC's name, e.g. "StartCompute". The RequestVerifier server.py made settles
it with the other requests of the moment (domain/signed_requests.py).
"""

from __future__ import annotations

from google.protobuf.message import Message

from plumbing import errors, untrusted
from services.provider.domain import identity
from services.provider.domain.signed_requests import RequestVerifier, SignedRequest


async def authenticate(verifier: RequestVerifier, method: str, request: Message) -> str:
    """Returns the caller's checksummed address, or raises a Refusal."""
    if not request.HasField("signature"):
        raise errors.Unauthenticated(
            f"{method} must be signed: set signature {{address, nonce, signature}}", "signature_missing"
        )
    # Every signed request message has this field (mypy sees only Message, which has none).
    signature = request.signature  # type: ignore[attr-defined]
    address = identity.normalize_address(signature.address)
    nonce = untrusted.int64(signature.nonce, "signature.nonce")  # the nonces table holds signed 64 bits
    # The signature first (an unsigned caller learns nothing about nonces).
    await verifier.check(SignedRequest(address, method, identity.signed_fields(request), nonce, signature.signature))
    return address
