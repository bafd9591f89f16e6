"""The pytest fixtures over testkit's servers and stacks (a plugin: tests/conftest.py loads it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.servers import KuboRPC, SeaweedFS, run_kubo_rpc, run_seaweedfs
from testkit.stacks import fresh_postgres_database


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with run_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def ipfs_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KuboRPC]:
    """The IPFS RPC front with its details (pid, repo, startup time)."""
    with run_kubo_rpc(tmp_path_factory.mktemp("ipfs")) as node:
        yield node


@pytest.fixture(scope="session")
def ipfs_rpc(ipfs_node: KuboRPC) -> str:
    """Base URL of a Kubo-RPC-compatible API on 127.0.0.1, e.g. http://127.0.0.1:40123."""
    return ipfs_node.url


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Iterator[str]:
    path = tmp_path / "c2d"
    monkeypatch.setenv("C2D_DATA_DIR", str(path))
    monkeypatch.delenv("C2D_SERVICE_TOKEN", raising=False)
    # Test files are served from 127.0.0.1, which pod_config refuses by default.
    monkeypatch.setenv("C2D_STAGING_ALLOW_HOSTS", "127.0.0.1")
    yield str(path)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url
