"""Store fixtures for the storage tests, on the real servers of testkit/servers.py."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from plumbing.storage import StorageConfig, open_store
from plumbing.storage.base import ObjectStore
from testkit.servers import SeaweedFS


def s3_config(server: SeaweedFS, bucket: str, **overrides) -> StorageConfig:
    values = {
        "kind": "s3",
        "s3_endpoint": server.endpoint,
        "s3_access_key": server.access_key,
        "s3_secret_key": server.secret_key,
        "s3_bucket": bucket,
        "s3_region": "us-east-1",
        "part_size": 5 << 20,
    }
    values.update(overrides)
    return StorageConfig(**values)


def write_random(path: Path, size: int, seed: int = 0) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


@pytest.fixture
def local_store(tmp_path: Path) -> ObjectStore:
    return open_store(StorageConfig(kind="local", local_root=tmp_path / "results"))


@pytest.fixture
def s3_bucket(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.make_bucket("res")


@pytest.fixture
def s3_store(seaweedfs: SeaweedFS, s3_bucket: str) -> ObjectStore:
    return open_store(s3_config(seaweedfs, s3_bucket))


@pytest.fixture
def ipfs_store(ipfs_rpc: str) -> ObjectStore:
    return open_store(StorageConfig(kind="ipfs", ipfs_api=ipfs_rpc))


@pytest.fixture(params=["local", "s3", "ipfs"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue(f"{request.param}_store")
