"""The publishing domain on its own: what is collected, the part size, and
the all-or-nothing upload on a real local store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plumbing.storage import StorageConfig, open_store
from services.pod_publish.domain import publishing


def _tree(root: Path) -> Path:
    out = root / "outputs"
    (out / "a" / "b").mkdir(parents=True)
    (out / "a" / "b" / "deep.txt").write_text("deep")
    (out / "top.txt").write_text("top")
    (root / "admin").mkdir()
    (root / "admin" / "algorithm.log").write_text("log")
    (root / "secret.txt").write_text("outside outputs")
    os.symlink(root / "secret.txt", out / "file-link")
    os.symlink(root, out / "a" / "dir-link")
    os.mkfifo(out / "pipe")
    return out


def test_collect_publishes_regular_files_only_and_never_follows_links(tmp_path):
    _tree(tmp_path)
    collected = publishing.collect(tmp_path, pack=False, scratch=tmp_path, log_dir=tmp_path / "admin")
    assert [(s.path, s.kind) for s in collected.sources] == [
        ("a/b/deep.txt", publishing.OUTPUT),
        ("top.txt", publishing.OUTPUT),
        ("algorithm.log", publishing.ALGORITHM_LOG),
    ]
    assert collected.skipped == ["a/dir-link", "file-link", "pipe"]


def test_outputs_that_are_themselves_a_link_publish_nothing_but_the_log(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.txt").write_text("x")
    os.symlink(tmp_path / "elsewhere", tmp_path / "outputs")
    collected = publishing.collect(tmp_path, pack=False, scratch=tmp_path, log_dir=tmp_path / "admin")
    assert collected.sources == []


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


def test_publish_returns_the_manifest_in_source_order(tmp_path):
    _tree(tmp_path)
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


def _local(tmp_path):
    return StorageConfig(kind="local", local_root=tmp_path / "results")


def _stored_files(tmp_path):
    return sorted(
        p.relative_to(tmp_path / "results").as_posix() for p in (tmp_path / "results").rglob("*") if p.is_file()
    )


async def test_publish_results_without_an_asset_reports_the_manifest(tmp_path):
    _tree(tmp_path)
    outcome = await publishing.publish_results(tmp_path, tmp_path / "admin", "job-3", False, _local(tmp_path))
    assert outcome.ok and outcome.results_did == "" and outcome.error_code == ""
    assert [f["path"] for f in outcome.manifest["files"]] == ["a/b/deep.txt", "top.txt", "algorithm.log"]
    assert _stored_files(tmp_path) == [
        "job-3/logs/algorithm.log",
        "job-3/outputs/a/b/deep.txt",
        "job-3/outputs/top.txt",
    ]


async def test_publish_results_registers_the_uploaded_manifest_as_an_asset(tmp_path):
    _tree(tmp_path)
    registered = []

    async def register(manifest):
        registered.append(manifest)
        return "did:op:" + "e" * 64

    outcome = await publishing.publish_results(tmp_path, tmp_path / "admin", "job-4", True, _local(tmp_path), register)
    assert outcome.ok and outcome.results_did == "did:op:" + "e" * 64
    assert registered == [outcome.manifest]
    assert [f["path"] for f in outcome.manifest["files"]] == ["outputs.tar", "algorithm.log"]


async def test_a_refused_registration_fails_the_stage_with_62_and_removes_the_results(tmp_path):
    _tree(tmp_path)

    async def register(manifest):
        raise publishing.AssetRegistrationFailed("the provider at 127.0.0.1:1 answered UNAVAILABLE: down")

    outcome = await publishing.publish_results(tmp_path, tmp_path / "admin", "job-5", False, _local(tmp_path), register)
    assert not outcome.ok and outcome.manifest is None
    assert publishing.FAILED_STATUS == 62
    assert outcome.error_code == "results_asset_failed"
    assert outcome.message == (
        "results upload failed: registering the results as an asset failed: "
        "the provider at 127.0.0.1:1 answered UNAVAILABLE: down"
    )
    assert _stored_files(tmp_path) == []  # nothing stays behind for a failed job


async def test_an_upload_that_fails_is_results_upload_failed(tmp_path):
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "d\\bad.txt").write_text("x")

    async def register(manifest):
        raise AssertionError("nothing was published, so nothing is registered")

    outcome = await publishing.publish_results(tmp_path, tmp_path / "admin", "job-6", False, _local(tmp_path), register)
    assert (outcome.ok, outcome.error_code) == (False, "results_upload_failed")
    assert outcome.message.startswith("results upload failed: d\\bad.txt: invalid object key")


async def test_a_store_that_cannot_open_is_results_upload_failed(tmp_path):
    _tree(tmp_path)
    outcome = await publishing.publish_results(tmp_path, tmp_path / "admin", "job-7", False, StorageConfig(kind="tape"))
    assert (outcome.ok, outcome.error_code) == (False, "results_upload_failed")
    assert outcome.message.startswith("results upload failed: unknown storage kind 'tape'")


# --- attacks: what an algorithm can leave in outputs/ and logs/ ---


def _secret_host_file(tmp_path):
    secret = tmp_path / "host" / "service-token"
    secret.parent.mkdir()
    secret.write_text("SECRET-TOKEN")
    return secret


async def test_links_fifos_and_hard_links_in_outputs_are_never_published(tmp_path):
    secret = _secret_host_file(tmp_path)
    data = tmp_path / "data"
    out = data / "outputs"
    (out / "d").mkdir(parents=True)
    (out / "ok.txt").write_text("ok")
    os.symlink("/etc/shadow", out / "shadow")
    os.symlink(secret, out / "token")
    os.symlink(secret.parent, out / "d" / "host")  # a directory link: never descended
    os.mkfifo(out / "fifo")  # would block a reader that opens it
    (out / "alias").write_text("x")
    os.link(out / "alias", out / "alias2")  # one file, two names
    (data / "logs").mkdir()
    os.symlink(secret, data / "logs" / "algorithm.log")  # the job's own logs/ is not the log
    (tmp_path / "admin").mkdir()
    (tmp_path / "admin" / "algorithm.log").write_text("what the algorithm printed")
    for pack in (False, True):
        outcome = await publishing.publish_results(data, tmp_path / "admin", f"job-{pack}", pack, _local(tmp_path))
        assert outcome.ok, outcome.message
        assert outcome.manifest["skipped_paths"] == ["alias", "alias2", "d/host", "fifo", "shadow", "token"]
    stored = {
        p.relative_to(tmp_path / "results").as_posix(): p.read_bytes()
        for p in (tmp_path / "results").rglob("*")
        if p.is_file()
    }
    assert stored["job-False/outputs/ok.txt"] == b"ok"
    assert (
        stored["job-False/logs/algorithm.log"] == stored["job-True/logs/algorithm.log"] == b"what the algorithm printed"
    )
    assert set(stored) == {
        "job-False/outputs/ok.txt",
        "job-False/logs/algorithm.log",
        "job-True/outputs/outputs.tar",
        "job-True/logs/algorithm.log",
    }
    for content in stored.values():
        assert b"SECRET-TOKEN" not in content and b"root:" not in content


def test_a_file_swapped_for_a_link_after_collecting_is_refused(tmp_path):
    secret = _secret_host_file(tmp_path)
    data = tmp_path / "data"
    (data / "outputs").mkdir(parents=True)
    (data / "outputs" / "result.json").write_text("{}")
    (tmp_path / "admin").mkdir()
    collected = publishing.collect(data, pack=False, scratch=tmp_path, log_dir=tmp_path / "admin")
    os.unlink(data / "outputs" / "result.json")
    os.symlink(secret, data / "outputs" / "result.json")  # a job still running would race like this
    store = open_store(StorageConfig(kind="local", local_root=tmp_path / "results"))
    with pytest.raises(publishing.PublishFailed, match="result.json: a symbolic link is in the way"):
        publishing.publish(store, "job-8", collected)
    assert _stored_files(tmp_path) == []
