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

from eth_account import Account
from eth_account.messages import encode_defunct
from google.protobuf import json_format
from google.protobuf.message import Message

MESSAGE_PREFIX = "c2d:v1"

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


def canonical_message(method: str, fields: Mapping[str, Any], nonce: int) -> str:
    """The text signed for ``method`` (the RPC's name, e.g. ``StartCompute``)."""
    return f"{MESSAGE_PREFIX}:{method}:{nonce}:{canonical_json(fields)}"


class Signer:
    """One Ethereum account that signs requests. Safe to share between threads."""

    def __init__(self, private_key: str) -> None:
        self._account = Account.from_key(private_key)
        self.address: str = self._account.address
        self._lock = threading.Lock()
        self._last_nonce = 0

    @classmethod
    def generate(cls) -> Signer:
        """A signer with a fresh random key."""
        return cls(Account.create().key.hex())

    @classmethod
    def load_or_create(cls, path: Path) -> Signer:
        """The signer whose key is in ``path`` (hex, one line); a new key written there (mode 0600) if none."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(Account.create().key.hex() + "\n")
        return cls(path.read_text().strip())

    @property
    def private_key(self) -> str:
        """The key as 0x-hex (a secret: write it only where its owner alone can read)."""
        return "0x" + bytes(self._account.key).hex()

    def next_nonce(self) -> int:
        """Microseconds since the epoch, above every nonce this signer gave before."""
        with self._lock:
            self._last_nonce = max(self._last_nonce + 1, time.time_ns() // 1000)
            return self._last_nonce

    def sign_message(self, method: str, fields: Mapping[str, Any], nonce: int) -> str:
        """The 65-byte signature (0x-hex, r‖s‖v with v 27 or 28) of the canonical message."""
        signed = self._account.sign_message(encode_defunct(text=canonical_message(method, fields, nonce)))
        return "0x" + bytes(signed.signature).hex()

    def sign(self, method: str, request: M, nonce: int | None = None) -> M:
        """Fills ``request.signature`` (address, a fresh nonce, the signature) and returns the request."""
        signature = request.signature  # type: ignore[attr-defined]
        signature.Clear()
        signature.address = self.address
        signature.nonce = self.next_nonce() if nonce is None else nonce
        signature.signature = self.sign_message(method, signed_fields(request), signature.nonce)
        return request
