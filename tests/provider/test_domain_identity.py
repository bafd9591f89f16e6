"""EIP-191 request signing, nonces and addresses."""

from __future__ import annotations

from typing import Any

import pytest

from services.provider.domain.errors import Refusal
from services.provider.domain.identity import (
    canonical_message,
    is_address,
    normalize_address,
    recover_signer,
    sign_request,
    verify_request,
)

from .domain_samples import CONSUMER, CONSUMER_KEY, OTHER_KEY

FIELDS: dict[str, Any] = {
    "datasets": [{"did": "did:op:" + "1" * 64, "serviceId": "compute-1"}],
    "algorithm": {"did": "did:op:" + "a" * 64},
    "environment": "cpu-small",
    "allowNetwork": False,
}


# --- canonical message -----------------------------------------------------


def test_canonical_message_is_the_documented_format() -> None:
    fields = {"b": [3, 1, 2], "a": {"z": None, "y": True}, "é": "ü"}
    assert (
        canonical_message("StartCompute", fields, 7)
        == 'c2d:v1:StartCompute:7:{"a":{"y":true,"z":null},"b":[3,1,2],"é":"ü"}'
    )


def test_canonical_message_ignores_key_order() -> None:
    reordered = dict(reversed(list(FIELDS.items())))
    assert canonical_message("M", reordered, 1) == canonical_message("M", FIELDS, 1)


@pytest.mark.parametrize(
    "method, fields, error",
    [
        ("Start:Compute", {}, ValueError),  # ':' would make the message ambiguous
        ("", {}, ValueError),
        ("M", {1: "x"}, TypeError),  # 1 and "1" must not collide
        ("M", {"x": b"bytes"}, TypeError),
        ("M", {"x": float("nan")}, ValueError),
        ("M", ["not", "a", "mapping"], TypeError),
    ],
)
def test_canonical_message_rejects_programming_errors(method: str, fields: Any, error: type) -> None:
    with pytest.raises(error):
        canonical_message(method, fields, 1)


@pytest.mark.parametrize("nonce", [-1, True, 1.0, "1", None])
def test_canonical_message_refuses_bad_nonces(nonce: Any) -> None:
    with pytest.raises(Refusal) as info:
        canonical_message("M", {}, nonce)
    assert info.value.code == "nonce_invalid"


# --- signing round trip ------------------------------------------------------


def test_sign_then_recover_gives_the_signer() -> None:
    signature = sign_request(CONSUMER_KEY, "StartCompute", FIELDS, 5)
    assert signature.startswith("0x") and len(signature) == 132
    assert recover_signer("StartCompute", FIELDS, 5, signature) == CONSUMER


@pytest.mark.parametrize(
    "address, last_nonce",
    [
        (CONSUMER, None),  # first request from this address
        (CONSUMER, 4),
        (CONSUMER.lower(), 0),  # addresses compare case-insensitively
        (CONSUMER.upper().replace("0X", "0x"), 4),
    ],
)
def test_verify_request_accepts_a_fresh_signed_request(address: str, last_nonce: int | None) -> None:
    signature = sign_request(CONSUMER_KEY, "StartCompute", FIELDS, 5)
    verify_request(address, "StartCompute", FIELDS, 5, signature, last_nonce)


def _tampered_fields() -> dict[str, Any]:
    fields = dict(FIELDS)
    fields["allowNetwork"] = True
    return fields


GOOD = sign_request(CONSUMER_KEY, "StartCompute", FIELDS, 5)

# (case, method, fields, nonce, signature, last_nonce, code)
REFUSED = [
    ("tampered field", "StartCompute", _tampered_fields(), 5, GOOD, None, "signature_invalid"),
    ("other method", "StopCompute", FIELDS, 5, GOOD, None, "signature_invalid"),
    ("other nonce", "StartCompute", FIELDS, 6, GOOD, 5, "signature_invalid"),
    (
        "wrong key",
        "StartCompute",
        FIELDS,
        5,
        sign_request(OTHER_KEY, "StartCompute", FIELDS, 5),
        None,
        "signature_invalid",
    ),
    ("replayed nonce", "StartCompute", FIELDS, 5, GOOD, 5, "nonce_invalid"),
    ("older nonce", "StartCompute", FIELDS, 5, GOOD, 9, "nonce_invalid"),
    ("too short", "StartCompute", FIELDS, 5, GOOD[:-2], None, "signature_invalid"),
    ("not hex", "StartCompute", FIELDS, 5, "0x" + "zz" * 65, None, "signature_invalid"),
    ("empty", "StartCompute", FIELDS, 5, "", None, "signature_invalid"),
    ("bad v byte", "StartCompute", FIELDS, 5, GOOD[:-2] + "05", None, "signature_invalid"),
    ("zero r and s", "StartCompute", FIELDS, 5, "0x" + "00" * 64 + "1b", None, "signature_invalid"),
    ("negative nonce", "StartCompute", FIELDS, -1, GOOD, None, "nonce_invalid"),
]


@pytest.mark.parametrize(
    "method, fields, nonce, signature, last_nonce, code",
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_verify_request_refuses(
    method: str, fields: dict[str, Any], nonce: int, signature: str, last_nonce: int | None, code: str
) -> None:
    with pytest.raises(Refusal) as info:
        verify_request(CONSUMER, method, fields, nonce, signature, last_nonce)
    assert info.value.code == code
    assert info.value.message


def test_verify_request_refuses_a_malformed_address() -> None:
    with pytest.raises(Refusal) as info:
        verify_request("0x1234", "StartCompute", FIELDS, 5, GOOD, None)
    assert (info.value.code, info.value.kind) == ("address_invalid", "invalid_argument")


def test_bad_signature_is_reported_before_nonce_state() -> None:
    # A stranger must not learn another address's nonce from the error.
    other = sign_request(OTHER_KEY, "StartCompute", FIELDS, 1)
    with pytest.raises(Refusal) as info:
        verify_request(CONSUMER, "StartCompute", FIELDS, 1, other, 100)
    assert info.value.code == "signature_invalid"
    assert "100" not in info.value.message


# --- addresses -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (CONSUMER, True),
        (CONSUMER.lower(), True),
        ("0x" + CONSUMER[2:].upper(), True),
        ("0x" + CONSUMER[2:].swapcase(), False),  # mixed case with a wrong checksum
        (CONSUMER[2:], False),  # no 0x
        (CONSUMER + "00", False),
        ("0x" + "g" * 40, False),
        (b"\x00" * 20, False),
        (None, False),
    ],
)
def test_is_address(value: Any, expected: bool) -> None:
    assert is_address(value) is expected


def test_normalize_address_checksums() -> None:
    assert normalize_address(CONSUMER.lower()) == CONSUMER


@pytest.mark.parametrize("value", ["", "0x12", None, 42])
def test_normalize_address_refuses_non_addresses(value: Any) -> None:
    with pytest.raises(Refusal) as info:
        normalize_address(value)
    assert info.value.kind == "invalid_argument"
    assert "40 hex digits" in info.value.message


def test_signatures_are_recovered_with_libsecp256k1() -> None:
    # The pure-Python fallback of eth-keys takes ~35 ms per recovery: every
    # signed request would wait that long. coincurve is a declared dependency.
    from eth_keys.backends import CoinCurveECCBackend, get_backend

    assert isinstance(get_backend(), CoinCurveECCBackend)
