from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from testkit.fixtures import c2d_data_dir
from testkit.market import Market, open_market


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
