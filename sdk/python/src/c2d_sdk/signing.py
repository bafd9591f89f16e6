"""Signing requests as the provider checks them (docs/signing.md is the specification).

Every call that acts for an account carries a ``signature`` field
``{address, nonce, signature}``: an EIP-191 ``personal_sign`` signature by
that address over the text

    c2d:v1:<method>:<nonce>:<canonical JSON of the request without its signature>

The request's fields are its proto3 JSON form with the names of the .proto
(default values left out, 64-bit integers as strings, enums by name); the
canonical JSON of them has sorted keys, no whitespace and non-ASCII characters
as themselves. Nonces strictly increase per address: a signer uses the
microseconds since the epoch, and never the same one twice.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from coincurve import PrivateKey
from Crypto.Hash import keccak
from google.protobuf import json_format
from google.protobuf.message import Message

MESSAGE_PREFIX = "c2d:v1"
_EIP191_PREFIX = b"\x19Ethereum Signed Message:\n"

M = TypeVar("M", bound=Message)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, compact separators, UTF-8 characters as themselves, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def signed_fields(request: Message) -> dict[str, Any]:
    """What is signed of a request: its proto3 JSON form, .proto field names, without ``signature``."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "signature" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("signature")  # type: ignore[arg-type]
    return json_format.MessageToDict(copy, preserving_proto_field_name=True)


def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


def checksum_address(address: str) -> str:
    """An address in EIP-55 mixed case (what the provider answers with)."""
    body = address.lower().removeprefix("0x")
    if len(body) != 40 or any(c not in "0123456789abcdef" for c in body):
        raise ValueError(f"{address!r} is not an address: expected 0x followed by 40 hex digits")
    nibbles = keccak256(body.encode()).hex()
    return "0x" + "".join(c.upper() if int(n, 16) >= 8 else c for c, n in zip(body, nibbles[:40], strict=True))


def eip191_digest(text: str) -> bytes:
    """keccak256 of the EIP-191 personal message: prefix, the text's length in bytes, the text."""
    body = text.encode()
    return keccak256(_EIP191_PREFIX + str(len(body)).encode() + body)


def canonical_message(method: str, fields: Mapping[str, Any], nonce: int) -> str:
    """The text signed for ``method`` (the RPC's name, e.g. ``StartCompute``)."""
    return f"{MESSAGE_PREFIX}:{method}:{nonce}:{canonical_json(fields)}"


class Signer:
    """One Ethereum account (a secp256k1 key) that signs requests. Safe to share between threads."""

    def __init__(self, private_key: str) -> None:
        try:
            self._key = PrivateKey(bytes.fromhex(private_key.strip().removeprefix("0x")))
        except ValueError:
            raise ValueError("a private key is 32 bytes as hex (64 hex digits, 0x optional)") from None
        public = self._key.public_key.format(compressed=False)[1:]
        self.address: str = checksum_address("0x" + keccak256(public)[-20:].hex())
        self._lock = threading.Lock()
        self._last_nonce = 0

    @classmethod
    def generate(cls) -> Signer:
        """A signer with a fresh random key."""
        return cls(PrivateKey().secret.hex())

    @classmethod
    def load_or_create(cls, path: Path) -> Signer:
        """The signer whose key is in ``path`` (hex, one line); a new key written there (mode 0600) if none."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(cls.generate().private_key + "\n")
        return cls(path.read_text())

    @property
    def private_key(self) -> str:
        """The key as 0x-hex (a secret: write it only where its owner alone can read)."""
        return "0x" + self._key.secret.hex()

    def next_nonce(self) -> int:
        """Microseconds since the epoch, above every nonce this signer gave before."""
        with self._lock:
            self._last_nonce = max(self._last_nonce + 1, time.time_ns() // 1000)
            return self._last_nonce

    def sign_message(self, method: str, fields: Mapping[str, Any], nonce: int) -> str:
        """The 65-byte signature (0x-hex: r, s, then v = 27 or 28) of the canonical message."""
        signature = self._key.sign_recoverable(eip191_digest(canonical_message(method, fields, nonce)), hasher=None)
        return "0x" + (signature[:64] + bytes([signature[64] + 27])).hex()

    def sign(self, method: str, request: M, nonce: int | None = None) -> M:
        """Fills ``request.signature`` (address, a fresh nonce, the signature) and returns the request."""
        signature = request.signature  # type: ignore[attr-defined]
        signature.Clear()
        signature.address = self.address
        signature.nonce = self.next_nonce() if nonce is None else nonce
        signature.signature = self.sign_message(method, signed_fields(request), signature.nonce)
        return request
