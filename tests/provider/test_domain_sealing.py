"""Sealed file lists and Ed25519 manifest signatures."""

from __future__ import annotations

import json
from typing import Any

import pytest
from nacl.public import PublicKey, SealedBox

from services.provider.domain.errors import Refusal
from services.provider.domain.sealing import (
    CANNOT_OPEN,
    ProviderKeys,
    open_files,
    seal_files,
    sign_bytes,
    sign_manifest,
    verify_bytes,
    verify_manifest,
)

KEYS = ProviderKeys.from_hex("01" * 32, "02" * 32)
OTHER_KEYS = ProviderKeys.from_hex("03" * 32, "04" * 32)
FILES = [
    {"type": "url", "url": "https://data.example/weather.csv", "method": "GET"},
    {"type": "url", "url": "https://data.example/stations.csv", "headers": {"X-Key": "s3cr3t"}},
]


# --- sealing -------------------------------------------------------------------


def test_seal_then_open_round_trips() -> None:
    sealed = seal_files(KEYS.public_key_hex, FILES)
    assert sealed.startswith("0x")
    assert "weather" not in sealed and "s3cr3t" not in sealed
    assert open_files(KEYS, sealed) == FILES
    assert open_files(KEYS, sealed[2:]) == FILES  # the 0x prefix is optional


def test_sealing_is_randomised() -> None:
    # Anonymous sender, fresh ephemeral key: equal lists do not look equal.
    assert seal_files(KEYS.public_key_hex, FILES) != seal_files(KEYS.public_key_hex, FILES)


def _flip_last_byte(sealed: str) -> str:
    return sealed[:-2] + format(int(sealed[-2:], 16) ^ 1, "02x")


def _sealed_raw(plaintext: bytes) -> str:
    return "0x" + SealedBox(PublicKey(bytes.fromhex(KEYS.public_key_hex))).encrypt(plaintext).hex()


SEALED = seal_files(KEYS.public_key_hex, FILES)

UNOPENABLE = [
    ("sealed for another provider", seal_files(OTHER_KEYS.public_key_hex, FILES)),
    ("tampered", _flip_last_byte(SEALED)),
    ("truncated", SEALED[:40]),
    ("not hex", "0xnothex"),
    ("empty", ""),
    ("not a string", None),
    ("plaintext not JSON", _sealed_raw(b"not json")),
    ("plaintext not a list", _sealed_raw(b'{"url": "x"}')),
    ("plaintext empty list", _sealed_raw(b"[]")),
    ("plaintext list of non-objects", _sealed_raw(b'["https://x"]')),
]


@pytest.mark.parametrize("sealed", [c[1] for c in UNOPENABLE], ids=[c[0] for c in UNOPENABLE])
def test_open_files_refuses(sealed: Any) -> None:
    with pytest.raises(Refusal) as info:
        open_files(KEYS, sealed)
    assert (info.value.code, info.value.message) == ("ddo_invalid", CANNOT_OPEN)


@pytest.mark.parametrize(
    "files",
    [[], {"type": "url"}, ["https://x"], [{"size": float("nan")}], [{"blob": b"x"}], None],
    ids=["empty", "not a list", "not objects", "nan", "bytes", "none"],
)
def test_seal_files_refuses_what_is_not_a_file_list(files: Any) -> None:
    with pytest.raises(Refusal) as info:
        seal_files(KEYS.public_key_hex, files)
    assert info.value.code == "ddo_invalid"


@pytest.mark.parametrize("public_key", ["", "0x1234", "zz" * 32])
def test_seal_files_rejects_a_malformed_public_key(public_key: str) -> None:
    with pytest.raises(ValueError):
        seal_files(public_key, FILES)


# --- keys ----------------------------------------------------------------------


def test_keys_round_trip_through_the_key_file() -> None:
    keys = ProviderKeys.generate()
    text = keys.to_json()
    data = json.loads(text)
    assert data["version"] == 1
    assert data["box_public_key"] == keys.public_key_hex
    assert data["verify_key"] == keys.verify_key_hex
    assert ProviderKeys.from_json(text) == keys
    assert ProviderKeys.from_hex(keys.box_secret_key_hex, keys.signing_seed_hex) == keys


def test_generated_keys_differ_and_public_halves_are_distinct() -> None:
    a, b = ProviderKeys.generate(), ProviderKeys.generate()
    assert a != b
    assert a.public_key_hex != a.verify_key_hex


def test_repr_does_not_leak_secrets() -> None:
    text = repr(KEYS)
    assert KEYS.box_secret_key_hex not in text and KEYS.signing_seed_hex not in text
    assert KEYS.public_key_hex in text


def _key_file(**changes: Any) -> str:
    data = json.loads(KEYS.to_json())
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not None})


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        _key_file(version=2),
        _key_file(box_secret_key="00" * 31),
        _key_file(signing_seed="xyz"),
        _key_file(signing_seed=None),
        _key_file(box_public_key=OTHER_KEYS.public_key_hex),
        _key_file(verify_key=OTHER_KEYS.verify_key_hex),
    ],
    ids=[
        "not json",
        "not object",
        "version",
        "short secret",
        "bad hex",
        "missing seed",
        "box public mismatch",
        "verify key mismatch",
    ],
)
def test_malformed_key_files_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        ProviderKeys.from_json(text)


def test_key_file_without_public_halves_is_accepted() -> None:
    assert ProviderKeys.from_json(_key_file(box_public_key=None, verify_key=None)) == KEYS


# --- manifest signatures ---------------------------------------------------------

MANIFEST = {"jobId": "j-1", "files": [{"path": "outputs/result.json", "sha256": "ab" * 32, "size": 12}]}


def test_sign_then_verify_bytes() -> None:
    signature = sign_bytes(KEYS, b"manifest bytes")
    assert len(bytes.fromhex(signature)) == 64
    assert verify_bytes(KEYS.verify_key_hex, b"manifest bytes", signature) is True


GOOD_SIG = sign_bytes(KEYS, b"manifest bytes")

NOT_VERIFIED = [
    ("tampered data", KEYS.verify_key_hex, b"manifest bytez", GOOD_SIG),
    ("tampered signature", KEYS.verify_key_hex, b"manifest bytes", _flip_last_byte(GOOD_SIG)),
    ("another provider's key", OTHER_KEYS.verify_key_hex, b"manifest bytes", GOOD_SIG),
    ("signed by another provider", KEYS.verify_key_hex, b"manifest bytes", sign_bytes(OTHER_KEYS, b"manifest bytes")),
    ("short signature", KEYS.verify_key_hex, b"manifest bytes", GOOD_SIG[:-2]),
    ("non-hex signature", KEYS.verify_key_hex, b"manifest bytes", "zz" * 64),
]


@pytest.mark.parametrize("verify_key, data, signature", [c[1:] for c in NOT_VERIFIED], ids=[c[0] for c in NOT_VERIFIED])
def test_verify_bytes_detects_tampering(verify_key: str, data: bytes, signature: str) -> None:
    assert verify_bytes(verify_key, data, signature) is False


def test_verify_bytes_rejects_a_malformed_verify_key() -> None:
    with pytest.raises(ValueError):
        verify_bytes("1234", b"x", GOOD_SIG)


def test_manifest_signature_covers_content_not_key_order() -> None:
    signature = sign_manifest(KEYS, MANIFEST)
    reordered = {"files": MANIFEST["files"], "jobId": "j-1"}
    assert verify_manifest(KEYS.verify_key_hex, reordered, signature) is True
    tampered = {"jobId": "j-1", "files": [{**MANIFEST["files"][0], "size": 13}]}
    assert verify_manifest(KEYS.verify_key_hex, tampered, signature) is False
