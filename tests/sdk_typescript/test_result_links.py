"""The TypeScript SDK downloads a result through its link (GetComputeResultLink,
an S3 presigned GET on real SeaweedFS) and checks it against the
provider-signed statement: the owner's file is saved; an object overwritten
in S3 after publishing is refused with an IntegrityError and nothing saved;
with `direct: false` it streams through the provider as before."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from plumbing import storage
from plumbing.statuses import Status
from testkit.jobs import CONSUMER_KEY, OTHER_KEY, job_bench, s3_env
from tests.observability.scraping import rpcs, scrape
from tests.sdk_typescript.node import interop

PROVIDER = "c2d.provider.v1.ProviderService"
SECRET = b"weights only the owner may read\n" * 4096
WRITE_RESULT = f"""
import os
open(os.environ["OUTPUTS"] + "/weights.bin", "wb").write({SECRET!r})
"""


async def test_node_downloads_through_the_link_and_refuses_a_tampered_object(
    data_dir, seaweedfs, monkeypatch, tmp_path: Path
):
    bucket = seaweedfs.make_bucket("ts-links")
    s3_env(monkeypatch, seaweedfs, bucket)
    async with job_bench() as bench:
        job = await bench.run(WRITE_RESULT)
        assert job.status == Status.FINISHED, job.error_message
        entry = next(f for f in job.results.files if f.path == "weights.bin")

        def call(method: str, *args: object, key: str = CONSUMER_KEY) -> dict:
            return {
                "op": "call",
                "provider": bench.stack.provider_address,
                "privateKey": key,
                "method": method,
                "args": list(args),
            }

        streamed_before = rpcs(await scrape(bench.stack.provider.metrics_port), PROVIDER, "GetComputeResult", "OK")
        linked, saved, others = await interop(
            call("resultLink", job.job_id, entry.index),
            call("downloadResult", job.job_id, {"path": "weights.bin"}, str(tmp_path / "linked.bin")),
            call("resultLink", job.job_id, entry.index, key=OTHER_KEY),
        )
        url = linked["result"]["url"]
        assert url.startswith(f"http://{seaweedfs.endpoint}/{bucket}/{job.job_id}/outputs/weights.bin?")
        assert linked["result"]["file"]["sha256"] == entry.sha256
        assert saved["result"]["file"]["sha256"] == entry.sha256
        assert (tmp_path / "linked.bin").read_bytes() == SECRET
        # it went through the link: the provider streamed nothing
        samples = await scrape(bench.stack.provider.metrics_port)
        assert rpcs(samples, PROVIDER, "GetComputeResult", "OK") == streamed_before
        assert rpcs(samples, PROVIDER, "GetComputeResultLink", "OK") == 2
        assert (others["refusal"]["status"], others["refusal"]["reason"]) == ("NOT_FOUND", "JOB_NOT_FOUND")

        # Overwritten in S3 after publishing: same size, other bytes.
        forged = SECRET.replace(b"owner", b"thief")
        _, key = storage.parse_s3_location(entry.location)
        seaweedfs.client().put_object(bucket, key, io.BytesIO(forged), len(forged))
        through_link, streamed = await interop(
            call("downloadResult", job.job_id, {"path": "weights.bin"}, str(tmp_path / "tampered.bin")),
            call(
                "downloadResult",
                job.job_id,
                {"path": "weights.bin"},
                str(tmp_path / "streamed.bin"),
                {"direct": False},
            ),
        )
        for answer in (through_link, streamed):
            assert answer["error"].startswith("IntegrityError: weights.bin: received"), answer
            assert entry.sha256 in answer["error"] and hashlib.sha256(forged).hexdigest() in answer["error"]
        assert not list(tmp_path.glob("tampered.bin*")) and not list(tmp_path.glob("streamed.bin*"))
