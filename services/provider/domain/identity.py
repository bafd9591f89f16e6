"""Who is asking: Ethereum addresses and EIP-191 signed requests.

A consumer is an Ethereum address. Each request carries a nonce and an
EIP-191 ``personal_sign`` signature over a canonical message built from the
RPC method, the nonce and the request's fields:

    c2d:v1:<method>:<nonce>:<canonical JSON of fields>

- ``<method>`` is the RPC method name (e.g. ``StartCompute``); it is limited
  to ``[A-Za-z0-9_./-]`` so it cannot contain the ``:`` delimiter.
- ``<nonce>`` is the decimal nonce, no sign, no leading zeros.
- the fields are JSON with keys sorted, compact separators, non-ASCII as
  UTF-8, lists in their given order (see ``canonical``). The signature and
  the nonce themselves are not among the fields. A gRPC request's fields are
  its proto3 JSON form (field names as in the .proto, default values
  omitted) without its ``signature`` field: ``signed_fields``.

Binding the method stops a signature for one RPC being replayed against
another; the nonce, used once per address, stops a request being replayed
at all (persistence/store.py keeps a window of recent nonces above a floor,
so a client's concurrent requests may arrive out of order).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from coincurve import PublicKey as _Secp256k1PublicKey
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from plumbing.ethereum import Account, encode_defunct

from .canonical import canonical_json
from .errors import (
    ADDRESS_INVALID,
    NONCE_INVALID,
    SIGNATURE_INVALID,
    Refusal,
)

MESSAGE_PREFIX = "c2d:v1"

_METHOD = re.compile(r"[A-Za-z0-9_./-]+")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_SIGNATURE = re.compile(r"(0x)?[0-9a-fA-F]{130}")
_EIP191_PREFIX = b"\x19Ethereum Signed Message:\n"
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# EIP-55 costs a keccak per call and every signed request needs it twice;
# the same few addresses come back again and again.
_checksummed = functools.lru_cache(maxsize=1 << 16)(to_checksum_address)


def is_address(s: object) -> bool:
    """True if ``s`` is a ``0x`` + 40 hex address whose case is valid.

    All-lower and all-upper hex are accepted as they are; mixed case must be
    the EIP-55 checksum, so a mistyped checksummed address is caught.
    """
    if not isinstance(s, str) or not _ADDRESS.fullmatch(s):
        return False
    body = s[2:]
    if body == body.lower() or body == body.upper():
        return True
    return _checksummed(s) == s


def normalize_address(s: object) -> str:
    """Return ``s`` as an EIP-55 checksummed address, or refuse it (address_invalid)."""
    if not is_address(s):
        raise Refusal(
            ADDRESS_INVALID,
            f"{s!r} is not an Ethereum address: expected 0x followed by 40 hex digits"
            " (mixed case must be a valid EIP-55 checksum)",
        )
    assert isinstance(s, str)
    return _checksummed(s)


def _check_nonce(nonce: object) -> int:
    # bool is an int subclass; True is not a nonce.
    if isinstance(nonce, bool) or not isinstance(nonce, int) or nonce < 0:
        raise Refusal(NONCE_INVALID, f"nonce must be a non-negative integer, got {nonce!r}")
    return nonce


def canonical_message(method: str, fields: Mapping[str, Any], nonce: int) -> str:
    """Return the text that is signed for a request (format in the module docstring).

    Raises ValueError/TypeError for a malformed method or fields without a
    JSON form (both are programming errors in the caller), and
    Refusal(nonce_invalid) for a negative or non-integer nonce.
    """
    if not isinstance(method, str) or not _METHOD.fullmatch(method):
        raise ValueError(f"method must match {_METHOD.pattern}, got {method!r}")
    if not isinstance(fields, Mapping):
        raise TypeError(f"fields must be a mapping, got {type(fields).__name__}")
    checked = _check_nonce(nonce)
    return f"{MESSAGE_PREFIX}:{method}:{checked}:{canonical_json(fields)}"


def sign_request(private_key_hex: str, method: str, fields: Mapping[str, Any], nonce: int) -> str:
    """Sign a request as a consumer would; return the 65-byte signature as 0x-hex."""
    message = encode_defunct(text=canonical_message(method, fields, nonce))
    signed = Account.sign_message(message, private_key_hex)
    return "0x" + bytes(signed.signature).hex()


def recover_signer(method: str, fields: Mapping[str, Any], nonce: int, signature: str) -> str:
    """Return the checksummed address that signed this request.

    Refuses (signature_invalid) a signature that is not 65 bytes of hex or
    from which no key can be recovered. A well-formed signature over other
    content recovers *some* address: comparing it is ``verify_request``'s job.
    """
    if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
        raise Refusal(
            SIGNATURE_INVALID,
            "signature must be 65 bytes as hex (0x followed by 130 hex digits)",
        )
    raw = bytes.fromhex(signature[2:] if signature.startswith("0x") else signature)
    try:
        return _checksummed(_recover_personal_sign(canonical_message(method, fields, nonce), raw))
    except ValueError as exc:
        # Bad v, r or s values: the bytes are not a signature at all.
        raise Refusal(SIGNATURE_INVALID, f"signature cannot be verified: {exc}") from exc


def _recover_personal_sign(text: str, raw: bytes) -> str:
    """The lowercase address whose key made this EIP-191 personal_sign signature.

    What ``Account.recover_message`` computes, straight on libsecp256k1: its
    layers (checksummed addresses, signature objects) cost twice the curve
    operation itself, on every signed request."""
    body = text.encode()
    digest = keccak(_EIP191_PREFIX + str(len(body)).encode() + body)
    v = raw[64] - 27 if raw[64] >= 27 else raw[64]
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big")
    if v not in (0, 1):
        raise ValueError(f"v must be 27 or 28 (or 0 or 1), got {raw[64]}")
    if not (0 < r < _SECP256K1_N and 0 < s < _SECP256K1_N):
        raise ValueError("r and s must be in 1 .. the curve order - 1")
    public = _Secp256k1PublicKey.from_signature_and_message(raw[:64] + bytes([v]), digest, hasher=None)
    return _address_of(public.format(compressed=False))


@functools.lru_cache(maxsize=1 << 16)
def _address_of(public_key: bytes) -> str:
    """The lowercase address of an uncompressed public key: a keccak per
    signed request otherwise, and the same few keys sign again and again."""
    return "0x" + keccak(public_key[1:])[-20:].hex()


def verify_request(
    address: str,
    method: str,
    fields: Mapping[str, Any],
    nonce: int,
    signature: str,
    last_nonce: int | None,
) -> None:
    """Check that ``address`` signed this request and that its nonce is fresh.

    Rules, in order:
    - ``address`` must be an address (address_invalid);
    - the signature must recover to ``address``, compared case-insensitively
      (signature_invalid);
    - ``nonce`` must be greater than ``last_nonce``, the highest nonce already
      accepted from this address, or ``None`` if there is none (nonce_invalid).

    The signature is checked first so an unauthenticated caller learns
    nothing about another address's nonces. Recording ``nonce`` as the new
    last nonce is the caller's job, after this returns.
    """
    expected = normalize_address(address)
    _check_nonce(nonce)
    signer = recover_signer(method, fields, nonce, signature)
    if signer.lower() != expected.lower():
        raise Refusal(
            SIGNATURE_INVALID,
            f"the request is not signed by {expected}: sign the canonical message for {method} with that address's key",
        )
    if last_nonce is not None and nonce <= last_nonce:
        raise Refusal(
            NONCE_INVALID,
            f"nonce {nonce} was already used or is too old: use a nonce greater than {last_nonce}"
            " (GetNonce returns the last one used)",
        )


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
            copy.ClearField("signature")
            return json_format.MessageToDict(copy, preserving_proto_field_name=True)
        fields[field.name] = value
    return fields
