"""The publishing domain on its own: what is collected, the part size, and
the all-or-nothing upload on a real local store. Links, FIFOs and hard links
among the outputs: tests/security/test_job_file_links.py."""

from __future__ import annotations

import os

import pytest

from plumbing.storage import IpfsStore, StorageConfig, open_store, parse_cid
from services.pod_publish.domain import publishing
from tests.pod_publish.helpers import local_results, outputs_tree, stored_files


@pytest.mark.parametrize(
    ("configured", "largest", "expected"),
    [
        (64 << 20, 1 << 30, 8 << 20),  # capped: bounded memory
        (5 << 20, 1 << 30, 5 << 20),  # a smaller setting is kept
        (64 << 20, 200 << 30, 21 << 20),  # 200 GiB needs parts over 20 MiB (10,000 parts at most)
    ],
)
def test_part_size_is_bounded_unless_a_file_needs_bigger_parts(configured, largest, expected):
    assert publishing.part_size_for(configured, largest) == expected
    assert largest / publishing.part_size_for(configured, largest) <= publishing.MAX_PARTS


def test_a_failed_file_fails_the_publication_and_removes_what_was_uploaded(tmp_path):
    out = tmp_path / "data" / "outputs"
    out.mkdir(parents=True)
    for name in ("a.txt", "b.txt", "c.txt"):
        (out / name).write_bytes(os.urandom(1 << 16))
    (out / "d\\bad.txt").write_text("x")  # no storage key may carry a backslash
    store = open_store(StorageConfig(kind="local", local_root=tmp_path / "results"))
    collected = publishing.collect(tmp_path / "data", pack=False, scratch=tmp_path, log_dir=tmp_path / "admin")
    with pytest.raises(publishing.PublishFailed, match=r"results upload failed: d\\bad.txt: invalid object key"):
        publishing.publish(store, "job-1", collected)
    assert [p for p in (tmp_path / "results").rglob("*") if p.is_file()] == []


def test_a_failed_publication_on_ipfs_unpins_nothing_another_job_may_hold(tmp_path, ipfs_rpc):
    """Another job's live result is on IPFS; an algorithm writes the same bytes
    and then a file no upload takes. The failed publication must not unpin the
    CID the two share (one pin holds it for both)."""
    store = open_store(StorageConfig(kind="ipfs", ipfs_api=ipfs_rpc))
    content = os.urandom(1 << 12)
    (tmp_path / "victim.bin").write_bytes(content)
    victims = store.put_file("victim-job/outputs/result.bin", tmp_path / "victim.bin").location
    out = tmp_path / "data" / "outputs"
    out.mkdir(parents=True)
    (out / "a.bin").write_bytes(content)  # uploaded first (one worker, in order), then the failure
    (out / "d\\bad.txt").write_text("x")
    collected = publishing.collect(tmp_path / "data", pack=False, scratch=tmp_path, log_dir=tmp_path / "admin")
    with pytest.raises(publishing.PublishFailed, match=r"results upload failed: d\\bad.txt: invalid object key"):
        publishing.publish(store, "job-1", collected, workers=1)
    assert isinstance(store, IpfsStore)
    assert store.client.json("pin/ls", {"arg": str(parse_cid(victims)), "type": "recursive"})["Keys"]
    assert b"".join(store.read(victims)) == content


def test_publish_returns_the_manifest_in_source_order(tmp_path):
    outputs_tree(tmp_path)
    store = open_store(StorageConfig(kind="local", local_root=tmp_path / "results"))
    manifest = publishing.publish(
        store, "job-2", publishing.collect(tmp_path, pack=False, scratch=tmp_path, log_dir=tmp_path / "admin")
    )
    assert [(f["index"], f["path"], f["location"]) for f in manifest["files"]] == [
        (0, "a/b/deep.txt", "local:job-2/outputs/a/b/deep.txt"),
        (1, "top.txt", "local:job-2/outputs/top.txt"),
        (2, "algorithm.log", "local:job-2/logs/algorithm.log"),
    ]
    assert manifest["skipped_paths"] == ["a/dir-link", "file-link", "pipe"]
    assert (tmp_path / "results" / "job-2" / "outputs" / "top.txt").read_text() == "top"


# --- the whole stage, with a real local store and registrars in place of the provider ---


async def test_publish_results_without_an_asset_reports_the_manifest(tmp_path):
    outputs_tree(tmp_path)
    outcome = await publishing.publish_results(tmp_path, tmp_path / "admin", "job-3", False, local_results(tmp_path))
    assert outcome.ok and outcome.results_did == "" and outcome.error_code == ""
    assert [f["path"] for f in outcome.manifest["files"]] == ["a/b/deep.txt", "top.txt", "algorithm.log"]
    assert stored_files(tmp_path) == [
        "job-3/logs/algorithm.log",
        "job-3/outputs/a/b/deep.txt",
        "job-3/outputs/top.txt",
    ]


async def test_publish_results_registers_the_uploaded_manifest_as_an_asset(tmp_path):
    outputs_tree(tmp_path)
    registered = []

    async def register(manifest):
        registered.append(manifest)
        return "did:op:" + "e" * 64

    outcome = await publishing.publish_results(
        tmp_path, tmp_path / "admin", "job-4", True, local_results(tmp_path), register
    )
    assert outcome.ok and outcome.results_did == "did:op:" + "e" * 64
    assert registered == [outcome.manifest]
    assert [f["path"] for f in outcome.manifest["files"]] == ["outputs.tar", "algorithm.log"]


async def test_a_refused_registration_fails_the_stage_with_62_and_removes_the_results(tmp_path):
    outputs_tree(tmp_path)

    async def register(manifest):
        raise publishing.AssetRegistrationFailed("the provider at 127.0.0.1:1 answered UNAVAILABLE: down")

    outcome = await publishing.publish_results(
        tmp_path, tmp_path / "admin", "job-5", False, local_results(tmp_path), register
    )
    assert not outcome.ok and outcome.manifest is None
    assert publishing.FAILED_STATUS == 62
    assert outcome.error_code == "results_asset_failed"
    assert outcome.message == (
        "results upload failed: registering the results as an asset failed: "
        "the provider at 127.0.0.1:1 answered UNAVAILABLE: down"
    )
    assert stored_files(tmp_path) == []  # nothing stays behind for a failed job


async def test_an_upload_that_fails_is_results_upload_failed(tmp_path):
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "d\\bad.txt").write_text("x")

    async def register(manifest):
        raise AssertionError("nothing was published, so nothing is registered")

    outcome = await publishing.publish_results(
        tmp_path, tmp_path / "admin", "job-6", False, local_results(tmp_path), register
    )
    assert (outcome.ok, outcome.error_code) == (False, "results_upload_failed")
    assert outcome.message.startswith("results upload failed: d\\bad.txt: invalid object key")


async def test_a_store_that_cannot_open_is_results_upload_failed(tmp_path):
    outputs_tree(tmp_path)
    outcome = await publishing.publish_results(tmp_path, tmp_path / "admin", "job-7", False, StorageConfig(kind="tape"))
    assert (outcome.ok, outcome.error_code) == (False, "results_upload_failed")
    assert outcome.message.startswith("results upload failed: unknown storage kind 'tape'")


# --- attacks: what an algorithm can leave in outputs/ and logs/ ---
