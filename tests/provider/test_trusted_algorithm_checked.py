"""A trusted algorithm's filesChecksum is checked at InitializeCompute, before
the consumer pays, as Ocean's provider does: the provider fetches the
algorithm's files with pod_config's fetchers (plumbing/fetching.py), under
the same SSRF guard, and refuses files that are not the ones a dataset
trusts. pod_config checks them again at staging; a job refused there (32)
gives its orders back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from cli import demo
from plumbing.statuses import Status
from testkit.market import Market, assert_refusal, open_market, refused
from tests.pod_config.httpserver import FileServer

TRUSTED = demo.ALGORITHM
TAMPERED = demo.ALGORITHM + "\nimport os; print(open('/data/inputs/' + os.listdir('/data/inputs')[0]).read())\n"


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    server = await FileServer().start()
    yield server
    await server.stop()


async def trusted_pair(market: Market, algorithm_url: str) -> tuple[str, str]:
    """An algorithm served at `algorithm_url`, and a dataset that trusts TRUSTED as its files."""
    algorithm = await market.publish_algorithm(TRUSTED, file_url=algorithm_url)
    return await market.publish_dataset(trusted=[market.trust(algorithm, TRUSTED)]), algorithm


async def test_an_algorithm_whose_file_was_swapped_is_refused_before_the_consumer_pays(
    data_dir, market: Market, files: FileServer
):
    files.add("algo.py", TRUSTED.encode())
    dataset, algorithm = await trusted_pair(market, files.url("/file/algo.py"))
    files.add("algo.py", TAMPERED.encode())  # the publisher swaps the file after it was trusted
    error = await refused(market.consumer.initialize(market.spec(dataset, "", algorithm)))
    assert_refusal(
        error, grpc.StatusCode.FAILED_PRECONDITION, "algorithm_checksum_mismatch", algorithm, "not the ones the dataset"
    )
    assert "/file/" not in error.details() and "127.0.0.1" not in error.details()
    assert files.counts["/file/algo.py"] == 1

    files.add("algo.py", TRUSTED.encode())  # put back: the refusal was not remembered past the cache
    async with open_market(algorithm_check_cache_s=0.0) as fresh:
        dataset, algorithm = await trusted_pair(fresh, files.url("/file/algo.py"))
        assert [o.did for o in await fresh.consumer.initialize(fresh.spec(dataset, "", algorithm))] == [
            dataset,
            algorithm,
        ]
        files.add("algo.py", TAMPERED.encode())
        error = await refused(fresh.consumer.initialize(fresh.spec(dataset, "", algorithm)))
        assert_refusal(error, grpc.StatusCode.FAILED_PRECONDITION, "algorithm_checksum_mismatch", algorithm)


async def test_a_checked_algorithm_is_fetched_once_for_repeated_initializations(
    data_dir, market: Market, files: FileServer
):
    files.add("algo.py", TRUSTED.encode())
    dataset, algorithm = await trusted_pair(market, files.url("/file/algo.py"))
    for _ in range(5):
        await market.consumer.initialize(market.spec(dataset, "", algorithm))
    assert files.counts["/file/algo.py"] == 1


async def test_an_unreachable_algorithm_is_refused_with_the_cause_and_without_its_location(
    data_dir, market: Market, files: FileServer
):
    dataset, algorithm = await trusted_pair(market, files.url("/status/404"))
    error = await refused(market.consumer.initialize(market.spec(dataset, "", algorithm)))
    assert_refusal(error, grpc.StatusCode.FAILED_PRECONDITION, "algorithm_files_unreachable", algorithm, "HTTP 404")
    assert "/status/" not in error.details() and "127.0.0.1" not in error.details()


async def test_an_algorithm_swapped_after_initialize_fails_at_staging_and_gives_the_orders_back(
    data_dir, postgres_url, files: FileServer
):
    files.add("algo.py", TRUSTED.encode())
    async with open_market(postgres_url, backend="local") as market:
        dataset, algorithm = await trusted_pair(market, files.url("/file/algo.py"))
        await market.consumer.initialize(market.spec(dataset, "", algorithm))
        spec = market.spec(
            dataset, await market.buy(dataset, "compute"), algorithm, await market.buy(algorithm, "access")
        )
        files.add("algo.py", TAMPERED.encode())
        first = await market.consumer.start(spec)
        failed = await market.finished(first.job_id)
        assert failed.status == Status.ALGORITHM_PROVISIONING_FAILED and failed.error_code == "checksum_mismatch"
        assert failed.orders_released

        files.add("algo.py", TRUSTED.encode())  # the publisher puts the trusted file back
        second = await market.consumer.start(spec)
        assert second.job_id != first.job_id
        assert (await market.finished(second.job_id)).status == Status.FINISHED
