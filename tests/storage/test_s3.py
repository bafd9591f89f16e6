"""S3 backend against a real SeaweedFS (`weed mini`), which checks request signatures."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from plumbing.storage import (
    ObjectNotFound,
    S3Store,
    StorageConfig,
    StorageError,
    download_s3,
    open_store,
)
from testkit.servers import SeaweedFS, free_ports
from tests.storage.conftest import s3_config, write_random

PART = 5 << 20  # S3's minimum part size: the most parts for the bytes sent


def make_sparse(path: Path, size: int, markers: dict[int, bytes]) -> None:
    """A sparse file (holes read as zeros) with a few marker bytes, so a part
    stored out of order or at the wrong offset changes the hash."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in markers.items():
            f.seek(offset)
            f.write(data)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def test_content_types(seaweedfs: SeaweedFS, s3_bucket: str, s3_store: S3Store, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"{}")
    client = seaweedfs.client()
    cases = {
        "jobs/j/result.json": (None, "application/json"),
        "jobs/j/plot.png": (None, "image/png"),
        "jobs/j/no-extension": (None, "application/octet-stream"),
        "jobs/j/table.dat": ("text/csv", "text/csv"),
    }
    for key, (given, expected) in cases.items():
        s3_store.put_file(key, src, content_type=given)
        assert client.stat_object(s3_bucket, key).content_type == expected, key


def test_large_sparse_file_multipart(seaweedfs: SeaweedFS, s3_bucket: str, s3_store: S3Store, tmp_path: Path) -> None:
    size = 200 << 20
    big = tmp_path / "big.bin"
    dest = tmp_path / "dl" / "big.bin"
    markers = {0: b"start", PART - 1: b"|edge|", 17 * PART + 3: b"middle", size - 4: b"end!"}
    make_sparse(big, size, markers)
    try:
        obj = s3_store.put_file("jobs/big/outputs/big.bin", big)
        assert obj.size == size
        assert obj.sha256 == sha256_file(big)
        stat = seaweedfs.client().stat_object(s3_bucket, "jobs/big/outputs/big.bin")
        assert stat.size == size
        # a multipart ETag is "<md5 of part md5s>-<part count>"
        assert stat.etag.endswith(f"-{size // PART}"), stat.etag
        # ranged reads land on the right bytes across part boundaries
        tail = b"".join(s3_store.read(obj.location, offset=size - 10))
        assert tail == b"\0" * 6 + b"end!"
        edge = next(iter(s3_store.read(obj.location, offset=PART - 1, chunk_size=6)))
        assert edge == b"|edge|"
        mid = b"".join(s3_store.read(obj.location, offset=17 * PART))
        assert mid[:9] == b"\0\0\0middle" and len(mid) == size - 17 * PART
        # and the whole object downloads to the same hash, in bounded memory
        config = s3_config(seaweedfs, s3_bucket)
        assert download_s3(config, s3_bucket, "jobs/big/outputs/big.bin", dest, None) == (size, obj.sha256)
        assert s3_store.delete_prefix("jobs/big/") == 1
    finally:
        # pytest keeps recent tmp dirs: do not leave 200 MiB of real zeros behind
        big.unlink(missing_ok=True)
        dest.unlink(missing_ok=True)


def test_failed_multipart_upload_is_aborted(
    seaweedfs: SeaweedFS, s3_bucket: str, s3_store: S3Store, tmp_path: Path
) -> None:
    size = 1 << 30  # sparse, and cut short early: a wide window for the watcher, little I/O
    src = tmp_path / "shrinking.bin"
    make_sparse(src, size, {0: b"x"})
    client = seaweedfs.client()
    key = "jobs/abort/outputs/shrinking.bin"
    truncated = threading.Event()

    def shrink_once_multipart_started() -> None:
        # deterministic failure: wait until the server holds an open
        # multipart upload for our key, then cut the source file short
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            uploads = client._list_multipart_uploads(s3_bucket, prefix=key).uploads
            if uploads:
                with open(src, "r+b") as f:
                    f.truncate(PART + 1)
                truncated.set()
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=shrink_once_multipart_started, daemon=True)
    watcher.start()
    try:
        with pytest.raises(StorageError, match="changed size while being uploaded") as exc:
            s3_store.put_file(key, src)
    finally:
        watcher.join()
    assert truncated.is_set()
    assert key in str(exc.value)
    # no object, and no half-finished multipart upload left behind
    with pytest.raises(ObjectNotFound):
        s3_store.size(f"s3://{s3_bucket}/{key}")
    assert client._list_multipart_uploads(s3_bucket, prefix=key).uploads == []


def test_wrong_secret_key(seaweedfs: SeaweedFS, s3_bucket: str, tmp_path: Path) -> None:
    wrong = "not-the-secret-" + "x" * 20
    store = open_store(s3_config(seaweedfs, s3_bucket, s3_secret_key=wrong))
    src = tmp_path / "f.txt"
    src.write_bytes(b"x")
    with pytest.raises(StorageError) as exc:
        store.put_file("jobs/j/f.txt", src)
    message = str(exc.value)
    assert "refused the credentials" in message and "SignatureDoesNotMatch" in message
    assert "secret key is wrong" in message and "jobs/j/f.txt" in message
    assert wrong not in message and seaweedfs.secret_key not in message
    assert exc.value.transient is False


def test_unknown_access_key(seaweedfs: SeaweedFS, s3_bucket: str, tmp_path: Path) -> None:
    store = open_store(s3_config(seaweedfs, s3_bucket, s3_access_key="nobody"))
    src = tmp_path / "f.txt"
    src.write_bytes(b"x")
    with pytest.raises(StorageError, match="InvalidAccessKeyId") as exc:
        store.put_file("jobs/j/f.txt", src)
    assert "access key is unknown" in str(exc.value)
    with pytest.raises(StorageError, match="refused the credentials"):
        download_s3(s3_config(seaweedfs, s3_bucket, s3_access_key="nobody"), s3_bucket, "k", tmp_path / "d", None)


def test_missing_bucket_is_an_error_not_created(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    bucket = "no-such-bucket-c2d"
    store = open_store(s3_config(seaweedfs, bucket))
    src = tmp_path / "f.txt"
    src.write_bytes(b"x")
    with pytest.raises(StorageError, match=f"bucket '{bucket}' does not exist"):
        store.put_file("jobs/j/f.txt", src)
    assert not seaweedfs.client().bucket_exists(bucket)
    with pytest.raises(StorageError, match="does not exist"):
        store.delete_prefix("jobs/")


def test_unreachable_endpoint_is_transient(tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nothing listens there
    store = open_store(
        StorageConfig(
            kind="s3",
            s3_endpoint=f"127.0.0.1:{port}",
            s3_access_key="a",
            s3_secret_key="b",
            s3_bucket="bucket",
            s3_region="us-east-1",
        )
    )
    src = tmp_path / "f"
    src.write_bytes(b"x")
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach S3") as exc:
        store.put_file("k", src)
    assert exc.value.transient is True
    assert time.monotonic() - started < 10


def test_delete_prefix(s3_store: S3Store, s3_bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    for key in ("jobs/a/1", "jobs/a/sub/2", "jobs/ab/3", "jobs/b/4"):
        s3_store.put_file(key, src)
    assert s3_store.delete_prefix("jobs/a/") == 2
    assert s3_store.size(f"s3://{s3_bucket}/jobs/ab/3") == 1
    assert s3_store.delete_prefix("jobs/a/") == 0
    assert s3_store.delete_prefix("jobs/") == 2
    with pytest.raises(StorageError, match="empty key prefix"):
        s3_store.delete_prefix("")


def test_missing_object(s3_store: S3Store, s3_bucket: str) -> None:
    with pytest.raises(ObjectNotFound, match="no object at s3://"):
        s3_store.size(f"s3://{s3_bucket}/jobs/none")
    with pytest.raises(ObjectNotFound):
        list(s3_store.read(f"s3://{s3_bucket}/jobs/none"))
    s3_store.delete(f"s3://{s3_bucket}/jobs/none")  # idempotent
    with pytest.raises(StorageError, match="must be s3://bucket/key"):
        s3_store.size("s3://just-a-bucket")


def test_download_s3_limits_and_errors(seaweedfs: SeaweedFS, s3_bucket: str, s3_store: S3Store, tmp_path: Path) -> None:
    data = write_random(tmp_path / "in.bin", 3 << 20, seed=9)
    s3_store.put_file("datasets/in.bin", tmp_path / "in.bin")
    config = s3_config(seaweedfs, s3_bucket)
    dest = tmp_path / "inputs" / "0"
    assert download_s3(config, s3_bucket, "datasets/in.bin", dest, 3 << 20) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
    )
    assert dest.read_bytes() == data
    over = tmp_path / "inputs" / "1"
    with pytest.raises(StorageError, match="over the limit"):
        download_s3(config, s3_bucket, "datasets/in.bin", over, (3 << 20) - 1)
    assert not over.exists() and sorted(p.name for p in over.parent.iterdir()) == ["0"]
    with pytest.raises(ObjectNotFound):
        download_s3(config, s3_bucket, "datasets/missing", tmp_path / "inputs" / "2", None)
    with pytest.raises(StorageError, match="does not exist"):
        download_s3(config, "no-such-bucket-c2d", "x", tmp_path / "inputs" / "3", None)
    assert sorted(p.name for p in over.parent.iterdir()) == ["0"]  # no temp files left
