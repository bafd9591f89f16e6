"""The asset rules services share: DID syntax, the sha256 digest syntax, the files
and container checksums (whether the services apply them alike:
tests/pod_config/test_pod_config_agrees_with_provider.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from c2d.common.v1 import common_pb2
from plumbing import assets

DIGEST = hashlib.sha256(b"one").hexdigest()
ID = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "value, valid",
    [
        ("did:op:" + ID, True),
        ("did:op:" + "a" * 64, True),
        ("did:op:" + ID.upper(), False),  # lowercase only
        ("did:op:" + "a" * 63, False),
        ("did:op:" + "a" * 65, False),
        ("did:op:" + "g" * 64, False),
        ("did:ex:" + "a" * 64, False),
        ("DID:OP:" + "a" * 64, False),
        (ID, False),  # the bare identifier is not a DID
        (" did:op:" + ID, False),
        ("did:op:" + ID + "\n", False),
        ("did:op:../../" + "a" * 58, False),
        ("", False),
        (None, False),
        (b"did:op:" + ID.encode(), False),
    ],
)
def test_did_syntax(value: Any, valid: bool) -> None:
    assert assets.is_did(value) is valid
    if valid:
        assert assets.did_id(value) == value.removeprefix("did:op:")
    elif isinstance(value, str):
        with pytest.raises(ValueError, match="did:op: followed by 64 lowercase hex digits"):
            assets.did_id(value)


@pytest.mark.parametrize(
    "value, valid",
    [
        (DIGEST, True),
        ("0" * 64, True),
        (DIGEST.upper(), False),
        ("sha256:" + DIGEST, False),  # the prefix belongs to image digests only
        ("0x" + DIGEST, False),
        (" " + DIGEST, False),
        (DIGEST + "\n", False),
        (DIGEST[:-1], False),
        (DIGEST + "0", False),
        ("g" * 64, False),
        ("", False),
        (None, False),
        (int(DIGEST, 16), False),
    ],
)
def test_sha256_digest_syntax(value: Any, valid: bool) -> None:
    assert assets.is_sha256_hex(value) is valid


def test_files_checksum_is_sha256_of_the_concatenated_digests_in_index_order() -> None:
    first, second = DIGEST, hashlib.sha256(b"two").hexdigest()
    assert assets.files_checksum([first, second]) == hashlib.sha256((first + second).encode()).hexdigest()
    assert assets.files_checksum([second, first]) != assets.files_checksum([first, second])
    assert assets.files_checksum([]) == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    "digests", [["abc"], [None], ["g" * 64], [DIGEST.upper()], [" " + DIGEST], ["sha256:" + DIGEST], DIGEST]
)
def test_files_checksum_takes_only_digests_in_the_one_syntax(digests: Any) -> None:
    with pytest.raises(ValueError):
        assets.files_checksum(digests)


SECTION = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim", "checksum": "sha256:" + "c" * 64}


def test_container_checksum_is_sha256_of_the_canonical_section() -> None:
    text = '{"checksum":"sha256:' + "c" * 64 + '","entrypoint":"python $ALGO","image":"python","tag":"3.11-slim"}'
    expected = hashlib.sha256(text.encode()).hexdigest()
    assert assets.container_checksum(SECTION) == expected
    assert assets.container_checksum(dict(SECTION, comment="ignored")) == expected  # other keys do not count
    # the protobuf message the provider puts in a workflow hashes the same
    assert assets.container_checksum(common_pb2.AlgorithmContainer(**SECTION)) == expected


def test_container_checksum_writes_non_ascii_as_utf8() -> None:
    section = dict(SECTION, entrypoint="python $ALGO --city=Zürich")
    text = (
        '{"checksum":"sha256:' + "c" * 64 + '","entrypoint":"python $ALGO --city=Zürich",'
        '"image":"python","tag":"3.11-slim"}'
    )
    assert assets.container_checksum(section) == hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.mark.parametrize("field", ["entrypoint", "image", "tag", "checksum"])
def test_container_checksum_covers_every_field(field: str) -> None:
    changed = dict(SECTION, **{field: SECTION[field] + "x"})
    assert assets.container_checksum(changed) != assets.container_checksum(SECTION)


@pytest.mark.parametrize("field", ["entrypoint", "image", "tag", "checksum"])
def test_container_checksum_needs_all_four_strings(field: str) -> None:
    missing = {key: value for key, value in SECTION.items() if key != field}
    with pytest.raises(ValueError, match=field):
        assets.container_checksum(missing)
    with pytest.raises(ValueError, match=field):
        assets.container_checksum(dict(SECTION, **{field: 3}))
