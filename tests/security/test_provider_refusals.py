"""The provider's refusals: a consumer or publisher asks for what they may not have.

The attack: a request the provider must refuse: an asset, service,
algorithm or environment that is not what it claims, a consumer the
dataset's policy denies, an algorithm the dataset does not trust or whose
container or files changed, raw code or the network where the dataset
allows neither, parameters outside the algorithm's DDO, someone else's or a
spent, expired or unpaid order, a replayed, tampered or misdirected
signature, and another account's asset, datatoken or job.

The guarantee: every refusal of the provider, through real gRPC on a running
stack: the status, the stable code in the status details and a message a
person can act on; and nothing started, paid or changed.

The tests share one stack (each publishes and buys what it uses); the two that
change the stack itself (another backend, a stopped engine) open their own."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import asset_pb2, ledger_pb2, provider_pb2
from plumbing.grpc_errors import bad_request_fields, error_code, reason_of
from services.provider.domain import errors as codes
from testkit.market import (
    CONTAINER,
    PARAMETERS,
    WAIT_S,
    Market,
    assert_refusal,
    open_market,
    refused,
)

RAW = provider_pb2.RawAlgorithm(
    code="print(1)", container=common_pb2.AlgorithmContainer(entrypoint="python3 $ALGO", image="python", tag="3.11")
)
DENIED = grpc.StatusCode.PERMISSION_DENIED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def market(module_market: Market) -> Market:
    return module_market


async def test_a_job_starts_when_every_check_passes(market: Market):
    job_id = await market.start_job()
    job = await market.finished(job_id)
    assert job.status == 70


# -- assets and services ---------------------------------------------------------------------


async def test_unknown_did_is_did_not_found(market: Market):
    unknown = "did:op:" + "0" * 64
    error = await refused(market.consumer.start(market.spec(unknown, "0x01", raw_algorithm=RAW)))
    assert_refusal(error, grpc.StatusCode.NOT_FOUND, codes.DID_NOT_FOUND, unknown, "not published")


async def test_malformed_did_is_did_invalid(market: Market):
    error = await refused(market.consumer.start(market.spec("did:op:nope", "0x01", raw_algorithm=RAW)))
    assert_refusal(error, grpc.StatusCode.INVALID_ARGUMENT, codes.DID_INVALID, "did:op:")


async def test_an_access_service_is_not_a_compute_service(market: Market):
    access = {
        "id": "download",
        "type": "access",
        "timeout": 3600,
        "serviceEndpoint": "grpc://127.0.0.1:50051",
        "datatokenAddress": "0x" + "ab" * 20,
    }
    dataset = await market.publish_dataset(raw=True, extra_services=[access])
    spec = market.spec(dataset, "0x01", raw_algorithm=RAW)
    spec.dataset.service_id = "download"
    error = await refused(market.consumer.start(spec))
    assert_refusal(error, PRECONDITION, codes.NOT_COMPUTE_SERVICE, "'download'", "compute service")


async def test_an_unknown_service_is_service_not_found(market: Market):
    dataset = await market.publish_dataset(raw=True)
    spec = market.spec(dataset, "0x01", raw_algorithm=RAW)
    spec.dataset.service_id = "nope"
    error = await refused(market.consumer.start(spec))
    assert_refusal(error, grpc.StatusCode.NOT_FOUND, codes.SERVICE_NOT_FOUND, "'nope'", "'compute'")


async def test_a_dataset_used_as_the_algorithm_is_not_algorithm(market: Market):
    dataset = await market.publish_dataset()
    other = await market.publish_dataset()
    spec = market.spec(dataset, "0x01", other, "0x02")
    spec.algorithm_asset.service_id = "compute"
    error = await refused(market.consumer.start(spec))
    assert_refusal(error, PRECONDITION, codes.NOT_ALGORITHM, other, "not an algorithm")


async def test_an_algorithm_used_as_the_dataset_is_refused(market: Market):
    algorithm = await market.publish_algorithm()
    spec = market.spec(algorithm, "0x01", raw_algorithm=RAW)
    spec.dataset.service_id = "access"
    error = await refused(market.consumer.start(spec))
    assert_refusal(error, PRECONDITION, codes.DATASET_IS_ALGORITHM, algorithm, "pass it as the algorithm")


# -- the request's own fields ----------------------------------------------------------------------


async def test_a_mistake_in_a_request_field_names_that_field_in_a_bad_request_detail(market: Market):
    dataset, dataset_order, algorithm, algorithm_order = await market.ready_job()
    no_environment = market.spec(dataset, dataset_order, algorithm, algorithm_order, environment_id="")
    too_long = market.spec(dataset, dataset_order, algorithm, algorithm_order, max_duration_seconds=10**9)
    cases = {
        "spec.environment_id": ("ENVIRONMENT_MISSING", market.consumer.start(no_environment)),
        "spec.max_duration_seconds": ("DURATION_TOO_LONG", market.consumer.start(too_long)),
        "page_size": (
            "PAGE_SIZE_INVALID",
            market.consumer.assets.ListAssets(asset_pb2.ListAssetsRequest(page_size=100_000)),
        ),
    }
    for field, (reason, call) in cases.items():
        error = await refused(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
        assert error_code(error) == reason, field
        assert bad_request_fields(error) == [field]


# -- credentials and the dataset's policy ------------------------------------------------------


async def test_a_consumer_on_the_deny_list_is_credentials_denied(market: Market):
    dataset = await market.publish_dataset(
        raw=True, credentials={"deny": [{"type": "address", "values": [market.consumer.address]}]}
    )
    error = await refused(market.consumer.start(market.spec(dataset, "0x01", raw_algorithm=RAW)))
    assert_refusal(error, DENIED, codes.CREDENTIALS_DENIED, market.consumer.address, "deny list")
    # Someone else still passes this check (and stops at the missing order).
    error = await refused(market.other.start(market.spec(dataset, "", raw_algorithm=RAW)))
    assert error_code(error) == reason_of(codes.ORDER_MISSING)


async def test_a_consumer_missing_from_the_allow_list_is_credentials_denied(market: Market):
    dataset = await market.publish_dataset(
        raw=True, credentials={"allow": [{"type": "address", "values": [market.other.address]}]}
    )
    error = await refused(market.consumer.start(market.spec(dataset, "0x01", raw_algorithm=RAW)))
    assert_refusal(error, DENIED, codes.CREDENTIALS_DENIED, market.consumer.address, "allow list", "ask its publisher")
    error = await refused(market.other.start(market.spec(dataset, "", raw_algorithm=RAW)))
    assert error_code(error) == reason_of(codes.ORDER_MISSING)


async def test_an_algorithm_the_dataset_does_not_list_is_not_trusted_algo(market: Market):
    trusted = await market.publish_algorithm()
    untrusted = await market.publish_algorithm()
    dataset = await market.publish_dataset(trusted=[market.trust(trusted)])
    error = await refused(market.consumer.start(market.spec(dataset, "0x01", untrusted, "0x02")))
    assert_refusal(error, DENIED, codes.NOT_TRUSTED_ALGO, untrusted, "trusted-algorithm list")


async def test_an_algorithm_from_an_untrusted_publisher_is_not_trusted_publisher(market: Market):
    algorithm = await market.publish_algorithm(publisher=market.other)
    dataset = await market.publish_dataset(publishers=[market.publisher.address])
    error = await refused(market.consumer.start(market.spec(dataset, "0x01", algorithm, "0x02")))
    assert_refusal(
        error, DENIED, codes.NOT_TRUSTED_PUBLISHER, algorithm, market.other.address, "not a trusted publisher"
    )


async def test_a_changed_container_is_container_checksum_mismatch(market: Market):
    algorithm = await market.publish_algorithm()
    approved = dict(
        market.trust(algorithm),
        containerSectionChecksum=market.trust(algorithm, container={**CONTAINER, "tag": "3.10"})[
            "containerSectionChecksum"
        ],
    )
    dataset = await market.publish_dataset(trusted=[approved])
    error = await refused(market.consumer.start(market.spec(dataset, "0x01", algorithm, "0x02")))
    assert_refusal(error, DENIED, codes.CONTAINER_CHECKSUM_MISMATCH, algorithm, "re-approve")


async def test_changed_algorithm_files_fail_the_job_at_pod_config_with_32(data_dir):
    # The provider cannot hash the algorithm's files (it never fetches them):
    # it passes the pinned filesChecksum on and pod_config refuses to run them.
    async with open_market(backend="local") as market:
        algorithm = await market.publish_algorithm()
        pinned = market.trust(algorithm, code="print('the version the publisher approved')")
        dataset = await market.publish_dataset(trusted=[pinned])
        job_id = (
            await market.consumer.start(
                market.spec(
                    dataset,
                    await market.buy(dataset, "compute"),
                    algorithm,
                    await market.buy(algorithm, "access"),
                )
            )
        ).job_id
        job = await market.finished(job_id)
        assert job.status == 32, (job.status, job.error_message)
        assert job.end_reason == common_pb2.END_REASON_FAILED
        assert "checksum" in job.error_message


async def test_a_raw_algorithm_where_none_is_allowed_is_no_raw_algo_allowed(market: Market):
    dataset = await market.publish_dataset(raw=False)
    error = await refused(market.consumer.start(market.spec(dataset, "0x01", raw_algorithm=RAW)))
    assert_refusal(error, DENIED, codes.NO_RAW_ALGO_ALLOWED, "published algorithm")


async def test_asking_for_the_network_where_it_is_not_allowed_is_network_access_not_allowed(market: Market):
    dataset, dataset_order, algorithm, algorithm_order = await market.ready_job(network=False)
    spec = market.spec(dataset, dataset_order, algorithm, algorithm_order, allow_network=True)
    error = await refused(market.consumer.start(spec))
    assert_refusal(error, DENIED, codes.NETWORK_ACCESS_NOT_ALLOWED, "network access", "run without it")
    # Without the request, the same orders still start the job, with no network.
    spec.allow_network = False
    job_id = (await market.consumer.start(spec)).job_id
    assert (await market.finished(job_id)).status == 70


async def test_consumer_parameters_are_checked_against_the_algorithms_ddo(market: Market):
    algorithm = await market.publish_algorithm(parameters=PARAMETERS)  # window: number, required
    dataset = await market.publish_dataset(trusted=[market.trust(algorithm)])
    cases = {
        "wrong type": ({"window": "24"}, "'window'"),
        "required missing": ({}, "'window'"),
        "not an option": ({"window": 24, "unit": "K"}, "'unit'"),
        "unknown key": ({"window": 24, "colour": "red"}, "'colour'"),
        "not an object": ([24], "object"),
    }
    for case, (parameters, named) in cases.items():
        spec = market.spec(dataset, "0x01", algorithm, "0x02", algorithm_parameters_json=json.dumps(parameters))
        error = await refused(market.consumer.start(spec))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, case
        assert error_code(error) == reason_of(codes.CONSUMER_PARAMETERS_INVALID), case
        assert named in error.details(), (case, error.details())
    spec = market.spec(dataset, "0x01", algorithm, "0x02", algorithm_parameters_json="{window")
    assert_refusal(
        await refused(market.consumer.start(spec)),
        grpc.StatusCode.INVALID_ARGUMENT,
        codes.CONSUMER_PARAMETERS_INVALID,
        "not valid JSON",
    )


# -- orders -------------------------------------------------------------------------------------


async def test_an_asset_without_an_order_is_order_missing(market: Market):
    dataset, dataset_order, algorithm, _ = await market.ready_job()
    error = await refused(market.consumer.start(market.spec(dataset, dataset_order, algorithm, "")))
    assert_refusal(error, PRECONDITION, codes.ORDER_MISSING, algorithm, "StartOrder")


async def test_someone_elses_order_is_order_invalid(market: Market):
    dataset, _, algorithm, algorithm_order = await market.ready_job()
    others = await market.buy(dataset, "compute", market.other)
    error = await refused(market.consumer.start(market.spec(dataset, others, algorithm, algorithm_order)))
    assert_refusal(error, PRECONDITION, codes.ORDER_INVALID, others, "not this consumer's order")


async def test_an_order_for_another_asset_is_order_invalid(market: Market):
    dataset, _, algorithm, algorithm_order = await market.ready_job()
    elsewhere = await market.publish_dataset(trusted=[market.trust(algorithm)])
    wrong = await market.buy(elsewhere, "compute")
    error = await refused(market.consumer.start(market.spec(dataset, wrong, algorithm, algorithm_order)))
    assert_refusal(error, PRECONDITION, codes.ORDER_INVALID, wrong, dataset)


async def test_an_order_that_does_not_exist_is_order_invalid(market: Market):
    dataset, _, algorithm, algorithm_order = await market.ready_job()
    error = await refused(market.consumer.start(market.spec(dataset, "0x" + "5" * 64, algorithm, algorithm_order)))
    assert_refusal(error, PRECONDITION, codes.ORDER_INVALID, "does not exist", "StartOrder")


async def test_one_order_for_two_assets_is_order_invalid(market: Market):
    dataset, dataset_order, algorithm, _ = await market.ready_job()
    error = await refused(market.consumer.start(market.spec(dataset, dataset_order, algorithm, dataset_order)))
    assert_refusal(error, PRECONDITION, codes.ORDER_INVALID, "its own order")


async def test_an_order_that_started_a_job_is_order_used(market: Market):
    dataset, dataset_order, algorithm, algorithm_order = await market.ready_job()
    await market.consumer.start(market.spec(dataset, dataset_order, algorithm, algorithm_order))
    fresh_algorithm_order = await market.buy(algorithm, "access")
    error = await refused(market.consumer.start(market.spec(dataset, dataset_order, algorithm, fresh_algorithm_order)))
    assert_refusal(error, PRECONDITION, codes.ORDER_USED, dataset_order, "order again")


async def test_an_order_past_the_services_timeout_is_order_expired(market: Market):
    algorithm = await market.publish_algorithm()
    dataset = await market.publish_dataset(trusted=[market.trust(algorithm)], timeout=1)
    dataset_order = await market.buy(dataset, "compute")
    algorithm_order = await market.buy(algorithm, "access")
    order = (await market.consumer.ledger.GetOrder(ledger_pb2.GetOrderRequest(order_id=dataset_order))).order
    # Wait until the order's own expiry has passed (on the provider's clock, which is ours).
    await asyncio.sleep(max(0.0, order.expires_at.ToMicroseconds() / 1e6 - time.time()) + 0.2)
    error = await refused(market.consumer.start(market.spec(dataset, dataset_order, algorithm, algorithm_order)))
    assert_refusal(error, PRECONDITION, codes.ORDER_EXPIRED, dataset_order, "expired", "order again")


async def test_an_order_without_balance_is_insufficient_balance(market: Market):
    dataset = await market.publish_dataset(raw=True)
    token = await market.publisher.create_datatoken(dataset, "compute")
    error = await refused(market.consumer.order(dataset, "compute"))
    assert_refusal(error, PRECONDITION, codes.INSUFFICIENT_BALANCE, market.consumer.address, token, "needs 1")


# -- signatures ---------------------------------------------------------------------------------


async def test_a_replayed_request_is_nonce_invalid(market: Market):
    dataset = await market.publish_dataset(raw=True)
    await market.fund(dataset, "compute", market.consumer, amount=5)
    request = market.consumer.signed("StartOrder", ledger_pb2.StartOrderRequest(did=dataset, service_id="compute"))
    await market.consumer.ledger.StartOrder(request)
    error = await refused(market.consumer.ledger.StartOrder(request))
    assert_refusal(error, DENIED, codes.NONCE_INVALID, str(request.signature.nonce), "already used", "new nonce")
    token = await market.publisher.create_datatoken(dataset, "compute")
    balance = await market.consumer.ledger.GetBalance(
        ledger_pb2.GetBalanceRequest(datatoken_address=token, address=market.consumer.address)
    )
    assert balance.balance == 4  # the replay moved nothing


async def test_a_tampered_field_is_signature_invalid(market: Market):
    dataset = await market.publish_dataset(raw=True)
    await market.fund(dataset, "compute", market.consumer, amount=5)
    other = await market.publish_dataset(raw=True)
    request = market.consumer.signed("StartOrder", ledger_pb2.StartOrderRequest(did=dataset, service_id="compute"))
    request.did = other
    error = await refused(market.consumer.ledger.StartOrder(request))
    assert_refusal(error, DENIED, codes.SIGNATURE_INVALID, f"not signed by {market.consumer.address}", "StartOrder")


async def test_a_signature_for_another_method_is_signature_invalid(market: Market):
    request = market.consumer.signed("GetJobDetails", provider_pb2.ListJobsRequest())
    error = await refused(market.consumer.compute.ListJobs(request))
    assert_refusal(error, DENIED, codes.SIGNATURE_INVALID)


# -- environments -------------------------------------------------------------------------------


async def test_an_unknown_environment_is_environment_unknown(market: Market):
    dataset, dataset_order, algorithm, algorithm_order = await market.ready_job()
    spec = market.spec(dataset, dataset_order, algorithm, algorithm_order, environment_id="gpu-h100")
    error = await refused(market.consumer.start(spec))
    assert_refusal(error, grpc.StatusCode.NOT_FOUND, codes.ENVIRONMENT_UNKNOWN, "'gpu-h100'", market.environment_id)


async def test_an_environment_whose_engine_stopped_is_environment_unavailable(data_dir):
    async with open_market() as market:
        dataset, dataset_order, algorithm, algorithm_order = await market.ready_job()
        await market.stack.engine.stop(0)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            environments = (
                await market.consumer.compute.ListComputeEnvironments(provider_pb2.ListComputeEnvironmentsRequest())
            ).environments
            if not any(e.available for e in environments):
                break
            await asyncio.sleep(0.1)
        error = await refused(market.consumer.start(market.spec(dataset, dataset_order, algorithm, algorithm_order)))
        assert_refusal(error, PRECONDITION, codes.ENVIRONMENT_UNAVAILABLE, market.environment_id, "not responding")
        # The refusal spent nothing: the orders are still free.
        assert (
            await market.consumer.ledger.GetOrder(ledger_pb2.GetOrderRequest(order_id=dataset_order))
        ).order.used_by_job_id == ""


# -- owners ---------------------------------------------------------------------------------------


async def test_only_the_assets_owner_may_create_its_datatoken(market: Market):
    dataset = await market.publish_dataset(raw=True)
    request = ledger_pb2.CreateDatatokenRequest(did=dataset, service_id="compute", symbol="DT")
    error = await refused(market.other.ledger.CreateDatatoken(market.other.signed("CreateDatatoken", request)))
    assert_refusal(error, DENIED, codes.NOT_OWNER, market.publisher.address, dataset)


async def test_only_the_datatokens_owner_may_mint(market: Market):
    dataset = await market.publish_dataset(raw=True)
    token = await market.publisher.create_datatoken(dataset, "compute")
    error = await refused(market.other.mint(token, market.other.address, 100))
    assert_refusal(error, DENIED, codes.NOT_OWNER, market.publisher.address, "mint")


async def test_only_the_assets_owner_may_update_it(market: Market):
    dataset = await market.publish_dataset(raw=True)
    ddo = (await market.other.assets.GetAsset(asset_pb2.GetAssetRequest(did=dataset))).ddo_json
    request = asset_pb2.UpdateAssetRequest(did=dataset, ddo_json=ddo)
    error = await refused(market.other.assets.UpdateAsset(market.other.signed("UpdateAsset", request)))
    assert_refusal(error, DENIED, codes.NOT_OWNER, market.publisher.address, dataset)


async def test_a_viewer_may_read_a_job_but_not_stop_or_delete_it(market: Market):
    job_id = await market.start_job(viewers=[market.other.address])
    assert (await market.other.details(job_id)).job.job_id == job_id
    stop = provider_pb2.StopComputeRequest(job_id=job_id)
    error = await refused(market.other.compute.StopCompute(market.other.signed("StopCompute", stop)))
    assert_refusal(error, DENIED, codes.NOT_OWNER, "owner", "viewers may only read")
    delete = provider_pb2.DeleteComputeRequest(job_id=job_id)
    error = await refused(market.other.compute.DeleteCompute(market.other.signed("DeleteCompute", delete)))
    assert_refusal(error, DENIED, codes.NOT_OWNER, "owner")
