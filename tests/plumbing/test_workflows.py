"""What of a workflow is kept at rest: `redacted` drops the publisher's
locations and headers and the provider's grant, and keeps what the job's
record shows (DIDs, DDOs, checksums, the container, the consumer's inputs)."""

from __future__ import annotations

import pytest

from c2d.common.v1 import common_pb2
from plumbing.workflows import EVERY_SECRET, Secret, redacted

SECRET_VALUES = ("vault/data.csv?sig=s3cr3t", "Bearer t0ken", "bafySECRETcid", "ALGO-SOURCE", "c2dgrant1.abc.def")


def full() -> common_pb2.Workflow:
    location = common_pb2.FileLocation(
        type="url", url="https://files.example/vault/data.csv?sig=s3cr3t", headers={"Authorization": "Bearer t0ken"}
    )
    location.checksum = "aa" * 32
    return common_pb2.Workflow(
        datasets=[
            common_pb2.WorkflowAsset(did="did:op:" + "1" * 64, files=[location], ddo_json='{"id": "d"}'),
            common_pb2.WorkflowAsset(
                did="did:op:" + "2" * 64, files=[common_pb2.FileLocation(type="ipfs", cid="bafySECRETcid")]
            ),
        ],
        algorithm=common_pb2.WorkflowAsset(
            did="did:op:" + "3" * 64, files=[common_pb2.FileLocation(type="raw", content="ALGO-SOURCE", checksum="bb")]
        ),
        container=common_pb2.AlgorithmContainer(entrypoint="python3 $ALGO", image="python", tag="3.11"),
        algorithm_files_checksum="cc",
        algo_custom_data_json='{"n": 1}',
        publish_results_as_asset=True,
        owner="0xowner",
        results_asset_grant="c2dgrant1.abc.def",
        provider_address="127.0.0.1:50051",
        trace_parent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    )


def test_keeping_every_secret_is_the_workflow_unchanged():
    raw = full().SerializeToString(deterministic=True)
    assert redacted(raw, EVERY_SECRET) is raw


def test_without_secrets_only_the_record_stays():
    raw = redacted(full().SerializeToString(deterministic=True), frozenset())
    for value in SECRET_VALUES:
        assert value.encode() not in raw
    kept = common_pb2.Workflow.FromString(raw)
    expected = full()
    expected.ClearField("results_asset_grant")
    for asset in [*expected.datasets, expected.algorithm]:
        for location in asset.files:
            location.url, location.cid, location.content = "", "", ""
            location.headers.clear()
    assert kept == expected
    assert [f.type for f in kept.datasets[0].files] == ["url"] and kept.datasets[0].files[0].checksum == "aa" * 32


@pytest.mark.parametrize(
    ("keep", "left"),
    [
        (frozenset({Secret.GRANT}), {"c2dgrant1.abc.def"}),
        (frozenset({Secret.LOCATIONS}), set(SECRET_VALUES) - {"c2dgrant1.abc.def"}),
    ],
)
def test_each_secret_is_kept_only_when_asked_for(keep, left):
    raw = redacted(full().SerializeToString(deterministic=True), keep)
    assert {value for value in SECRET_VALUES if value.encode() in raw} == left
