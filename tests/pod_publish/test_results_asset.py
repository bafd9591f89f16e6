"""Results as a new asset: pod_publish registers the job's results as a
dataset owned by the consumer, through the provider's AssetService, with the
provider's single-job grant; only the owner may download its files. Forged and
foreign grants: tests/security/test_results_access.py."""

from __future__ import annotations

import hashlib
import json

import grpc
import pytest

from c2d.provider.v1 import asset_pb2
from plumbing.grpc_errors import error_code
from plumbing.statuses import Status
from services.provider.domain import ddos, results_grants
from testkit.jobs import download_asset_file, job_bench, provider_keys, request_key, s3_env

ALGORITHM = r"""
import os
out = os.environ["OUTPUTS"]
os.makedirs(out + "/tables")
open(out + "/tables/mean.csv", "w").write("city,mean\nOslo,4.5\n")
# the registration grant is for pod_publish only: nothing the algorithm sees holds it
marker = "c2d" + "grant1"  # spelled apart: this code itself is in /data/transformations
seen = any(marker in v for v in os.environ.values())
for root, _, files in os.walk(os.environ["VOLUME"]):
    for name in files:
        try:
            seen = seen or marker.encode() in open(os.path.join(root, name), "rb").read()
        except OSError:
            pass
print("grant seen" if seen else "grant not seen")
"""


async def test_results_asset_is_owned_by_the_consumer_and_downloadable_by_its_owner_only(
    data_dir, postgres_url, seaweedfs, monkeypatch
):
    bucket = seaweedfs.make_bucket("asset")
    s3_env(monkeypatch, seaweedfs, bucket)
    async with job_bench(postgres_url) as bench:
        job_id, order_id = await bench.start(ALGORITHM, publish_results_as_asset=True)
        job = await bench.finished(job_id)
        assert job.status == Status.FINISHED, job.error_message
        did = job.results_did
        assert ddos.is_did(did)
        assert {f.path for f in job.results.files} == {"tables/mean.csv", "algorithm.log"}

        # whoever holds the DID may resolve it: the consumer's dataset, with no location and
        # nothing about the job; no listing shows it (tests/security/test_results_access.py)
        resolved = await bench.other.assets.GetAsset(asset_pb2.GetAssetRequest(did=did))
        assert resolved.owner == bench.consumer.address
        ddo = json.loads(resolved.ddo_json)
        assert ddo["id"] == did and ddo["metadata"]["type"] == "dataset"
        assert [s["type"] for s in ddo["services"]] == ["access"]
        assert ddo["services"][0]["files"].startswith("0x")
        assert "s3://" not in resolved.ddo_json and bucket not in resolved.ddo_json and job_id not in resolved.ddo_json
        listed = await bench.consumer.assets.ListAssets(asset_pb2.ListAssetsRequest(owner=bench.consumer.address))
        assert did not in {a.did for a in listed.assets}

        # the owner downloads every file, whole or from an offset; the bytes are the job's results
        for result in job.results.files:
            entry, body = await download_asset_file(bench.consumer, did, result.index)
            assert (entry.path, entry.size, entry.sha256) == (result.path, result.size, result.sha256)
            assert entry.location == ""
            assert hashlib.sha256(body).hexdigest() == result.sha256
        log = next(f for f in job.results.files if f.path == "algorithm.log")
        assert (await download_asset_file(bench.consumer, did, log.index))[1] == b"grant not seen\n"
        csv = next(f for f in job.results.files if f.path == "tables/mean.csv")
        assert (await download_asset_file(bench.consumer, did, csv.index, offset=5))[1] == b"mean\nOslo,4.5\n"

        # anyone else is refused, whatever they ask for
        for index in (0, 5):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await download_asset_file(bench.other, did, index)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert error_code(refused.value) == "NOT_OWNER"
        with pytest.raises(grpc.aio.AioRpcError) as unsigned:
            async for _ in bench.other.assets.DownloadAssetFile(asset_pb2.DownloadAssetFileRequest(did=did)):
                pass
        assert unsigned.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await download_asset_file(bench.consumer, did, 7)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

        # the grant of a finished job registers nothing any more
        grant = results_grants.mint_grant(provider_keys(), bench.consumer.address, request_key(order_id))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await bench.consumer.assets.RegisterResultsAsset(
                asset_pb2.RegisterResultsAssetRequest(job_id=job_id, grant=grant, results=job.results)
            )
        assert ended.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_code(ended.value) == "JOB_ENDED"
