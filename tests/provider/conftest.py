from collections.abc import AsyncIterator

import pytest

from tests.provider.market import Market, open_market


@pytest.fixture
async def market(data_dir) -> AsyncIterator[Market]:
    """The whole stack on SQLite with the engine's noop backend (no processes)."""
    async with open_market() as opened:
        yield opened
