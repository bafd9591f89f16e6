"""A file's checksum, sealed by the provider's EncryptFiles and verified by
pod_config: both take exactly the same spellings (plumbing/assets.py), so a
publisher learns of a bad one when sealing, not from every job that fails."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc

from c2d.common.v1 import common_pb2
from plumbing.fetching import FileSource, RawFetcher
from plumbing.grpc_errors import bad_request_fields
from services.pod_config.domain.staging import AssetToStage, StagingRequest, stage
from testkit.market import Market, assert_refusal
from tests.pod_config.helpers import DATASET_DID, ddo, limits, new_log

CONTENT = "city,temperature\nOslo,4.5\n"
DIGEST = hashlib.sha256(CONTENT.encode()).hexdigest()

# (the checksum as the publisher writes it, accepted)
SPELLINGS = [
    (DIGEST, True),
    ("", True),  # no checksum: the file is not verified
    (DIGEST.upper(), False),
    ("sha256:" + DIGEST, False),
    (" " + DIGEST, False),
    (DIGEST + "\n", False),
    (DIGEST[:-1], False),
    ("z" * 64, False),
]


async def provider_seals(market: Market, checksum: str) -> bool:
    """True when EncryptFiles seals the file; a refusal must name the field and the syntax."""
    location = common_pb2.FileLocation(type="raw", content=CONTENT, checksum=checksum)
    try:
        sealed = await market.publisher.encrypt([location])
    except grpc.aio.AioRpcError as error:
        assert_refusal(error, grpc.StatusCode.INVALID_ARGUMENT, "file_checksum_invalid", "64 lowercase hex digits")
        assert bad_request_fields(error) == ["files[0].checksum"]
        return False
    assert sealed.startswith("0x")
    return True


async def pod_config_stages(tmp_path: Path, checksum: str) -> bool:
    source = FileSource(type="raw", content=CONTENT, checksum=checksum)
    request = StagingRequest(
        datasets=(AssetToStage(DATASET_DID, (source,), ddo(DATASET_DID)),), algorithm=None, raw_algorithm="print(1)\n"
    )
    log, _ = new_log()
    outcome = await stage(request, tmp_path, limits(), {"raw": RawFetcher()}, log)
    if outcome.ok:
        return True
    assert (outcome.status, outcome.error_code) == (31, "invalid_source"), outcome
    assert "checksum is not a sha256 digest (64 lowercase hex digits)" in outcome.reason
    return False


async def test_a_file_checksum_is_sealed_by_the_provider_exactly_when_pod_config_takes_it(
    market: Market, tmp_path: Path
):
    for index, (checksum, accepted) in enumerate(SPELLINGS):
        assert await provider_seals(market, checksum) is accepted, checksum
        assert await pod_config_stages(tmp_path / str(index), checksum) is accepted, checksum
