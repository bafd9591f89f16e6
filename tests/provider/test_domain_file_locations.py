"""Which locations a sealed file list may name: a publisher's, or a results
location this provider issued (domain/file_locations.py), as values alone."""

from __future__ import annotations

from typing import Any

import pytest

from plumbing import errors
from services.provider.domain import ddos, file_locations, identity
from services.provider.domain.file_locations import ResultsStorage
from services.provider.domain.sealing import ProviderKeys

KEYS = ProviderKeys.from_hex("01" * 32, "02" * 32)
OTHER_KEYS = ProviderKeys.from_hex("03" * 32, "04" * 32)
OWNER = "0x" + "aa" * 20
STRANGER = "0x" + "bb" * 20
DID = ddos.derive_did(OWNER, "c2d-results:job-1")
S3_RESULTS = ResultsStorage("s3", "results")
LOCAL_RESULTS = ResultsStorage("local")
RESULT = {"url": "s3://results/job-1/outputs/result.json", "path": "result.json", "size": 12, "sha256": "ab" * 32}


@pytest.mark.parametrize(
    ("entry", "storage"),
    [
        ({"type": "url", "url": "https://data.example/weather.csv", "headers": {"X-Key": "s3cr3t"}}, S3_RESULTS),
        ({"type": "url", "url": "http://127.0.0.1:8080/weather.csv"}, S3_RESULTS),
        ({"type": "s3", "url": "s3://datasets/weather.csv"}, S3_RESULTS),
        ({"type": "s3", "url": "s3://results/weather.csv"}, LOCAL_RESULTS),  # not results storage here
        ({"type": "ipfs", "cid": "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"}, S3_RESULTS),
        ({"type": "raw", "content": "print('hi')"}, S3_RESULTS),
    ],
)
def test_a_publisher_may_name_what_pod_config_fetches(entry: dict[str, Any], storage: ResultsStorage) -> None:
    file_locations.check_publisher_file(entry, storage, "files[0]")


@pytest.mark.parametrize(
    ("entry", "kind", "code"),
    [
        (
            {"type": "results", "url": "local:job-1/outputs/result.json"},
            errors.PermissionDenied,
            "results_location_forged",
        ),
        (
            {"type": "url", "url": "local:job-1/outputs/result.json"},
            errors.PermissionDenied,
            "local_location_forbidden",
        ),
        ({"type": "s3", "url": "local:job-1/logs/algorithm.log"}, errors.PermissionDenied, "local_location_forbidden"),
        (
            {"type": "s3", "url": "s3://results/job-1/outputs/result.json"},
            errors.PermissionDenied,
            "results_storage_forbidden",
        ),
        ({"type": "url", "url": "file:///etc/shadow"}, errors.InvalidArgument, "file_url_invalid"),
        ({"type": "s3", "url": "s3://only-a-bucket"}, errors.InvalidArgument, "file_url_invalid"),
        ({"type": "url", "url": 7}, errors.InvalidArgument, "file_url_invalid"),
        ({"type": "local", "url": "job-1/outputs/result.json"}, errors.InvalidArgument, "file_type_invalid"),
        ({"url": "https://data.example/x"}, errors.InvalidArgument, "file_type_invalid"),
    ],
)
def test_a_publisher_may_not_name_results_storage_or_what_nothing_fetches(
    entry: dict[str, Any], kind: type[errors.ServiceError], code: str
) -> None:
    with pytest.raises(kind) as refused:
        file_locations.check_publisher_file(entry, S3_RESULTS, "services[0].files[2]")
    assert refused.value.code == code
    assert "services[0].files[2]" in refused.value.message


def test_a_results_location_the_provider_issued_opens_for_its_owner_and_asset_only() -> None:
    # any spelling of the owner's address is the same owner
    (issued,) = file_locations.issue_results_locations(
        KEYS, job_id="job-1", owner="0x" + OWNER[2:].upper(), did=DID, files=[RESULT]
    )
    opened = file_locations.open_results_location(KEYS, issued, owner=OWNER, did=DID, field="files[0]")
    assert opened == file_locations.ResultsLocation(job_id="job-1", url=RESULT["url"])
    assert file_locations.check_asset_files(KEYS, [issued], owner=OWNER, did=DID, results=S3_RESULTS, field="files")

    other_did = ddos.derive_did(STRANGER, "c2d-results:job-1")
    for owner, did in ((STRANGER, DID), (OWNER, other_did)):
        with pytest.raises(errors.PermissionDenied) as foreign:
            file_locations.open_results_location(KEYS, issued, owner=owner, did=did, field="files[0]")
        assert foreign.value.code == "results_location_foreign"


@pytest.mark.parametrize(
    "change",
    [
        {"url": "s3://results/job-2/outputs/result.json"},  # another job's file
        {"job_id": "job-2"},
        {"owner": identity.normalize_address(STRANGER)},
        {"signature": "00" * 64},
        {"signature": None},
        {"signature": 7},
    ],
)
def test_a_changed_or_unsigned_results_location_is_forged(change: dict[str, Any]) -> None:
    (issued,) = file_locations.issue_results_locations(KEYS, job_id="job-1", owner=OWNER, did=DID, files=[RESULT])
    tampered = {key: value for key, value in {**issued, **change}.items() if value is not None}
    with pytest.raises(errors.PermissionDenied) as forged:
        file_locations.open_results_location(KEYS, tampered, owner=OWNER, did=DID, field="files[0]")
    assert forged.value.code == "results_location_forged"


def test_only_this_providers_key_issues_results_locations() -> None:
    (elsewhere,) = file_locations.issue_results_locations(
        OTHER_KEYS, job_id="job-1", owner=OWNER, did=DID, files=[RESULT]
    )
    with pytest.raises(errors.PermissionDenied) as forged:
        file_locations.check_asset_files(KEYS, [elsewhere], owner=OWNER, did=DID, results=S3_RESULTS, field="files")
    assert forged.value.code == "results_location_forged"


def test_a_publishers_file_list_is_not_a_results_asset() -> None:
    files = [{"type": "url", "url": "https://data.example/weather.csv"}]
    assert not file_locations.check_asset_files(KEYS, files, owner=OWNER, did=DID, results=S3_RESULTS, field="files")


@pytest.mark.parametrize(
    ("storage", "location", "held"),
    [
        (ResultsStorage("local"), "local:job-1/outputs/x", True),
        (ResultsStorage("local"), "local:job-2/outputs/x", False),  # another job's
        (ResultsStorage("local"), "local:job-1/../job-2/outputs/x", False),
        (ResultsStorage("local"), "local:job-1", False),
        (ResultsStorage("local"), "s3://results/job-1/outputs/x", False),
        (ResultsStorage("s3", "results"), "s3://results/job-1/logs/algorithm.log", True),
        (ResultsStorage("s3", "results"), "s3://results/job-10/outputs/x", False),
        (ResultsStorage("s3", "results"), "s3://other/job-1/outputs/x", False),  # another bucket
        (ResultsStorage("s3", "results"), "s3://results/job-1//x", False),
        (ResultsStorage("s3", "results"), "local:job-1/outputs/x", False),
        (ResultsStorage("ipfs"), "ipfs://bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", True),
        (ResultsStorage("ipfs"), "local:job-1/outputs/x", False),
    ],
)
def test_a_jobs_results_are_held_only_under_its_own_prefix_of_this_storage(
    storage: ResultsStorage, location: str, held: bool
) -> None:
    assert storage.holds(location, "job-1") is held
