"""The TypeScript SDK against a real stack, from Node: a consumer whose every
request is signed by the TypeScript signer lists environments, orders,
starts a job, watches it to 70, reads its log and downloads its result
(sdk/typescript/examples/run-job.ts); and a refusal reaches it with its
status, reason and field."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

from c2d.provider.v1 import ledger_pb2, provider_pb2
from cli import demo
from services.provider.domain import ddos
from testkit.market import CONSUMER_KEY, Market, open_market
from tests.sdk_typescript.node import interop, run_node

FULL_PATH = [1, 10, 20, 30, 40, 60, 70]
UNKNOWN_JOB = str(uuid.uuid4())


async def balance(market: Market, did: str, service_id: str) -> int:
    request = ledger_pb2.GetBalanceRequest(
        datatoken_address=ddos.datatoken_address(did, service_id), address=market.consumer.address
    )
    return (await market.consumer.ledger.GetBalance(request)).balance


async def test_a_job_runs_end_to_end_from_node_with_every_request_signed_in_typescript(data_dir, tmp_path: Path):
    async with open_market(backend="local") as market:
        # Published and paid for by the publisher in Python; the consumer (the
        # key the Node script holds) has not signed anything yet.
        algorithm = await market.publish_algorithm()
        dataset = await market.publish_dataset(trusted=[market.trust(algorithm)])
        await market.fund(dataset, "compute", market.consumer)
        await market.fund(algorithm, "access", market.consumer)
        nonce = provider_pb2.GetNonceRequest(address=market.consumer.address)
        assert (await market.consumer.compute.GetNonce(nonce)).nonce == 0

        code, out, err = await run_node(
            "examples/run-job.js",
            *("--provider", market.stack.provider_address, "--dataset", dataset, "--algorithm", algorithm),
            *("--out", str(tmp_path)),
            env={"C2D_PRIVATE_KEY": CONSUMER_KEY},
        )
        assert code == 0, (out, err)
        outcome = json.loads(out)

        # Who acted: the TypeScript signer, and the provider spent its last nonce.
        assert outcome["address"] == market.consumer.address
        assert outcome["owner"] == market.consumer.address
        assert (await market.consumer.compute.GetNonce(nonce)).nonce == int(outcome["lastNonce"])
        assert outcome["environments"] == [{"id": market.environment_id, "available": True}]

        # It ordered both assets with its datatokens, and the job used both orders.
        assert await balance(market, dataset, "compute") == 0
        assert await balance(market, algorithm, "access") == 0
        for order_id in outcome["orders"].values():
            order = (await market.consumer.ledger.GetOrder(ledger_pb2.GetOrderRequest(order_id=order_id))).order
            assert (order.consumer, order.used_by_job_id) == (market.consumer.address, outcome["jobId"])

        # Watched to 70 through the statuses in order; the log and the result are the algorithm's.
        statuses = outcome["statuses"]
        assert statuses[-1] == 70 and statuses == sorted(statuses) and set(statuses) <= set(FULL_PATH)
        assert outcome["endReason"] == 1 and outcome["errorMessage"] == ""
        assert "processed 4 rows" in outcome["log"]
        saved = Path(outcome["result"]["savedTo"])
        assert saved == tmp_path / f"{outcome['jobId']}-result.json"
        assert json.loads(saved.read_bytes()) == demo.EXPECTED
        assert not saved.with_name(saved.name + ".part").exists()

        # What it checked the download against is the manifest the provider keeps.
        details = await market.consumer.details(outcome["jobId"])
        entry = next(f for f in details.job.results.files if f.path == "result.json")
        assert outcome["result"]["sha256"] == entry.sha256 == hashlib.sha256(saved.read_bytes()).hexdigest()
        assert outcome["providerSigningKey"] == details.signed_results.public_key


async def test_a_refusal_reaches_typescript_with_its_status_reason_and_field(data_dir):
    async with open_market() as market:
        dataset, dataset_order, algorithm, algorithm_order = await market.ready_job()
        request = {
            "dataset": {"did": dataset, "serviceId": "compute", "orderId": dataset_order},
            "algorithm": {"did": algorithm, "serviceId": "access", "orderId": algorithm_order},
            "environmentId": "",
        }

        def call(method: str, *args: object) -> dict:
            return {
                "op": "call",
                "provider": market.stack.provider_address,
                "privateKey": CONSUMER_KEY,
                "method": method,
                "args": list(args),
            }

        no_environment, unknown_job, started = await interop(
            call("startCompute", request),
            call("jobDetails", UNKNOWN_JOB),
            call("startCompute", {**request, "environmentId": market.environment_id}),
        )
    refusal = no_environment["refusal"]
    assert (refusal["status"], refusal["reason"], refusal["domain"]) == (
        "INVALID_ARGUMENT",
        "ENVIRONMENT_MISSING",
        "c2d.provider",
    )
    assert [violation["field"] for violation in refusal["fieldViolations"]] == ["spec.environment_id"]
    refusal = unknown_job["refusal"]
    assert (refusal["status"], refusal["reason"]) == ("NOT_FOUND", "JOB_NOT_FOUND")
    assert UNKNOWN_JOB in refusal["message"]
    # The same orders, with an environment: the job starts, owned by the signer.
    assert started["result"]["owner"] == market.consumer.address
