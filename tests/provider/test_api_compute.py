"""The provider's compute API beyond single refusals: InitializeCompute,
races on orders and balances, job isolation between consumers, and the
dataset's URL never leaving the publisher's side."""

from __future__ import annotations

import asyncio
import glob
import logging
import os
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import ledger_pb2, provider_pb2
from plumbing.grpc_errors import error_code, reason_of
from services.provider.domain import errors as codes
from testkit.market import (
    SECRET_PATH,
    Market,
    assert_refusal,
    open_market,
    refused,
)

RACERS = 50


# -- InitializeCompute ---------------------------------------------------------------------------


async def test_initialize_compute_names_the_datatoken_to_order_for_each_asset(market: Market):
    algorithm = await market.publish_algorithm()
    dataset = await market.publish_dataset(trusted=[market.trust(algorithm)])
    dataset_token = await market.fund(dataset, "compute", market.consumer)
    algorithm_token = await market.fund(algorithm, "access", market.consumer)
    request = provider_pb2.InitializeComputeRequest(spec=market.spec(dataset, "", algorithm, ""))
    response = await market.consumer.compute.InitializeCompute(market.consumer.signed("InitializeCompute", request))
    assert [(o.did, o.service_id, o.datatoken_address, o.amount, o.valid_order_id) for o in response.orders] == [
        (dataset, "compute", dataset_token, 1, ""),
        (algorithm, "access", algorithm_token, 1, ""),
    ]
    # Nothing started: no job, and the balances are untouched.
    jobs = await market.consumer.compute.ListJobs(market.consumer.signed("ListJobs", provider_pb2.ListJobsRequest()))
    assert list(jobs.jobs) == []
    balance = await market.consumer.ledger.GetBalance(
        ledger_pb2.GetBalanceRequest(datatoken_address=dataset_token, address=market.consumer.address)
    )
    assert balance.balance == 1


async def test_initialize_compute_reports_the_valid_orders_a_consumer_holds(market: Market):
    dataset, dataset_order, algorithm, algorithm_order = await market.ready_job()
    request = provider_pb2.InitializeComputeRequest(spec=market.spec(dataset, "", algorithm, ""))
    response = await market.consumer.compute.InitializeCompute(market.consumer.signed("InitializeCompute", request))
    assert [o.valid_order_id for o in response.orders] == [dataset_order, algorithm_order]
    # Once they started a job they are spent, and InitializeCompute says so.
    await market.consumer.start(market.spec(dataset, dataset_order, algorithm, algorithm_order))
    response = await market.consumer.compute.InitializeCompute(market.consumer.signed("InitializeCompute", request))
    assert [o.valid_order_id for o in response.orders] == ["", ""]


async def test_initialize_compute_runs_the_policy_checks(market: Market):
    trusted = await market.publish_algorithm()
    untrusted = await market.publish_algorithm()
    dataset = await market.publish_dataset(trusted=[market.trust(trusted)])
    request = provider_pb2.InitializeComputeRequest(spec=market.spec(dataset, "", untrusted, ""))
    error = await refused(
        market.consumer.compute.InitializeCompute(market.consumer.signed("InitializeCompute", request))
    )
    assert_refusal(error, grpc.StatusCode.PERMISSION_DENIED, codes.NOT_TRUSTED_ALGO, untrusted)


# -- races ---------------------------------------------------------------------------------------------


async def _jobs_of(market: Market) -> list[common_pb2.Job]:
    response = await market.consumer.compute.ListJobs(
        market.consumer.signed("ListJobs", provider_pb2.ListJobsRequest())
    )
    return list(response.jobs)


async def _race_one_request_on_one_order(market: Market) -> None:
    dataset, dataset_order, algorithm, algorithm_order = await market.ready_job()
    spec = market.spec(dataset, dataset_order, algorithm, algorithm_order)
    # 50 signed copies of one request (a client retrying hard): one job, the same for all.
    outcomes = await asyncio.gather(*(market.consumer.start(spec) for _ in range(RACERS)), return_exceptions=True)
    job_ids = {o.job_id for o in outcomes if not isinstance(o, BaseException)}
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(job_ids) == 1, failures[:3]
    assert [j.job_id for j in await _jobs_of(market)] == list(job_ids)


async def _race_different_requests_on_one_order(market: Market) -> None:
    dataset, dataset_order, algorithm, _ = await market.ready_job()
    await market.fund(algorithm, "access", market.consumer, amount=RACERS)
    algorithm_orders = await asyncio.gather(*(market.consumer.order(algorithm, "access") for _ in range(RACERS)))
    # 50 different requests sharing the dataset's order: exactly one job.
    outcomes = await asyncio.gather(
        *(market.consumer.start(market.spec(dataset, dataset_order, algorithm, o)) for o in algorithm_orders),
        return_exceptions=True,
    )
    started = [o for o in outcomes if not isinstance(o, BaseException)]
    refusals = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(started) == 1, refusals[:3]
    assert {error_code(e) for e in refusals} == {reason_of(codes.ORDER_USED)}
    assert [j.job_id for j in await _jobs_of(market)] == [started[0].job_id]


async def _race_orders_on_a_balance(market: Market) -> None:
    dataset = await market.publish_dataset(raw=True)
    token = await market.fund(dataset, "compute", market.consumer, amount=10)
    outcomes = await asyncio.gather(
        *(market.consumer.order(dataset, "compute") for _ in range(RACERS)), return_exceptions=True
    )
    orders = [o for o in outcomes if not isinstance(o, BaseException)]
    refusals = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(orders) == 10 and len(set(orders)) == 10
    assert {error_code(e) for e in refusals} == {reason_of(codes.INSUFFICIENT_BALANCE)}
    balance = await market.consumer.ledger.GetBalance(
        ledger_pb2.GetBalanceRequest(datatoken_address=token, address=market.consumer.address)
    )
    assert balance.balance == 0
    info = await market.consumer.compute.GetProviderInfo(provider_pb2.GetProviderInfoRequest())
    fees = await market.consumer.ledger.GetBalance(
        ledger_pb2.GetBalanceRequest(datatoken_address=token, address=info.fee_address)
    )
    assert fees.balance == 10


RACES = [_race_one_request_on_one_order, _race_different_requests_on_one_order, _race_orders_on_a_balance]


@pytest.mark.parametrize("race", RACES, ids=lambda r: r.__name__.lstrip("_"))
async def test_races_on_sqlite(data_dir, race):
    async with open_market() as market:
        await race(market)


@pytest.mark.parametrize("race", RACES, ids=lambda r: r.__name__.lstrip("_"))
async def test_races_on_postgresql(data_dir, postgres_url, race):
    async with open_market(postgres_url) as market:
        await race(market)


# -- isolation ----------------------------------------------------------------------------------------------


async def test_a_consumer_cannot_reach_another_consumers_job(market: Market):
    job_id = await market.start_job()
    await market.finished(job_id)
    stranger = market.other
    unknown = "2b7e1516-28ae-4d2a-a6d2-1fdd2f2a8f3c"
    calls = {
        "GetJobDetails": lambda j: stranger.compute.GetJobDetails(
            stranger.signed("GetJobDetails", provider_pb2.GetJobDetailsRequest(job_id=j))
        ),
        "StopCompute": lambda j: stranger.compute.StopCompute(
            stranger.signed("StopCompute", provider_pb2.StopComputeRequest(job_id=j))
        ),
        "DeleteCompute": lambda j: stranger.compute.DeleteCompute(
            stranger.signed("DeleteCompute", provider_pb2.DeleteComputeRequest(job_id=j))
        ),
        "WatchJob": lambda j: _drain(
            stranger.compute.WatchJob(stranger.signed("WatchJob", provider_pb2.WatchJobRequest(job_id=j)))
        ),
        "GetComputeResult": lambda j: _drain(
            stranger.compute.GetComputeResult(
                stranger.signed("GetComputeResult", provider_pb2.GetComputeResultRequest(job_id=j, index=0))
            )
        ),
        "StreamJobLogs": lambda j: _drain(
            stranger.compute.StreamJobLogs(
                stranger.signed("StreamJobLogs", provider_pb2.StreamJobLogsRequest(job_id=j))
            )
        ),
    }
    for method, call in calls.items():
        theirs, missing = await refused(call(job_id)), await refused(call(unknown))
        # The same answer as for a job that does not exist: no probing.
        assert theirs.code() == missing.code() == grpc.StatusCode.NOT_FOUND, method
        assert error_code(theirs) == error_code(missing) == "JOB_NOT_FOUND", method
        assert theirs.details().replace(job_id, unknown) == missing.details(), method
    jobs = await stranger.compute.ListJobs(stranger.signed("ListJobs", provider_pb2.ListJobsRequest()))
    assert list(jobs.jobs) == []
    # The owner's job is intact.
    assert (await market.consumer.details(job_id)).job.status == 70


async def _drain(call) -> None:  # type: ignore[no-untyped-def]
    async for _ in call:
        pass


async def test_a_viewer_reads_and_watches_but_the_owner_alone_deletes(market: Market):
    job_id = await market.start_job(viewers=[market.other.address])
    job = await market.finished(job_id, market.other)
    assert job.status == 70
    assert (await market.other.details(job_id)).job.owner == market.consumer.address
    delete = provider_pb2.DeleteComputeRequest(job_id=job_id)
    error = await refused(market.other.compute.DeleteCompute(market.other.signed("DeleteCompute", delete)))
    assert error_code(error) == reason_of(codes.NOT_OWNER)
    await market.consumer.compute.DeleteCompute(market.consumer.signed("DeleteCompute", delete))
    assert (await refused(market.other.details(job_id))).code() == grpc.StatusCode.NOT_FOUND


async def test_a_finished_jobs_cached_details_are_still_checked_on_each_read(market: Market):
    job_id = await market.start_job(viewers=[market.other.address])
    await market.finished(job_id)
    first = await market.consumer.details(job_id)  # the finished job's answer is now cached
    assert (await market.consumer.details(job_id)) == first
    assert (await market.other.details(job_id)) == first  # a viewer named by the owner
    stranger = market.publisher
    error = await refused(stranger.details(job_id))
    assert error.code() == grpc.StatusCode.NOT_FOUND and error_code(error) == "JOB_NOT_FOUND"
    # Signature and nonce too: a replayed read of the cached job is refused.
    request = market.consumer.signed("GetJobDetails", provider_pb2.GetJobDetailsRequest(job_id=job_id))
    await market.consumer.compute.GetJobDetails(request)
    assert error_code(await refused(market.consumer.compute.GetJobDetails(request))) == reason_of(codes.NONCE_INVALID)


# -- the dataset's URL stays with the publisher ------------------------------------------------------------


async def test_dataset_urls_never_appear_in_responses_or_logs(data_dir, caplog):
    caplog.set_level(logging.DEBUG)
    async with open_market(backend="local") as market:
        port = market.base_url.rsplit(":", 1)[1]
        secrets = [SECRET_PATH, market.base_url, f"127.0.0.1:{port}"]
        seen: list[str] = []

        def expose(message) -> None:  # type: ignore[no-untyped-def]
            seen.append(json_format.MessageToJson(message) if hasattr(message, "DESCRIPTOR") else str(message))

        dataset, dataset_order, algorithm, algorithm_order = await market.ready_job()
        from c2d.provider.v1 import asset_pb2

        expose(await market.consumer.assets.GetAsset(asset_pb2.GetAssetRequest(did=dataset)))
        listed = await market.consumer.assets.ListAssets(asset_pb2.ListAssetsRequest())
        expose(listed)
        spec = market.spec(dataset, dataset_order, algorithm, algorithm_order)
        initialized = await market.consumer.compute.InitializeCompute(
            market.consumer.signed("InitializeCompute", provider_pb2.InitializeComputeRequest(spec=spec))
        )
        expose(initialized)
        started = await market.consumer.start(spec)
        expose(started)
        async for job in market.consumer.watch(started.job_id):
            expose(job)
        details = await market.consumer.details(started.job_id)
        assert details.job.status == 70, details.job.error_message
        expose(details)
        expose(
            await market.consumer.compute.ListJobs(market.consumer.signed("ListJobs", provider_pb2.ListJobsRequest()))
        )
        logs = provider_pb2.StreamJobLogsRequest(job_id=started.job_id)
        async for chunk in market.consumer.compute.StreamJobLogs(market.consumer.signed("StreamJobLogs", logs)):
            expose(chunk.data)

        # A dataset whose file is gone: the failure must not name where it was.
        missing = await market.publish_dataset(trusted=[market.trust(algorithm)])
        from testkit import market as market_module

        market_module._Files.files.pop(SECRET_PATH)
        try:
            job_id = (
                await market.consumer.start(
                    market.spec(
                        missing,
                        await market.buy(missing, "compute"),
                        algorithm,
                        await market.buy(algorithm, "access"),
                    )
                )
            ).job_id
            failed = await market.finished(job_id)
        finally:
            from cli import demo

            market_module._Files.files[SECRET_PATH] = demo.CSV.encode()
        assert failed.status == 31, (failed.status, failed.error_message)
        expose(failed)
        expose(await market.consumer.details(job_id))
        # A refusal (the dataset's order was used) does not show it either.
        used = await refused(
            market.consumer.start(market.spec(dataset, dataset_order, algorithm, await market.buy(algorithm, "access")))
        )
        assert error_code(used) == reason_of(codes.ORDER_USED)
        expose(used.details())

        admin_logs = glob.glob(os.path.join(data_dir, "workspaces", "*", "admin", "*.log"))
        assert admin_logs, "the jobs' admin logs were not kept"
        for path in admin_logs:
            expose(f"{path}: " + Path(path).read_text(encoding="utf-8", errors="replace"))

    records = [f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    assert records, "the stack logged nothing at DEBUG"
    for secret in secrets:
        leaks = [text[:300] for text in [*seen, *records] if secret in text]
        assert leaks == [], secret
