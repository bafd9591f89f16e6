"""Paying only for work done, through the real provider, operator-service and
engine (local backend, real sandbox) on PostgreSQL.

A job that ends before its algorithm starts, for a reason the consumer did
not cause, releases its orders: the next StartCompute with them starts a new
job. A job the consumer stopped, or whose algorithm ran, keeps them spent: a
retry returns that job.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import provider_pb2
from cli import demo
from plumbing.statuses import EndReason, Status, releases_orders
from testkit.market import Market, open_market
from tests.pod_config.httpserver import FileServer

RELEASED = "orders released: a new StartCompute with the same orders starts a new job"


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    server = FileServer()
    server.add("weather.csv", demo.CSV.encode())
    await server.start()
    yield server
    await server.stop()


async def ordered_spec(market: Market, dataset_url: str = "", code: str = demo.ALGORITHM) -> provider_pb2.ComputeSpec:
    algorithm = await market.publish_algorithm(code)
    dataset = await market.publish_dataset(trusted=[market.trust(algorithm, code)], file_url=dataset_url)
    return market.spec(dataset, await market.buy(dataset, "compute"), algorithm, await market.buy(algorithm, "access"))


async def test_a_publisher_outage_releases_the_orders_and_the_retry_starts_a_new_job(
    data_dir, postgres_url, files: FileServer
):
    async with open_market(postgres_url, backend="local") as market:
        spec = await ordered_spec(market, files.url("/file/weather.csv"))
        await files.stop()  # the publisher's file server is down
        first = await market.consumer.start(spec)
        failed = await market.finished(first.job_id)
        assert failed.status == Status.DATA_PROVISIONING_FAILED, failed
        assert failed.end_reason == common_pb2.END_REASON_FAILED
        assert failed.orders_released
        assert failed.error_message.endswith(RELEASED), failed.error_message
        assert not failed.HasField("algorithm_outcome")

        await files.start()  # back, on the same address
        second = await market.consumer.start(spec)
        assert second.job_id != first.job_id, "the released orders started a new job"
        done = await market.finished(second.job_id)
        assert done.status == Status.FINISHED and done.end_reason == common_pb2.END_REASON_COMPLETED, done
        assert not done.orders_released
        assert files.counts["/file/weather.csv"] >= 1

        # The orders paid for that job: a retry now returns it, and the old job still says why it let them go.
        third = await market.consumer.start(spec)
        assert third.job_id == second.job_id
        old = (await market.consumer.details(first.job_id)).job
        assert old.orders_released and old.error_message.endswith(RELEASED)


async def test_a_job_whose_algorithm_failed_keeps_its_orders(data_dir, postgres_url):
    async with open_market(postgres_url, backend="local") as market:
        spec = await ordered_spec(market, code="import sys\nsys.exit(3)\n")
        first = await market.consumer.start(spec)
        failed = await market.finished(first.job_id)
        assert failed.status == Status.ALGORITHM_FAILED, failed
        assert not failed.orders_released
        assert RELEASED not in failed.error_message
        again = await market.consumer.start(spec)
        assert again.job_id == first.job_id


async def test_a_job_its_owner_stopped_keeps_its_orders(data_dir, postgres_url):
    async with open_market(postgres_url, backend="local") as market:
        spec = await ordered_spec(market, code="import time\ntime.sleep(60)\n")
        first = await market.consumer.start(spec)
        await market.consumer.stop(first.job_id)
        stopped = await market.finished(first.job_id)
        assert stopped.status == Status.FINISHED and stopped.end_reason == common_pb2.END_REASON_STOPPED, stopped
        assert not stopped.orders_released
        again = await market.consumer.start(spec)
        assert again.job_id == first.job_id


async def test_a_job_that_expired_in_its_queue_releases_its_orders(data_dir, postgres_url):
    engine = {"max_jobs": 1, "queue_timeout_s": 1.0}
    async with open_market(postgres_url, backend="local", engine=engine) as market:
        blocker = await market.consumer.start(await ordered_spec(market, code="import time\ntime.sleep(60)\n"))
        spec = await ordered_spec(market)
        queued = await market.consumer.start(spec)
        expired = await market.finished(queued.job_id)
        assert expired.status == Status.FINISHED, expired
        assert expired.end_reason == common_pb2.END_REASON_EXPIRED_IN_QUEUE
        assert expired.orders_released and expired.error_message.endswith(RELEASED)
        await market.consumer.stop(blocker.job_id)
        await asyncio.wait_for(market.finished(blocker.job_id), 30)
        retried = await market.consumer.start(spec)
        assert retried.job_id != queued.job_id
        assert (await market.finished(retried.job_id)).status == Status.FINISHED


# (status, end reason, error code, algorithm ran, raw algorithm) -> orders released
RULES = [
    ((31, EndReason.FAILED, "dataset_fetch_failed", False, False), True),
    ((31, EndReason.TIMED_OUT, "configure_timed_out", False, True), True),
    ((32, EndReason.FAILED, "checksum_mismatch", False, False), True),
    ((32, EndReason.FAILED, "file_too_large", False, True), False),  # the consumer's own raw code
    ((70, EndReason.EXPIRED_IN_QUEUE, "expired_in_queue", False, False), True),
    ((70, EndReason.FAILED, "engine_error", False, False), True),
    ((70, EndReason.FAILED, "engine_error", True, False), False),  # the algorithm had run
    ((70, EndReason.FAILED, "entrypoint_invalid", False, True), False),  # the engine refused the consumer's container
    ((70, EndReason.STOPPED, "stopped", False, False), False),
    ((70, EndReason.COMPLETED, "", True, False), False),
    ((41, EndReason.FAILED, "engine_restarted", False, False), False),  # it was running
    ((41, EndReason.FAILED, "algorithm_failed", True, False), False),
    ((42, EndReason.FAILED, "disk_quota_exceeded", False, False), False),
    ((62, EndReason.FAILED, "publish_crashed", True, False), False),
    ((20, EndReason.NONE, "", False, False), False),  # not ended
]


@pytest.mark.parametrize(("facts", "released"), RULES)
def test_which_endings_release_the_orders(facts, released):
    assert releases_orders(*facts) is released
