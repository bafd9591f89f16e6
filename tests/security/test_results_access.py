"""Results access: reading another consumer's results.

The attack (issue 13, item 2): job ids were public (ListAssets, unsigned, named results assets "Results of
compute job <id>"), and sealing a file list needs only the provider's public
key. So an attacker (a second, real account) sealed a results location of
the victim's job, published it as their own asset and downloaded it: the
provider checked who owned the asset, not whom the location belonged to.

Each test here attacks the way an attacker would, over a real stack (real
jobs in bubblewrap, real gRPC, SeaweedFS S3, an IPFS node, PostgreSQL), by
every route to the same end: PublishAsset, UpdateAsset, an asset row stored
around those checks (DownloadAssetFile must refuse it anyway), and a
dataset that makes the attacker's own job stage the victim's results. An
attack that worked returns the victim's bytes, and the test fails showing
them.

The guarantee: results reach only their job's owner (and its viewers).
A results location is a capability only the provider issues, signed for
the job, its owner and the asset; a results-asset grant is good for one
job, one owner, while that job publishes; a job's results are served only
from that job's own place in the results storage.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import urllib.request
from typing import Any

import grpc
import pytest
import sqlalchemy

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import asset_pb2, provider_pb2
from cli import demo
from cli.client import Client
from plumbing import settings
from plumbing.database import Database, sqlite_url
from plumbing.grpc_errors import error_code, reason_of
from plumbing.statuses import Status
from services.provider.domain import results_grants, sealing
from services.provider.persistence import store
from services.provider.persistence.models import Asset, Base
from testkit.jobs import (
    Bench,
    bucket_keys,
    download_asset_file,
    job_bench,
    provider_keys,
    request_key,
    s3_env,
)

SECRET = b'{"diagnosis": "the victim\'s own"}\n'
VICTIM_ALGORITHM = f"""
import os
open(os.environ["OUTPUTS"] + "/result.json", "wb").write({SECRET!r})
"""
# The attacker's algorithm: whatever its dataset staged becomes its result.
COPY_INPUT = """
import json, os, shutil
did = json.loads(os.environ["DIDS"])[0]
shutil.copy(os.path.join(os.environ["INPUTS"], did, "0"), os.path.join(os.environ["OUTPUTS"], "copy.bin"))
"""
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED

Outcome = bytes | grpc.aio.AioRpcError  # what the attacker read, or how they were refused


def assert_refused(outcome: Outcome, status: grpc.StatusCode, reason: str) -> None:
    assert not isinstance(outcome, bytes), f"the attack read the victim's results: {outcome[:80]!r}"
    assert (outcome.code(), error_code(outcome)) == (status, reason_of(reason)), outcome.details()
    assert outcome.details()


async def attempt_download(client: Client, did: str, index: int) -> Outcome:
    """What DownloadAssetFile served `client`, or its refusal."""
    try:
        return (await download_asset_file(client, did, index))[1]
    except grpc.aio.AioRpcError as refusal:
        return refusal


async def victim_result(bench: Bench) -> tuple[common_pb2.Job, common_pb2.ResultFile]:
    """The victim (the bench's consumer) runs a job; its record and its result.json."""
    job = await bench.run(VICTIM_ALGORITHM)
    assert job.status == Status.FINISHED, job.error_message
    return job, next(f for f in job.results.files if f.path == "result.json")


async def sealed(client: Client, files: list[dict[str, Any]]) -> str:
    """What anyone can make: `files` sealed with the provider's public key."""
    info = await client.compute.GetProviderInfo(provider_pb2.GetProviderInfoRequest())
    return sealing.seal_files(info.encryption_public_key, files)


def asset_ddo(did: str, files: str, service: str = "results", compute: dict[str, Any] | None = None) -> dict[str, Any]:
    service_type = "compute" if compute is not None else "access"
    return {
        "version": "4.1.0",
        "metadata": {"type": "dataset", "name": "Nothing to see", "author": "attacker", "license": "CC0"},
        "services": [demo._service(service, service_type, files, did, compute)],
    }


async def encrypt_refusal(client: Client, entry: dict[str, str]) -> grpc.aio.AioRpcError:
    try:
        await client.encrypt([common_pb2.FileLocation(**entry)])
    except grpc.aio.AioRpcError as refusal:
        return refusal
    raise AssertionError(f"EncryptFiles sealed {entry}")


async def store_around_the_checks(database_url: str, owner: str, did: str, ddo: dict[str, Any]) -> None:
    """The asset row as PublishAsset would store it, written straight into the
    provider's database: a row stored before its checks existed, or past them."""
    db = Database(database_url or sqlite_url(settings.data_dir() / "provider.db"), Base.metadata)
    row = Asset(
        did=did,
        owner=owner,
        asset_type="dataset",
        name="Nothing to see",
        ddo_json=json.dumps({**ddo, "id": did, "nft": {"owner": owner}}, sort_keys=True),
        created_at=store.utcnow(),
    )
    try:
        await db.run(lambda s: store.create_asset(s, row))
    finally:
        db.close()


async def steal_by_download(bench: Bench, files: list[dict[str, Any]], database_url: str = "") -> dict[str, Outcome]:
    """The attack of issue 13 by each route to a results asset of the
    attacker's own: publish `files` (sealed with the public key), update an
    innocent asset to them, or store them around both checks; then download
    file 0. Per route: what it read, or its refusal."""
    attacker = bench.other
    forged = await sealed(attacker, files)
    innocent = await sealed(attacker, [{"type": "url", "url": f"{bench.base_url}/weather.csv"}])

    async def publish(did: str, salt: str) -> None:
        await attacker.publish(asset_ddo(did, forged), salt)

    async def update(did: str, salt: str) -> None:
        await attacker.publish(asset_ddo(did, innocent), salt)
        request = asset_pb2.UpdateAssetRequest(did=did, ddo_json=json.dumps(asset_ddo(did, forged)))
        await attacker.assets.UpdateAsset(attacker.signed("UpdateAsset", request))

    async def stored(did: str, salt: str) -> None:
        await store_around_the_checks(database_url, attacker.address, did, asset_ddo(did, forged))

    outcomes: dict[str, Outcome] = {}
    for route, make in {"PublishAsset": publish, "UpdateAsset": update, "stored": stored}.items():
        salt = f"{route}-{time.time_ns()}"
        did = attacker.did_for(salt)
        try:
            await make(did, salt)
        except grpc.aio.AioRpcError as refusal:
            outcomes[route] = refusal
        else:
            outcomes[route] = await attempt_download(attacker, did, 0)
    return outcomes


async def steal_by_staging(bench: Bench, files: list[dict[str, Any]], database_url: str = "") -> dict[str, Outcome]:
    """The same locations as a dataset of the attacker's own, which their own
    raw algorithm copies to its results: published, or stored around the
    publishing checks (StartCompute and pod_config must refuse it anyway)."""
    attacker = bench.other
    forged = await sealed(attacker, files)
    compute = {
        "allowRawAlgorithm": True,
        "allowNetworkAccess": False,
        "publisherTrustedAlgorithms": [],
        "publisherTrustedAlgorithmPublishers": [],
    }
    outcomes: dict[str, Outcome] = {}
    for route in ("PublishAsset", "stored"):
        salt = f"staged-{route}-{time.time_ns()}"
        did = attacker.did_for(salt)
        ddo = asset_ddo(did, forged, "compute", compute)
        try:
            if route == "PublishAsset":
                await attacker.publish(ddo, salt)
            else:
                await store_around_the_checks(database_url, attacker.address, did, ddo)
            token = await attacker.create_datatoken(did, "compute")
            await attacker.mint(token, attacker.address, 1)
            order = await attacker.order(did, "compute")
            job_id = await bench.start_on(did, order, COPY_INPUT, attacker)
            job = await bench.finished(job_id, attacker)
            copy = next((f for f in job.results.files if f.path == "copy.bin"), None)
            assert copy is not None, f"the attacker's job started, then ended {job.status}: {job.error_message}"
            outcomes[route] = (await attacker.result(job.job_id, copy.index))[1]
        except grpc.aio.AioRpcError as refusal:
            outcomes[route] = refusal
    return outcomes


# -- forged results locations, one per storage ---------------------------------------


async def test_a_forged_local_results_location_reads_nothing(data_dir):
    async with job_bench() as bench:
        victim_job, result = await victim_result(bench)
        # all the attacker needs: the victim's job id and where pod_publish puts results
        location = f"local:{victim_job.job_id}/outputs/result.json"
        assert result.location == location

        outcomes = await steal_by_download(bench, [{"type": "results", "url": location, "path": "result.json"}])
        for route in ("PublishAsset", "UpdateAsset", "stored"):
            assert_refused(outcomes[route], PERMISSION_DENIED, "results_location_forged")

        # and no publisher's file names local storage, whatever its type
        for forged in ({"type": "url", "url": location}, {"type": "s3", "url": location}):
            outcome = (await steal_by_download(bench, [forged]))["PublishAsset"]
            assert_refused(outcome, PERMISSION_DENIED, "local_location_forbidden")
            refused = await encrypt_refusal(bench.other, forged)
            assert (refused.code(), error_code(refused)) == (PERMISSION_DENIED, reason_of("local_location_forbidden"))
        # the victim still reads their own
        assert (await bench.consumer.result(victim_job.job_id, result.index))[1] == SECRET


async def test_a_forged_s3_results_location_reads_nothing(data_dir, postgres_url, seaweedfs, monkeypatch):
    s3_env(monkeypatch, seaweedfs, seaweedfs.make_bucket("results"))
    async with job_bench(postgres_url) as bench:
        _, result = await victim_result(bench)
        assert result.location.startswith("s3://")

        forged = {"type": "results", "url": result.location, "path": "result.json"}
        outcomes = await steal_by_download(bench, [forged], postgres_url)
        for route in ("PublishAsset", "UpdateAsset", "stored"):
            assert_refused(outcomes[route], PERMISSION_DENIED, "results_location_forged")

        # the same key as a dataset's S3 file, which pod_config would fetch with the engine's credentials
        staged = await steal_by_staging(bench, [{"type": "s3", "url": result.location}], postgres_url)
        for route in ("PublishAsset", "stored"):  # stored: StartCompute refuses it
            assert_refused(staged[route], PERMISSION_DENIED, "results_storage_forbidden")


async def test_a_forged_ipfs_results_location_reads_nothing(data_dir, ipfs_rpc, monkeypatch):
    monkeypatch.setenv("C2D_STORAGE_KIND", "ipfs")
    monkeypatch.setenv("C2D_STORAGE_IPFS_API", ipfs_rpc)
    async with job_bench() as bench:
        _, result = await victim_result(bench)
        # a CID is the content's hash: known to anyone who can guess the content
        assert result.location.startswith("ipfs://")

        outcomes = await steal_by_download(bench, [{"type": "results", "url": result.location, "path": "result.json"}])
        for route in ("PublishAsset", "UpdateAsset", "stored"):
            assert_refused(outcomes[route], PERMISSION_DENIED, "results_location_forged")


async def test_a_real_grant_for_one_job_does_not_read_another_jobs_results(data_dir, ipfs_rpc, monkeypatch):
    """The attacker's own job A holds a real grant; on IPFS a location has no
    job prefix, so A's grant registers an asset naming the victim's job B's
    CID. DownloadAssetFile serves only what A's own record lists."""
    monkeypatch.setenv("C2D_STORAGE_KIND", "ipfs")
    monkeypatch.setenv("C2D_STORAGE_IPFS_API", ipfs_rpc)
    async with job_bench() as bench:
        _, victims = await victim_result(bench)
        attacker = bench.other
        own = "import os, time\ntime.sleep(10)\nopen(os.environ['OUTPUTS'] + '/own.txt', 'w').write('mine')\n"
        job_a, order_a = await bench.start(own, consumer=attacker, publish_results_as_asset=True)
        # the provider's own grant for job A: the one A's workflow carries (same key, same claims)
        grant = results_grants.mint_grant(provider_keys(), attacker.address, request_key(order_a))
        manifest = common_pb2.ResultsManifest(files=[victims])
        registered = await attacker.assets.RegisterResultsAsset(
            asset_pb2.RegisterResultsAssetRequest(job_id=job_a, grant=grant, results=manifest)
        )
        finished = await bench.finished(job_a, attacker)
        assert finished.status == Status.FINISHED, finished.error_message
        assert finished.results_did == registered.did  # A's pod_publish found its asset registered

        outcome = await attempt_download(attacker, registered.did, 0)
        assert_refused(outcome, PERMISSION_DENIED, "results_location_foreign")


# -- what a stranger sees of a results asset -------------------------------------------


async def test_a_stranger_learns_nothing_about_a_job_from_assets(data_dir):
    async with job_bench() as bench:
        viewer, stranger = bench.publisher, bench.other
        job_id, _ = await bench.start(VICTIM_ALGORITHM, publish_results_as_asset=True, viewers=[viewer.address])
        job = await bench.finished(job_id)
        assert job.status == Status.FINISHED, job.error_message
        did = job.results_did
        # the inputs are public assets; that this job used them is not
        secrets_of_the_job = [job_id, *job.dataset_dids, *(f.location for f in job.results.files)]

        for request in (
            asset_pb2.ListAssetsRequest(),
            asset_pb2.ListAssetsRequest(owner=bench.consumer.address),
            asset_pb2.ListAssetsRequest(type="dataset", owner=bench.consumer.address),
        ):
            listed = await stranger.assets.ListAssets(request)
            assert did not in {a.did for a in listed.assets}
            assert job_id not in str(listed)

        # whoever holds the DID (only the job's record tells it) sees no job id, input or location
        resolved = await stranger.assets.GetAsset(asset_pb2.GetAssetRequest(did=did))
        for secret in secrets_of_the_job:
            assert secret not in resolved.ddo_json, secret
        assert json.loads(resolved.ddo_json)["metadata"]["name"] == "Compute job results"

        # the job's owner and its viewers download the files; nobody else does
        index = next(f.index for f in job.results.files if f.path == "result.json")
        for reader in (bench.consumer, viewer):
            assert (await download_asset_file(reader, did, index))[1] == SECRET
        assert_refused(await attempt_download(stranger, did, index), PERMISSION_DENIED, "not_owner")

        # once the owner deletes the job, its results asset serves nothing either
        await bench.consumer.compute.DeleteCompute(
            bench.consumer.signed("DeleteCompute", provider_pb2.DeleteComputeRequest(job_id=job_id))
        )
        for reader, status, reason in (
            (bench.consumer, grpc.StatusCode.FAILED_PRECONDITION, "results_expired"),
            (stranger, PERMISSION_DENIED, "not_owner"),
        ):
            assert_refused(await attempt_download(reader, did, index), status, reason)


# -- results-asset grants ----------------------------------------------------------------


async def test_register_results_asset_refuses_forged_and_foreign_grants(data_dir):
    async with job_bench() as bench:
        job_id, order_id = await bench.start("import time; time.sleep(60)\n", publish_results_as_asset=True)
        keys = provider_keys()
        register = bench.other.assets.RegisterResultsAsset
        manifest = common_pb2.ResultsManifest(
            files=[common_pb2.ResultFile(index=0, path="x", size=1, location="local:elsewhere/x")]
        )

        cases = {
            "not a grant": ("garbage", grpc.StatusCode.UNAUTHENTICATED, "grant_invalid"),
            "signed by another key": (
                results_grants.mint_grant(
                    sealing.ProviderKeys.generate(), bench.consumer.address, request_key(order_id)
                ),
                grpc.StatusCode.UNAUTHENTICATED,
                "grant_invalid",
            ),
            "another job's request": (
                results_grants.mint_grant(keys, bench.consumer.address, request_key("0xother")),
                grpc.StatusCode.PERMISSION_DENIED,
                "grant_wrong_job",
            ),
            "another owner": (
                results_grants.mint_grant(keys, bench.other.address, request_key(order_id)),
                grpc.StatusCode.PERMISSION_DENIED,
                "grant_wrong_job",
            ),
            "expired": (
                results_grants.mint_grant(keys, bench.consumer.address, request_key(order_id), now=0),
                grpc.StatusCode.PERMISSION_DENIED,
                "grant_expired",
            ),
            # the real grant, but locations outside the job's own results
            "foreign location": (
                results_grants.mint_grant(keys, bench.consumer.address, request_key(order_id)),
                grpc.StatusCode.PERMISSION_DENIED,
                "location_foreign",
            ),
        }
        for name, (grant, code, reason) in cases.items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await register(asset_pb2.RegisterResultsAssetRequest(job_id=job_id, grant=grant, results=manifest))
            assert (refused.value.code(), error_code(refused.value)) == (code, reason_of(reason)), name
            assert refused.value.details(), name
        tampered = grant[:-4] + ("0000" if not grant.endswith("0000") else "1111")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await register(asset_pb2.RegisterResultsAssetRequest(job_id=job_id, grant=tampered, results=manifest))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        listed = await bench.consumer.assets.ListAssets(asset_pb2.ListAssetsRequest(owner=bench.consumer.address))
        assert listed.assets == []

        # an ordinary dataset's files are never streamed, not even to its publisher
        dataset = await bench.dataset()
        with pytest.raises(grpc.aio.AioRpcError) as not_results:
            await download_asset_file(bench.publisher, dataset, 0, service_id="compute")
        assert not_results.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_code(not_results.value) == "NOT_RESULTS_ASSET"
        await bench.consumer.compute.StopCompute(
            bench.consumer.signed("StopCompute", provider_pb2.StopComputeRequest(job_id=job_id))
        )


# -- a job's record naming someone else's results ------------------------------------


def forge_record(database_url: str, job_id: str, locations: list[str]) -> None:
    """Rewrites the job's results in the operator-service's table to list
    `locations` as its files 0, 1, ..., as a ReportResults with the job's own
    pod token would have recorded them (pod_publish holds that token; so
    would whoever took it from a pod)."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.begin() as conn:
            results = conn.execute(sqlalchemy.text("SELECT results FROM jobs WHERE job_id = :j"), {"j": job_id}).one()[
                0
            ]
            results["files"] = [
                {"index": i, "path": f"file-{i}", "location": location, "size": str(len(SECRET))}
                for i, location in enumerate(locations)
            ]
            conn.execute(
                sqlalchemy.text("UPDATE jobs SET results = CAST(:r AS json) WHERE job_id = :j"),
                {"r": json.dumps(results), "j": job_id},
            )
    finally:
        engine.dispose()


async def steal_through_own_record(attacker: Client, job_id: str, index: int, links: bool) -> dict[str, Outcome]:
    """What GetComputeResult streamed, and what the GetComputeResultLink's URL
    read (`links`: storage that has links), for the attacker's own job's file
    `index`; or the refusals."""
    outcomes: dict[str, Outcome] = {}
    try:
        outcomes["GetComputeResult"] = (await attacker.result(job_id, index))[1]
    except grpc.aio.AioRpcError as refusal:
        outcomes["GetComputeResult"] = refusal
    if not links:
        return outcomes
    try:
        link = await attacker.result_link(job_id, index)
    except grpc.aio.AioRpcError as refusal:
        outcomes["GetComputeResultLink"] = refusal
    else:
        with urllib.request.urlopen(link.url, timeout=30) as response:
            outcomes["GetComputeResultLink"] = response.read()
    return outcomes


@pytest.mark.parametrize("kind", ["local", "s3"])
async def test_a_record_naming_another_jobs_results_serves_and_deletes_nothing(
    data_dir, postgres_url, monkeypatch, request, kind
):
    """GetComputeResult streams, GetComputeResultLink signs a URL for, and
    DeleteCompute removes what the job's record lists. The attacker's own
    job's record is made to name the victim's result.json (same storage,
    another job's prefix; then a `..` out of its own), and on S3 an object of
    another bucket the provider's credentials reach: the provider serves and
    links, and the operator-service deletes, only what lies under that job's
    own prefix in its results storage (as DownloadAssetFile and
    RegisterResultsAsset already checked)."""
    if kind == "s3":
        seaweedfs = request.getfixturevalue("seaweedfs")
        elsewhere = seaweedfs.make_bucket("elsewhere")  # e.g. another service's bucket, same credentials
        seaweedfs.client().put_object(elsewhere, "secret.json", io.BytesIO(SECRET), len(SECRET))
        s3_env(monkeypatch, seaweedfs, seaweedfs.make_bucket("results"))
    async with job_bench(postgres_url) as bench:
        victim_job, victims = await victim_result(bench)
        attacker = bench.other
        job_id, _ = await bench.start("print('mine')\n", consumer=attacker)
        own = await bench.finished(job_id, attacker)
        assert own.status == Status.FINISHED, own.error_message
        prefix = "local:" if kind == "local" else victims.location.rsplit(victim_job.job_id, 1)[0]
        forged = [victims.location, f"{prefix}{job_id}/../{victim_job.job_id}/outputs/result.json"]
        if kind == "s3":
            forged.append(f"s3://{elsewhere}/secret.json")
        for location in forged:
            await asyncio.to_thread(forge_record, postgres_url, job_id, [location])
            outcomes = await steal_through_own_record(attacker, job_id, 0, links=kind == "s3")
            read = {rpc: outcome for rpc, outcome in outcomes.items() if isinstance(outcome, bytes)}
            assert not read, f"{location}: the attack read {read}"
            for outcome in outcomes.values():
                assert_refused(outcome, PERMISSION_DENIED, "results_location_foreign")

        # deleting the attacker's job deletes none of what its record names
        # (the `..` one aside: the store refuses that key itself)
        await asyncio.to_thread(forge_record, postgres_url, job_id, [forged[0], *forged[2:]])
        await attacker.delete(job_id)
        assert (await bench.consumer.result(victim_job.job_id, victims.index))[1] == SECRET
        if kind == "s3":
            assert bucket_keys(seaweedfs, elsewhere) == {"secret.json"}
