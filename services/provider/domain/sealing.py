"""The provider's keys: sealing file locations, signing result manifests.

File locations. A publisher seals a dataset's or algorithm's file list for
the provider with a NaCl sealed box (X25519 + XSalsa20-Poly1305, anonymous
sender) under the provider's Curve25519 public key. The DDO carries only the
sealed string, so nobody but this provider, not even the consumer who pays,
learns where the files are. The sealed form is ``0x`` + lowercase hex of the
box, like Ocean's encrypted ``files``; the plaintext is the canonical JSON
of the file list.

Manifests. The provider signs result manifests with an Ed25519 key so a
consumer can check that a manifest came from this provider unaltered.

``ProviderKeys`` holds both secrets; its JSON key-file form is::

    {"version": 1,
     "box_secret_key": <64 hex>, "box_public_key": <64 hex>,
     "signing_seed": <64 hex>, "verify_key": <64 hex>}

The public halves are written for operators' convenience and checked on
load. Reading and writing the file (mode 0600) is the caller's job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

from plumbing import untrusted

from .canonical import canonical_json_bytes
from .errors import DDO_INVALID, Refusal

KEY_FILE_VERSION = 1
_KEY_BYTES = 32

CANNOT_OPEN = "encrypted files cannot be opened by this provider"


def _hex32(value: object, what: str) -> bytes:
    """Decode 32 bytes of hex (``0x`` optional), or raise ValueError naming ``what``."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a hex string")
    text = value[2:] if value.startswith("0x") else value
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{what} must be hex") from None
    if len(raw) != _KEY_BYTES:
        raise ValueError(f"{what} must be {_KEY_BYTES} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class ProviderKeys:
    """The provider's Curve25519 box secret and Ed25519 signing seed (32 bytes each)."""

    box_secret_key: bytes
    signing_seed: bytes

    def __post_init__(self) -> None:
        for name in ("box_secret_key", "signing_seed"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != _KEY_BYTES:
                raise ValueError(f"{name} must be {_KEY_BYTES} bytes")

    def __repr__(self) -> str:
        # Never print secrets into logs.
        return f"ProviderKeys(public_key_hex={self.public_key_hex!r}, verify_key_hex={self.verify_key_hex!r})"

    @classmethod
    def generate(cls) -> ProviderKeys:
        """Fresh random keys."""
        return cls(bytes(PrivateKey.generate()), bytes(SigningKey.generate()))

    @classmethod
    def from_hex(cls, box_secret_key_hex: object, signing_seed_hex: object) -> ProviderKeys:
        """Keys from their hex secrets (raises ValueError on anything but 32 bytes of hex)."""
        return cls(
            _hex32(box_secret_key_hex, "box_secret_key"),
            _hex32(signing_seed_hex, "signing_seed"),
        )

    @property
    def box_secret_key_hex(self) -> str:
        return self.box_secret_key.hex()

    @property
    def signing_seed_hex(self) -> str:
        return self.signing_seed.hex()

    @property
    def public_key_hex(self) -> str:
        """The Curve25519 public key publishers seal file lists to."""
        return bytes(PrivateKey(self.box_secret_key).public_key).hex()

    @property
    def verify_key_hex(self) -> str:
        """The Ed25519 public key consumers check manifest signatures with."""
        return bytes(SigningKey(self.signing_seed).verify_key).hex()

    def to_json(self) -> str:
        """The key-file text (contains secrets)."""
        return json.dumps(
            {
                "version": KEY_FILE_VERSION,
                "box_secret_key": self.box_secret_key_hex,
                "box_public_key": self.public_key_hex,
                "signing_seed": self.signing_seed_hex,
                "verify_key": self.verify_key_hex,
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ProviderKeys:
        """Keys from key-file text; raises ValueError if it is malformed or inconsistent."""
        try:
            data = json.loads(text)  # noqa: TID251 - the operator's own key file
        except json.JSONDecodeError as exc:
            raise ValueError(f"provider key file is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("provider key file must be a JSON object")
        if data.get("version") != KEY_FILE_VERSION:
            raise ValueError(f"provider key file version must be {KEY_FILE_VERSION}")
        keys = cls.from_hex(data.get("box_secret_key"), data.get("signing_seed"))
        # A public key that does not match its secret means a hand-edited or
        # mixed-up file; refusing beats publishing the wrong key.
        if "box_public_key" in data and data["box_public_key"] != keys.public_key_hex:
            raise ValueError("provider key file: box_public_key does not match box_secret_key")
        if "verify_key" in data and data["verify_key"] != keys.verify_key_hex:
            raise ValueError("provider key file: verify_key does not match signing_seed")
        return keys


def seal_files(public_key_hex: str, files: list[dict[str, Any]]) -> str:
    """Seal a file list for the provider whose box public key is ``public_key_hex``.

    ``files`` must be a non-empty list of JSON objects (what each object
    holds, e.g. ``{"type": "url", "url": ...}``, is the fetchers' business).
    Refuses (ddo_invalid) anything else; raises ValueError for a malformed key.
    """
    if not isinstance(files, list) or not files:
        raise Refusal(DDO_INVALID, "files must be a non-empty list of file objects")
    for index, item in enumerate(files):
        if not isinstance(item, Mapping):
            raise Refusal(DDO_INVALID, f"files[{index}] must be an object")
    try:
        plaintext = canonical_json_bytes(files)
    except (TypeError, ValueError) as exc:
        raise Refusal(DDO_INVALID, f"files cannot be written as JSON: {exc}") from None
    box = SealedBox(PublicKey(_hex32(public_key_hex, "public_key")))
    return "0x" + box.encrypt(plaintext).hex()


def open_files(keys: ProviderKeys, sealed: str) -> list[dict[str, Any]]:
    """Open a sealed file list; refuse (ddo_invalid) if it was not sealed for these keys.

    Also refuses malformed hex, tampered boxes and plaintext that is not a
    non-empty list of objects: the message is the same for all, since the
    caller can do the same about each (re-seal with this provider's key).
    """
    if not isinstance(sealed, str):
        raise Refusal(DDO_INVALID, CANNOT_OPEN)
    text = sealed[2:] if sealed.startswith("0x") else sealed
    try:
        box = SealedBox(PrivateKey(keys.box_secret_key))
        plaintext = box.decrypt(bytes.fromhex(text))
        files = untrusted.parse_json(plaintext, "files")
    except (ValueError, CryptoError):
        # ValueError covers bad hex, bad UTF-8 and bad JSON.
        raise Refusal(DDO_INVALID, CANNOT_OPEN) from None
    if not isinstance(files, list) or not files or not all(isinstance(f, dict) for f in files):
        raise Refusal(DDO_INVALID, CANNOT_OPEN)
    return files


def sign_bytes(keys: ProviderKeys, data: bytes) -> str:
    """Ed25519-sign ``data``; return the 64-byte detached signature as hex."""
    return SigningKey(keys.signing_seed).sign(data).signature.hex()


def verify_bytes(verify_key_hex: str, data: bytes, signature_hex: str) -> bool:
    """True if ``signature_hex`` is the provider's Ed25519 signature of ``data``.

    False for a wrong, tampered or malformed signature; raises ValueError
    only for a malformed verify key (a configuration error, not a forgery).
    """
    verify_key = VerifyKey(_hex32(verify_key_hex, "verify_key"))
    try:
        signature = bytes.fromhex(signature_hex[2:] if signature_hex.startswith("0x") else signature_hex)
    except (ValueError, AttributeError):
        return False
    if len(signature) != 64:
        return False
    try:
        verify_key.verify(data, signature)
    except BadSignatureError:
        return False
    return True


def sign_manifest(keys: ProviderKeys, manifest: Mapping[str, Any]) -> str:
    """Sign a result manifest: ``sign_bytes`` over its canonical JSON."""
    return sign_bytes(keys, canonical_json_bytes(manifest))


def verify_manifest(verify_key_hex: str, manifest: Mapping[str, Any], signature_hex: str) -> bool:
    """Check a manifest signature made by ``sign_manifest``."""
    return verify_bytes(verify_key_hex, canonical_json_bytes(manifest), signature_hex)
