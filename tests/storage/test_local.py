"""Local-directory backend and the shared configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plumbing.storage import (
    LocalStore,
    ObjectNotFound,
    StorageConfig,
    StorageError,
    open_store,
)


def put(store: LocalStore, tmp_path: Path, key: str, data: bytes = b"data") -> str:
    src = tmp_path / "src"
    src.write_bytes(data)
    return store.put_file(key, src).location


def test_files_land_under_root_with_relative_location(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    location = put(store, tmp_path, "jobs/j1/outputs/a.txt", b"abc")
    assert location == "local:jobs/j1/outputs/a.txt"
    target = tmp_path / "root" / "jobs/j1/outputs/a.txt"
    assert target.read_bytes() == b"abc"
    assert target.stat().st_mode & 0o777 == 0o644
    # atomic write: no temp file is left next to the result
    assert os.listdir(target.parent) == ["a.txt"]


def test_traversal_refused_and_nothing_written_outside(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    src = tmp_path / "src"
    src.write_bytes(b"evil")
    for key in ("../outside.txt", "jobs/../../outside.txt", str(tmp_path / "abs.txt")):
        with pytest.raises(StorageError, match="invalid object key"):
            store.put_file(key, src)
    with pytest.raises(StorageError, match="invalid object key"):
        store.size("local:../outside.txt")
    with pytest.raises(StorageError, match="invalid object key"):
        store.delete("local:../src")
    assert not (tmp_path / "outside.txt").exists()
    assert src.exists()


def test_symlink_planted_under_root_cannot_escape(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "root" / "jobs").mkdir(parents=True)
    (tmp_path / "root" / "jobs" / "link").symlink_to(outside)
    src = tmp_path / "src"
    src.write_bytes(b"x")
    with pytest.raises(StorageError, match="outside the storage root"):
        store.put_file("jobs/link/owned.txt", src)
    assert list(outside.iterdir()) == []


def test_delete_prefix_is_a_string_prefix_and_prunes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    for key in ("jobs/a/1", "jobs/a/sub/2", "jobs/ab/3", "jobs/b/4"):
        put(store, tmp_path, key)
    assert store.delete_prefix("jobs/a/") == 2
    assert not (tmp_path / "root/jobs/a").exists()
    assert store.size("local:jobs/ab/3") == 4
    assert store.delete_prefix("jobs/a") == 1  # like S3: "jobs/a" also matches "jobs/ab/..."
    assert store.delete_prefix("jobs/nothing/") == 0
    assert store.size("local:jobs/b/4") == 4
    with pytest.raises(StorageError, match="empty key prefix"):
        store.delete_prefix("")
    with pytest.raises(StorageError, match="invalid object key"):
        store.delete_prefix("../")


def test_delete_prefix_does_not_follow_symlinks(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_bytes(b"x")
    put(store, tmp_path, "jobs/j/out")
    (tmp_path / "root/jobs/j/link").symlink_to(keep)
    assert store.delete_prefix("jobs/j/") == 2  # the file and the link itself
    assert (keep / "precious").exists()


def test_delete_removes_emptied_directories(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    location = put(store, tmp_path, "jobs/j9/outputs/x/y.bin")
    store.delete(location)
    assert not (tmp_path / "root/jobs").exists()
    assert (tmp_path / "root").is_dir()
    with pytest.raises(ObjectNotFound):
        list(store.read(location))


def test_config_from_env_and_secret_not_in_repr(tmp_path: Path) -> None:
    env = {
        "C2D_STORAGE_KIND": "s3",
        "C2D_STORAGE_S3_ENDPOINT": "127.0.0.1:9000",
        "C2D_STORAGE_S3_ACCESS_KEY": "ak",
        "C2D_STORAGE_S3_SECRET_KEY": "very-secret",
        "C2D_STORAGE_S3_BUCKET": "results",
        "C2D_STORAGE_S3_SECURE": "true",
        "C2D_STORAGE_PART_SIZE": str(8 << 20),
        "C2D_STORAGE_LOCAL_ROOT": str(tmp_path),
    }
    config = StorageConfig.from_env(env)
    assert (config.kind, config.s3_bucket, config.s3_secure, config.part_size) == ("s3", "results", True, 8 << 20)
    assert config.local_root == tmp_path
    assert "very-secret" not in repr(config)
    assert StorageConfig.from_env({}) == StorageConfig()


def test_open_store_refuses_incomplete_configs() -> None:
    with pytest.raises(StorageError, match="local_root"):
        open_store(StorageConfig(kind="local"))
    with pytest.raises(StorageError, match="unknown storage kind"):
        open_store(StorageConfig(kind="ftp"))
    with pytest.raises(StorageError, match="endpoint"):
        open_store(StorageConfig(kind="s3", s3_bucket="b"))
    with pytest.raises(StorageError, match="bucket"):
        open_store(StorageConfig(kind="s3", s3_endpoint="127.0.0.1:1"))
    with pytest.raises(StorageError, match="without a scheme"):
        open_store(StorageConfig(kind="s3", s3_endpoint="http://127.0.0.1:1", s3_bucket="b"))
    with pytest.raises(StorageError, match="part_size"):
        open_store(StorageConfig(kind="s3", s3_endpoint="127.0.0.1:1", s3_bucket="b", part_size=1 << 20))
    with pytest.raises(StorageError, match="ipfs_api"):
        open_store(StorageConfig(kind="ipfs"))
