"""Behaviour every backend shares: local directory, S3 (SeaweedFS) and IPFS (embedded Kubo)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from plumbing.storage import ObjectNotFound, StorageError, kind_of
from plumbing.storage.base import ObjectStore
from tests.storage.conftest import write_random

ALL_BYTES = bytes(range(256)) * 7  # every byte value, NUL and 0xff included


def read_all(store: ObjectStore, location: str, offset: int = 0, chunk_size: int = 1 << 20) -> bytes:
    return b"".join(store.read(location, offset, chunk_size))


def test_round_trip_nested_key_binary(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "out.bin"
    src.write_bytes(ALL_BYTES)
    obj = store.put_file("jobs/job-1/outputs/deep/er/out.bin", src)
    assert kind_of(obj.location) == store.kind
    assert obj.size == len(ALL_BYTES)
    assert obj.sha256 == hashlib.sha256(ALL_BYTES).hexdigest()
    assert store.size(obj.location) == len(ALL_BYTES)
    assert read_all(store, obj.location) == ALL_BYTES


def test_empty_file(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "empty"
    src.write_bytes(b"")
    obj = store.put_file("jobs/job-2/outputs/empty", src)
    assert (obj.size, obj.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert store.size(obj.location) == 0
    assert read_all(store, obj.location) == b""
    assert read_all(store, obj.location, offset=0) == b""


def test_read_from_offsets_multi_chunk(store: ObjectStore, tmp_path: Path) -> None:
    # 1 MiB + 7: several 256 KiB IPFS chunks, offsets on and across chunk edges
    data = write_random(tmp_path / "r.bin", (1 << 20) + 7, seed=3)
    obj = store.put_file("jobs/job-3/outputs/r.bin", tmp_path / "r.bin")
    for offset in (0, 1, 262143, 262144, 262145, len(data) - 1, len(data)):
        assert read_all(store, obj.location, offset, chunk_size=100_000) == data[offset:], offset
    chunks = list(store.read(obj.location, 5, chunk_size=300_000))
    assert b"".join(chunks) == data[5:]
    assert max(len(c) for c in chunks) <= 300_000  # bounded chunks, not one big read


def test_offset_past_end_is_refused(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "small.txt"
    src.write_bytes(b"hello")
    obj = store.put_file("jobs/job-4/small.txt", src)
    with pytest.raises(StorageError, match="past the end"):
        read_all(store, obj.location, offset=6)
    with pytest.raises(StorageError, match="negative offset"):
        read_all(store, obj.location, offset=-1)


def test_overwrite_same_key(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "v"
    src.write_bytes(b"first")
    store.put_file("jobs/job-5/v", src)
    src.write_bytes(b"second version")
    obj = store.put_file("jobs/job-5/v", src)
    assert read_all(store, obj.location) == b"second version"


def test_delete_is_idempotent(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "d.txt"
    src.write_bytes(b"to be deleted")
    obj = store.put_file("jobs/job-6/d.txt", src)
    store.delete(obj.location)
    store.delete(obj.location)  # second time: no error
    if store.kind != "ipfs":  # an unpinned IPFS block stays readable until GC
        with pytest.raises(ObjectNotFound):
            store.size(obj.location)


@pytest.mark.parametrize(
    "key",
    ["../escape", "jobs/../../etc/passwd", "/abs/path", "jobs/./x", "jobs//x", "jobs/x/", "", "a\\b", "a\x00b"],
)
def test_bad_keys_are_refused_everywhere(store: ObjectStore, tmp_path: Path, key: str) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with pytest.raises(StorageError, match="invalid object key"):
        store.put_file(key, src)


def test_missing_source_file(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="file not found") as exc:
        store.put_file("jobs/job-7/x", tmp_path / "nope")
    assert "nope" in str(exc.value)


def test_foreign_location_is_refused(store: ObjectStore) -> None:
    foreign = {"local": "s3://b/k", "s3": "local:jobs/x", "ipfs": "local:jobs/x"}[store.kind]
    with pytest.raises(StorageError, match="location"):
        store.size(foreign)
