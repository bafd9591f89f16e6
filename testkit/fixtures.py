"""The pytest fixtures over testkit's servers and stacks (a plugin: tests/conftest.py loads it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from testkit import grpc_servers
from testkit.market import Market, open_market
from testkit.servers import KuboRPC, SeaweedFS, run_kubo_rpc, run_seaweedfs
from testkit.stacks import EmptiedDatabases

grpc_servers.track()


@pytest.fixture(autouse=True)
def no_grpc_server_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A gRPC server a test left serving past its event loop fails that test
    (freeing it later would hang the whole run at exit)."""
    yield
    orphans = grpc_servers.orphans()
    if orphans:
        grpc_servers.keep(orphans)
        pytest.fail(
            f"{request.node.nodeid} left {len(orphans)} gRPC server(s) serving after its event loop closed: "
            "stop each one (await server.stop(grace)) before the test's loop ends",
            pytrace=False,
        )


@pytest.fixture(scope="session", autouse=True)
def own_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A data directory per test process unless the run names one: parallel
    workers must not share the user's (one SQLite database, one results tree)."""
    with pytest.MonkeyPatch.context() as patch:
        if "C2D_DATA_DIR" not in os.environ:
            patch.setenv("C2D_DATA_DIR", str(tmp_path_factory.mktemp("c2d-data")))
        yield


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


@contextlib.contextmanager
def c2d_data_dir(path: Path) -> Iterator[str]:
    """The environment of a stack whose data lives at path, restored afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("C2D_DATA_DIR", str(path))
        patch.delenv("C2D_SERVICE_TOKEN", raising=False)
        # Test files are served from 127.0.0.1, which pod_config refuses by default.
        patch.setenv("C2D_STAGING_ALLOW_HOSTS", "127.0.0.1")
        yield str(path)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[str]:
    with c2d_data_dir(tmp_path / "c2d") as path:
        yield path


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[EmptiedDatabases]:
    databases = EmptiedDatabases()
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def postgres_url(postgres_databases: EmptiedDatabases) -> Iterator[str]:
    """An empty PostgreSQL database of its own (one an earlier test of this process emptied)."""
    with postgres_databases.database() as url:
        yield url


@pytest.fixture
async def market(data_dir) -> AsyncIterator[Market]:
    """The whole stack on SQLite with the engine's noop backend (no processes)."""
    async with open_market() as opened:
        yield opened


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_market(tmp_path_factory) -> AsyncIterator[Market]:
    """One market for a whole module, for tests that each publish assets of
    their own and mostly send requests the provider refuses (the module's tests
    run on the module's event loop: pytest.mark.asyncio(loop_scope="module"))."""
    with c2d_data_dir(tmp_path_factory.mktemp("c2d")):
        async with open_market() as opened:
            yield opened
