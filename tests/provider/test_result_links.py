"""GetComputeResultLink: a short-lived link to one result file straight from
its storage, for the job's owner only (issue 18, "Direct download").

Over a real stack (jobs in bubblewrap, real gRPC) on real SeaweedFS S3,
which checks presigned signatures and expiry, and a real IPFS node with a
path gateway. The attacks are what a consumer who is not the owner, or the
owner with a link in hand, would try: ask for someone else's result, edit
the link to read another key, use it after it expired. A tampered object is
caught by the SDK and the CLI against the provider-signed manifest.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

import grpc
import pytest

from c2d.provider.v1 import provider_pb2
from c2d_sdk import errors as sdk_errors
from c2d_sdk import results as sdk_results
from cli.client import Client
from cli.main import EXIT_FAILED
from plumbing import storage
from plumbing.statuses import Status
from services.provider.domain import sealing
from testkit.jobs import CONSUMER_KEY, bucket_keys, job_bench, s3_env
from testkit.market import assert_refusal, refused
from testkit.servers import free_ports
from tests.observability.scraping import rpcs, scrape

PROVIDER = "c2d.provider.v1.ProviderService"
SECRET = b"the owner's model weights\n" * 1000
WRITE_RESULT = f"""
import os
open(os.environ["OUTPUTS"] + "/weights.bin", "wb").write({SECRET!r})
print("wrote the weights")
"""
SLEEPS = "import time\ntime.sleep(60)\n"
C2D = str(Path(sys.executable).parent / "c2d")


def http_get(url: str) -> tuple[int, bytes]:
    """(status, body) of a plain GET, as anyone holding the URL would send it."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as refusal:
        return refusal.code, refusal.read()


def http_call(url: str, method: str, data: bytes | None) -> tuple[int, bytes]:
    """(status, body) of another method on the same URL."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as refusal:
        return refusal.code, refusal.read()


def weights_entry(job) -> object:  # type: ignore[no-untyped-def]
    return next(f for f in job.results.files if f.path == "weights.bin")


async def link(client: Client, job_id: str, index: int) -> provider_pb2.GetComputeResultLinkResponse:
    return await client.result_link(job_id, index)


async def test_an_s3_link_reads_exactly_the_owners_file_and_only_for_the_owner(
    data_dir, seaweedfs, monkeypatch, tmp_path
):
    bucket = seaweedfs.make_bucket("links")
    s3_env(monkeypatch, seaweedfs, bucket)
    public = f"http://localhost:{seaweedfs.endpoint.rsplit(':', 1)[1]}"  # another name for the same server
    monkeypatch.setenv("C2D_STORAGE_S3_PUBLIC_ENDPOINT", public)
    async with job_bench() as bench:
        job = await bench.run(WRITE_RESULT)
        assert job.status == Status.FINISHED, job.error_message
        entry = weights_entry(job)
        before = time.time()
        answer = await link(bench.consumer, job.job_id, entry.index)

        # The answer: the manifest's entry, the signed statement, a link on the public endpoint.
        assert answer.file == entry and answer.no_link_reason == "" and answer.cid == ""
        info = await bench.consumer.provider_info()
        signed = {f.path: f for f in sdk_results.verified_manifest(answer.signed_results, info.signing_public_key)}
        assert (signed["weights.bin"].size, signed["weights.bin"].sha256) == (
            len(SECRET),
            hashlib.sha256(SECRET).hexdigest(),
        )
        parts = urlsplit(answer.url)
        assert f"{parts.scheme}://{parts.netloc}" == public
        assert parts.path == f"/{bucket}/{job.job_id}/outputs/weights.bin"
        # valid for the configured minutes (default 300 s), and no secret in it
        expires = answer.expires_at.ToDatetime(datetime.UTC).timestamp()
        assert before + 290 <= expires <= time.time() + 301
        assert seaweedfs.secret_key not in answer.url

        # Anyone holding the link reads that file, straight from S3.
        assert http_get(answer.url) == (200, SECRET)

        # Editing the key to another object of the same bucket (the job's own log, another
        # job's results) breaks the signature: S3 refuses, nothing of the other object leaks.
        log_key = f"{job.job_id}/logs/algorithm.log"
        assert log_key in bucket_keys(seaweedfs, bucket)
        altered = answer.url.replace(parts.path, f"/{bucket}/{quote(log_key)}")
        status, body = http_get(altered)
        assert status == 403 and b"SignatureDoesNotMatch" in body, (status, body[:200])
        assert b"wrote the weights" not in body
        # The link is a GET of that object, nothing else: overwriting or deleting through it is refused.
        for method, data in (("PUT", b"overwritten"), ("DELETE", None)):
            status, body = http_call(answer.url, method, data)
            assert status == 403, (method, status, body[:200])
        assert http_get(answer.url) == (200, SECRET)
        # ... and so does asking for a longer life.
        longer = answer.url.replace("X-Amz-Expires=300", "X-Amz-Expires=604800")
        assert longer != answer.url and http_get(longer)[0] == 403

        # Another consumer's signed request is refused as if the job did not exist.
        error = await refused(link(bench.other, job.job_id, entry.index))
        assert_refusal(error, grpc.StatusCode.NOT_FOUND, "job_not_found", job.job_id)
        # A replayed request (same nonce) is refused too.
        request = bench.consumer.signed(
            "GetComputeResultLink", provider_pb2.GetComputeResultLinkRequest(job_id=job.job_id, index=entry.index)
        )
        await bench.consumer.compute.GetComputeResultLink(request)
        replayed = await refused(bench.consumer.compute.GetComputeResultLink(request))
        assert_refusal(replayed, grpc.StatusCode.PERMISSION_DENIED, "nonce_invalid", "already used")

        # The SDK takes the link (the provider streams nothing), and checks the bytes
        # against the signed manifest.
        streamed = rpcs(await scrape(bench.stack.provider.metrics_port), PROVIDER, "GetComputeResult", "OK")
        saved = await bench.consumer.download_results(job.job_id, tmp_path / "out")
        assert (tmp_path / "out" / "weights.bin").read_bytes() == SECRET
        assert {f.path for f in saved} == {"weights.bin", "algorithm.log"}
        assert rpcs(await scrape(bench.stack.provider.metrics_port), PROVIDER, "GetComputeResult", "OK") == streamed


async def test_an_s3_link_expires(data_dir, seaweedfs, monkeypatch):
    bucket = seaweedfs.make_bucket("expiry")
    s3_env(monkeypatch, seaweedfs, bucket)
    # The link is signed before its answer travels back and the GET below goes out: on a
    # loaded 2-core host that can take more than 2 s. 5 s holds it and is short to wait out.
    async with job_bench(provider={"result_link_ttl_s": 5}) as bench:
        job = await bench.run(WRITE_RESULT)
        assert job.status == Status.FINISHED, job.error_message
        answer = await link(bench.consumer, job.job_id, weights_entry(job).index)
        assert "X-Amz-Expires=5&" in answer.url
        assert http_get(answer.url) == (200, SECRET)
        # until the link's own expiry has passed (S3 checks it on this machine's clock)
        expires = answer.expires_at.ToDatetime(datetime.UTC).timestamp()
        await asyncio.sleep(max(0.0, expires - time.time()) + 1.0)
        status, body = http_get(answer.url)
        assert status == 403 and b"expired" in body.lower(), (status, body[:300])
        # The SDK says what happened and what to do.
        with pytest.raises(sdk_errors.C2DError, match=r"refused \(HTTP 403.*ask for a new one"):
            async for _ in sdk_links_read(answer.url, len(SECRET)):
                pass


async def sdk_links_read(url: str, size: int):  # type: ignore[no-untyped-def]
    from c2d_sdk import links

    async for chunk in links.link_chunks(url, size, "weights.bin"):
        yield chunk


async def test_a_tampered_object_fails_the_checksum_in_the_sdk_and_the_cli(data_dir, seaweedfs, monkeypatch, tmp_path):
    bucket = seaweedfs.make_bucket("tamper")
    s3_env(monkeypatch, seaweedfs, bucket)
    async with job_bench() as bench:
        job = await bench.run(WRITE_RESULT)
        assert job.status == Status.FINISHED, job.error_message
        entry = weights_entry(job)
        # Someone with write access to the bucket swaps the bytes after publishing (same size).
        forged = SECRET.replace(b"owner", b"thief")
        _, key = storage.parse_s3_location(entry.location)
        seaweedfs.client().put_object(bucket, key, io.BytesIO(forged), len(forged))
        # The link still works (it signs the key, not the bytes): the SDK's check catches it.
        assert http_get((await link(bench.consumer, job.job_id, entry.index)).url) == (200, forged)
        for direct in (True, False):
            out = tmp_path / f"direct-{direct}"
            with pytest.raises(sdk_errors.IntegrityError) as caught:
                await bench.consumer.download_results(job.job_id, out, direct=direct)
            route = "read through its link" if direct else "streamed through the provider"
            assert f"weights.bin ({route})" in caught.value.message
            assert entry.sha256 in caught.value.message and "altered" in caught.value.message
            assert not (out / "weights.bin").exists() and not (out / "weights.bin.part").exists()

        # The real `c2d compute result`, as the owner: it fails with the reason, nothing saved.
        (tmp_path / "config" / "c2d").mkdir(parents=True)
        (tmp_path / "config" / "c2d" / "account.key").write_text(CONSUMER_KEY)
        env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
        out = tmp_path / "cli"
        command = [C2D, "--provider", bench.stack.provider_address, "compute", "result", job.job_id, "-o", str(out)]
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        stdout, stderr = await process.communicate()
        assert process.returncode == EXIT_FAILED, (stdout, stderr)
        assert b"weights.bin (read through its link)" in stderr and b"altered" in stderr, stderr
        assert not (out / "weights.bin").exists()


async def test_ipfs_results_get_their_cid_and_a_gateway_link(data_dir, ipfs_rpc, monkeypatch, tmp_path):
    monkeypatch.setenv("C2D_STORAGE_KIND", "ipfs")
    monkeypatch.setenv("C2D_STORAGE_IPFS_API", ipfs_rpc)
    monkeypatch.setenv("C2D_STORAGE_IPFS_GATEWAY", ipfs_rpc + "/")  # the test node serves /ipfs/<cid> too
    async with job_bench() as bench:
        job = await bench.run(WRITE_RESULT)
        assert job.status == Status.FINISHED, job.error_message
        entry = weights_entry(job)
        answer = await link(bench.consumer, job.job_id, entry.index)
        assert entry.location == f"ipfs://{answer.cid}"
        assert answer.url == f"{ipfs_rpc}/ipfs/{answer.cid}"
        assert not answer.HasField("expires_at")  # content addressed: nothing to expire
        assert http_get(answer.url) == (200, SECRET)
        saved = await bench.consumer.download_results(job.job_id, tmp_path / "out")
        assert {f.path for f in saved} == {"weights.bin", "algorithm.log"}
        assert (tmp_path / "out" / "weights.bin").read_bytes() == SECRET
        error = await refused(link(bench.other, job.job_id, entry.index))
        assert_refusal(error, grpc.StatusCode.NOT_FOUND, "job_not_found")


async def test_local_results_have_no_link_and_bad_requests_get_their_status(data_dir, tmp_path):
    async with job_bench() as bench:  # local storage: the embedded default
        job = await bench.run(WRITE_RESULT)
        assert job.status == Status.FINISHED, job.error_message
        entry = weights_entry(job)
        answer = await link(bench.consumer, job.job_id, entry.index)
        assert answer.url == "" and answer.cid == "" and not answer.HasField("expires_at")
        assert "local storage" in answer.no_link_reason and "GetComputeResult" in answer.no_link_reason
        assert answer.file == entry and answer.signed_results.statement_json
        statement = json.loads(answer.signed_results.statement_json)
        assert statement["job_id"] == job.job_id
        assert sealing.verify_bytes(
            answer.signed_results.public_key,
            answer.signed_results.statement_json.encode(),
            answer.signed_results.signature,
        )
        # the SDK streams instead, checked the same way
        await bench.consumer.download_results(job.job_id, tmp_path / "out")
        assert (tmp_path / "out" / "weights.bin").read_bytes() == SECRET

        error = await refused(link(bench.consumer, job.job_id, 99))
        assert_refusal(error, grpc.StatusCode.NOT_FOUND, "result_not_found", "99")
        error = await refused(link(bench.consumer, "no-such-job", 0))
        assert_refusal(error, grpc.StatusCode.INVALID_ARGUMENT, "job_id_invalid", "no-such-job")
        unknown = str(uuid.uuid4())
        error = await refused(link(bench.consumer, unknown, 0))
        assert_refusal(error, grpc.StatusCode.NOT_FOUND, "job_not_found", unknown)
        unsigned = provider_pb2.GetComputeResultLinkRequest(job_id=job.job_id, index=entry.index)
        error = await refused(bench.consumer.compute.GetComputeResultLink(unsigned))
        assert_refusal(error, grpc.StatusCode.UNAUTHENTICATED, "signature_missing", "signature")
        forged = bench.consumer.signed("GetComputeResultLink", unsigned)
        forged.index = 0 if entry.index else 1  # the signed fields changed after signing
        error = await refused(bench.consumer.compute.GetComputeResultLink(forged))
        assert_refusal(error, grpc.StatusCode.PERMISSION_DENIED, "signature_invalid")

        running, _ = await bench.start(SLEEPS)
        error = await refused(link(bench.consumer, running, 0))
        assert_refusal(error, grpc.StatusCode.FAILED_PRECONDITION, "no_results", running)
        await bench.consumer.stop(running)


def test_a_link_is_signed_only_for_the_results_bucket_and_a_sane_lifetime():
    config = storage.StorageConfig(
        kind="s3", s3_endpoint="127.0.0.1:8333", s3_access_key="ak", s3_secret_key="sk", s3_bucket="results"
    )
    links = storage.ResultLinks(config, 60)
    # a location naming another bucket (a forged manifest) gets no signature
    with pytest.raises(storage.StorageError, match="not in this provider's results bucket"):
        links.link("s3://other-bucket/job/outputs/x")
    with pytest.raises(storage.StorageError, match="'..'"):
        links.link("s3://results/job/../other/x")
    assert links.link("s3://results/job/outputs/x").url.startswith("http://127.0.0.1:8333/results/job/outputs/x?")
    for ttl in (0, 7 * 24 * 3600 + 1):
        with pytest.raises(storage.StorageError, match="1 to 604800 seconds"):
            storage.ResultLinks(config, ttl)
    https = storage.ResultLinks(
        storage.StorageConfig(**{**config.__dict__, "s3_public_endpoint": "https://files.example.org"}), 60
    )
    assert https.link("s3://results/k").url.startswith("https://files.example.org/results/k?")
    with pytest.raises(storage.StorageError, match="host:port"):
        storage.ResultLinks(storage.StorageConfig(**{**config.__dict__, "s3_public_endpoint": "ftp://x/y"}), 60)
    ipfs = storage.ResultLinks(storage.StorageConfig(kind="ipfs"), 60)
    cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    no_gateway = ipfs.link(f"ipfs://{cid}")
    assert (no_gateway.url, no_gateway.cid) == ("", cid) and "gateway" in no_gateway.no_link_reason


async def test_a_link_whose_storage_does_not_answer_falls_back_to_streaming(data_dir, seaweedfs, monkeypatch, tmp_path):
    # e.g. a cluster's S3 service the consumer cannot reach: the provider can
    bucket = seaweedfs.make_bucket("fallback")
    s3_env(monkeypatch, seaweedfs, bucket)
    [closed_port] = free_ports(1)
    monkeypatch.setenv("C2D_STORAGE_S3_PUBLIC_ENDPOINT", f"127.0.0.1:{closed_port}")
    async with job_bench() as bench:
        job = await bench.run(WRITE_RESULT)
        assert job.status == Status.FINISHED, job.error_message
        answer = await link(bench.consumer, job.job_id, weights_entry(job).index)
        assert answer.url.startswith(f"http://127.0.0.1:{closed_port}/")
        before = rpcs(await scrape(bench.stack.provider.metrics_port), PROVIDER, "GetComputeResult", "OK")
        await bench.consumer.download_results(job.job_id, tmp_path / "out")
        assert (tmp_path / "out" / "weights.bin").read_bytes() == SECRET
        after = rpcs(await scrape(bench.stack.provider.metrics_port), PROVIDER, "GetComputeResult", "OK")
        assert after == before + 2  # both files streamed through the provider


def test_c2d_config_lists_the_link_settings():
    from cli import settings_catalog

    listed = {s.name: s for s in settings_catalog.catalogue()}
    assert listed["C2D_PROVIDER_RESULT_LINK_TTL_S"].default == "300"
    assert "empty: s3_endpoint" in listed["C2D_STORAGE_S3_PUBLIC_ENDPOINT"].meaning
    assert "gateway" in listed["C2D_STORAGE_IPFS_GATEWAY"].meaning
    assert storage.StorageConfig.from_env(
        {"C2D_STORAGE_S3_PUBLIC_ENDPOINT": "https://files.example.org", "C2D_STORAGE_IPFS_GATEWAY": "https://ipfs.io"}
    ) == storage.StorageConfig(s3_public_endpoint="https://files.example.org", ipfs_gateway="https://ipfs.io")
