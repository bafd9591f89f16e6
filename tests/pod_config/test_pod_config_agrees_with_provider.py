"""The provider and pod_config accept and refuse exactly the same DIDs and
filesChecksum pins: a pin the provider lets into a DDO is one pod_config can
verify, and one pod_config would refuse never gets past the provider.

Each spelling goes through the provider's real DDO validation and through a
real staging (the consumer's raw algorithm, written by pod_config's own
fetcher, so no network is needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from plumbing.assets import files_checksum
from plumbing.fetching import FileSource, RawFetcher
from services.pod_config.domain.staging import AssetToStage, StagingOutcome, StagingRequest, stage
from services.provider.domain.ddos import validate_ddo
from services.provider.domain.errors import Refusal
from tests.pod_config.helpers import DATASET_DID, ddo, limits, new_log
from tests.provider.domain_samples import ALGO_DID, dataset_ddo, mutated

CODE = "print('trusted')\n"
PIN = files_checksum([hashlib.sha256(CODE.encode()).hexdigest()])
DID_HEX = "0123456789abcdef" * 4

# (case, the pin as written in the DDO and passed on in the workflow, accepted)
PINS = [
    ("the pin as computed", PIN, True),
    ("no pin", "", True),
    # pod_config used to strip, lowercase and drop a "sha256:" prefix before comparing
    ("uppercase", PIN.upper(), False),
    ("leading space", " " + PIN, False),
    ("trailing newline", PIN + "\n", False),
    ("sha256: prefix", "sha256:" + PIN, False),
    ("0x prefix", "0x" + PIN, False),
    ("63 digits", PIN[:-1], False),
    ("65 digits", PIN + "0", False),
    ("not hex", "z" * 64, False),
]


def provider_accepts_pin(pin: str) -> bool:
    entry = {"did": ALGO_DID, "filesChecksum": pin, "containerSectionChecksum": "cd" * 32}
    path = ("services", 0, "compute", "publisherTrustedAlgorithms")
    try:
        service = validate_ddo(mutated(dataset_ddo(), path, [entry])).services[0]
    except Refusal as refusal:
        assert refusal.code == "ddo_invalid"
        assert "filesChecksum must be a sha256 digest, 64 lowercase hex digits" in refusal.message
        return False
    assert service.compute is not None
    # kept as written: what reaches pod_config is what the publisher wrote
    assert service.compute.publisher_trusted_algorithms[0].files_checksum == (pin or None)
    return True


async def staged(tmp_path: Path, request: StagingRequest) -> StagingOutcome:
    log, _ = new_log()
    return await stage(request, tmp_path / "data", limits(), {"raw": RawFetcher()}, log)


def request_with(dataset_did: str = DATASET_DID, pin: str = "") -> StagingRequest:
    dataset = AssetToStage(dataset_did, (FileSource(type="raw", content="a,b\n1,2\n"),), ddo(dataset_did))
    return StagingRequest(datasets=(dataset,), algorithm=None, raw_algorithm=CODE, algorithm_files_checksum=pin)


async def pod_config_accepts_pin(tmp_path: Path, pin: str) -> bool:
    outcome = await staged(tmp_path, request_with(pin=pin))
    if outcome.ok:
        assert (tmp_path / "data" / "transformations" / "algorithm").read_text() == CODE
        return True
    # refused before a byte was fetched, not found to differ after
    assert (outcome.status, outcome.error_code) == (32, "invalid_request"), outcome
    assert "filesChecksum is not a sha256 digest (64 lowercase hex digits)" in outcome.reason
    assert outcome.files == ()
    return False


@pytest.mark.parametrize("pin, accepted", [c[1:] for c in PINS], ids=[c[0] for c in PINS])
async def test_a_files_checksum_pin_is_accepted_by_both_or_by_neither(tmp_path: Path, pin: str, accepted: bool) -> None:
    assert provider_accepts_pin(pin) is accepted
    assert await pod_config_accepts_pin(tmp_path, pin) is accepted


async def test_a_well_formed_pin_of_other_files_is_a_mismatch_not_a_syntax_error(tmp_path: Path) -> None:
    other = files_checksum([hashlib.sha256(b"another algorithm").hexdigest()])
    assert provider_accepts_pin(other)
    outcome = await staged(tmp_path, request_with(pin=other))
    assert (outcome.status, outcome.error_code) == (32, "checksum_mismatch")


# (case, the dataset's DID, accepted)
DIDS = [
    ("a DID", "did:op:" + DID_HEX, True),
    ("uppercase hex", "did:op:" + DID_HEX.upper(), False),
    ("63 digits", "did:op:" + DID_HEX[:-1], False),
    ("65 digits", "did:op:" + DID_HEX + "0", False),
    ("another method", "did:ex:" + DID_HEX, False),
    ("bare identifier", DID_HEX, False),
    ("leading space", " did:op:" + DID_HEX, False),
    ("trailing newline", "did:op:" + DID_HEX + "\n", False),
    ("a path", "did:op:../../" + DID_HEX[:58], False),
]


def provider_accepts_did(did: str) -> bool:
    try:
        return validate_ddo(mutated(dataset_ddo(), ("id",), did)).id == did
    except Refusal as refusal:
        assert refusal.code == "ddo_invalid"
        assert "id must be did:op: followed by 64 lowercase hex digits" in refusal.message
        return False


async def pod_config_accepts_did(tmp_path: Path, did: str) -> bool:
    outcome = await staged(tmp_path, request_with(dataset_did=did))
    if outcome.ok:
        assert (tmp_path / "data" / "inputs" / did.removeprefix("did:op:") / "0").read_text() == "a,b\n1,2\n"
        return True
    assert outcome.status == 31 and outcome.error_code in ("invalid_did", "path_traversal"), outcome
    assert outcome.files == ()
    return False


@pytest.mark.parametrize("did, accepted", [c[1:] for c in DIDS], ids=[c[0] for c in DIDS])
async def test_a_did_is_accepted_by_both_or_by_neither(tmp_path: Path, did: str, accepted: bool) -> None:
    assert provider_accepts_did(did) is accepted
    assert await pod_config_accepts_did(tmp_path, did) is accepted
