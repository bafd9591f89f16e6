"""pod_publish through the real engine, onto SeaweedFS S3: what is published
(nested outputs with relative paths, the algorithm's log, never the admin
logs, never what a symlink points at), the signed manifest, publish.log, and
the failures that end a job in 62 with nothing left behind."""

from __future__ import annotations

import hashlib
import json
import re

from c2d.provider.v1 import provider_pb2
from plumbing.statuses import Status
from services.provider.domain import sealing
from testkit.jobs import bucket_keys, final_publish_log, job_bench, publish_log, s3_env

NESTED = r"""
import json, os
out, inputs = os.environ["OUTPUTS"], os.environ["INPUTS"]
did = json.loads(os.environ["DIDS"])[0]
os.makedirs(f"{out}/a/b")
os.makedirs(f"{out}/empty-dir")
open(f"{out}/top.txt", "w").write("top level")
open(f"{out}/a/b/deep.json", "w").write('{"x": 1}')
open(f"{out}/a/zero.bin", "wb").close()
# links that would leak the publisher's host, the dataset or the admin logs if followed
os.symlink("/etc/hostname", f"{out}/hostname-link")
os.symlink("/etc", f"{out}/etc-dir-link")
os.symlink(f"../../inputs/{did}/0", f"{out}/a/dataset-link")
os.symlink("../../admin/configure.log", f"{out}/admin-link")
os.mkfifo(f"{out}/a/pipe")
print("wrote the outputs")
"""
PUBLISHED = {"top.txt", "a/b/deep.json", "a/zero.bin", "algorithm.log"}
SKIPPED = ["a/dataset-link", "a/pipe", "admin-link", "etc-dir-link", "hostname-link"]


async def test_nested_outputs_are_published_with_relative_paths_and_links_are_never_followed(
    data_dir, postgres_url, seaweedfs, monkeypatch
):
    bucket = seaweedfs.make_bucket("nested")
    s3_env(monkeypatch, seaweedfs, bucket)
    async with job_bench(postgres_url) as bench:
        job = await bench.run(NESTED)
        assert job.status == Status.FINISHED, job.error_message
        manifest = job.results
        assert {f.path for f in manifest.files} == PUBLISHED
        assert list(manifest.skipped_paths) == SKIPPED
        assert manifest.storage == "s3"
        assert bucket_keys(seaweedfs, bucket) == {
            f"{job.job_id}/outputs/top.txt",
            f"{job.job_id}/outputs/a/b/deep.json",
            f"{job.job_id}/outputs/a/zero.bin",
            f"{job.job_id}/logs/algorithm.log",
        }
        by_path = {f.path: f for f in manifest.files}
        assert by_path["a/b/deep.json"].content_type == "application/json"
        assert by_path["algorithm.log"].kind == 2  # RESULT_KIND_ALGORITHM_LOG
        for entry in manifest.files:
            got, body = await bench.consumer.result(job.job_id, entry.index)
            assert got.path == entry.path
            assert hashlib.sha256(body).hexdigest() == entry.sha256 and len(body) == entry.size
        assert (await bench.consumer.result(job.job_id, by_path["top.txt"].index))[1] == b"top level"
        assert b"wrote the outputs" in (await bench.consumer.result(job.job_id, by_path["algorithm.log"].index))[1]

        # the provider's statement covers exactly this manifest, under its published key
        details = await bench.consumer.details(job.job_id)
        info = await bench.consumer.compute.GetProviderInfo(provider_pb2.GetProviderInfoRequest())
        signed = details.signed_results
        assert sealing.verify_bytes(info.signing_public_key, signed.statement_json.encode(), signed.signature)
        statement = json.loads(signed.statement_json)
        assert statement["job_id"] == job.job_id
        assert statement["dataset_dids"] == list(job.dataset_dids)
        assert {f["path"]: f["sha256"] for f in statement["results"]["files"]} == {
            f.path: f.sha256 for f in manifest.files
        }
        assert statement["results"]["skipped_paths"] == SKIPPED
        forged = signed.statement_json.replace(by_path["top.txt"].sha256, "0" * 64)
        assert not sealing.verify_bytes(info.signing_public_key, forged.encode(), signed.signature)


async def test_publish_log_records_each_step_with_sizes_and_durations(data_dir, seaweedfs, monkeypatch):
    bucket = seaweedfs.make_bucket("log")
    s3_env(monkeypatch, seaweedfs, bucket)
    async with job_bench() as bench:
        job = await bench.run(NESTED)
        assert job.status == Status.FINISHED, job.error_message
        text = await final_publish_log(job.job_id)
    seconds = r"\d+\.\d{3} s"
    assert re.search(rf"fetched the workflow in {seconds}", text)
    assert re.search(rf"collected 4 files \(\d+ bytes, 5 skipped\) in {seconds}; publishing to s3 storage", text)
    assert "skipped outputs/hostname-link: symlink to '/etc/hostname'; not followed, not published" in text
    assert "skipped outputs/a/pipe: FIFO; not followed, not published" in text
    assert re.search(rf"uploaded result \d \(a/b/deep.json, 8 bytes\) in {seconds}", text)
    assert re.search(rf"uploaded result \d \(top.txt, 9 bytes\) in {seconds}", text)
    assert re.search(rf"uploaded 4 files in {seconds}", text)
    assert re.search(rf"reported the manifest in {seconds}", text)
    assert re.search(rf"published 4 files \(\d+ bytes\) in {seconds}", text)


WRITES_RESULT = 'open(__import__("os").environ["OUTPUTS"] + "/result.txt", "w").write("42")\n'


async def test_wrong_s3_credentials_end_the_job_62_naming_the_file_and_the_cause(data_dir, seaweedfs, monkeypatch):
    bucket = seaweedfs.make_bucket("creds")
    s3_env(monkeypatch, seaweedfs, bucket, secret_key="not-the-secret")
    async with job_bench() as bench:
        job = await bench.run(WRITES_RESULT)
    assert job.status == Status.RESULTS_UPLOAD_FAILED
    assert job.error_code == "results_upload_failed"
    assert re.match(r"results upload failed: (result\.txt|algorithm\.log): ", job.error_message), job.error_message
    assert "SignatureDoesNotMatch (the secret key is wrong)" in job.error_message
    assert "not-the-secret" not in job.error_message
    assert not job.HasField("results")
    assert bucket_keys(seaweedfs, bucket) == set()


async def test_a_missing_bucket_ends_the_job_62_naming_the_file_and_the_bucket(data_dir, seaweedfs, monkeypatch):
    s3_env(monkeypatch, seaweedfs, "no-such-bucket-c2d")
    async with job_bench() as bench:
        job = await bench.run(WRITES_RESULT)
    assert job.status == Status.RESULTS_UPLOAD_FAILED
    assert re.match(r"results upload failed: (result\.txt|algorithm\.log): ", job.error_message), job.error_message
    assert "bucket 'no-such-bucket-c2d' does not exist" in job.error_message
    assert "no-such-bucket-c2d" not in {b.name for b in seaweedfs.client().list_buckets()}


PARTLY_UPLOADABLE = r"""
import os
out = os.environ["OUTPUTS"]
for name in ("a.txt", "b.txt"):
    open(f"{out}/{name}", "wb").write(os.urandom(1 << 20))
# a legal file name that no storage key may carry: its upload fails for good
open(out + "/z\\bad.txt", "w").write("x")
"""


async def test_a_failed_upload_removes_what_was_already_uploaded(data_dir, seaweedfs, monkeypatch):
    bucket = seaweedfs.make_bucket("partial")
    s3_env(monkeypatch, seaweedfs, bucket)
    async with job_bench() as bench:
        job = await bench.run(PARTLY_UPLOADABLE)
        text = publish_log(job.job_id)
    assert job.status == Status.RESULTS_UPLOAD_FAILED
    assert job.error_message.startswith("results upload failed: z\\bad.txt: invalid object key"), job.error_message
    assert "removed partial result s3://" in text  # something was uploaded, then removed
    assert bucket_keys(seaweedfs, bucket) == set()
