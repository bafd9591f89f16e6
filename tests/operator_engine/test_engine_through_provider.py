"""Adversarial algorithms end to end: consumer -> provider -> operator-service ->
engine (local backend, real sandbox) on PostgreSQL; what the consumer sees."""

from __future__ import annotations

import json
import socket
import time

import grpc

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import provider_pb2
from cli.client import Client, load_or_create_key
from cli.demo import _service, serve_files
from plumbing import settings
from testkit.stacks import running_stack, wait_for_environment
from tests.operator_engine.engine_harness import WAIT_S

NETWORK_PROBE = """\
import json, os, socket
try:
    socket.create_connection(("127.0.0.1", %d), timeout=3).close()
    outcome = "connected"
except OSError as e:
    outcome = type(e).__name__
json.dump({"connect": outcome}, open(os.environ["OUTPUTS"] + "/probe.json", "w"))
"""


async def run_raw(consumer: Client, dataset_did: str, code: str) -> common_pb2.Job:
    order = await consumer.order(dataset_did, "compute")
    environment = next(
        e
        for e in (
            await consumer.compute.ListComputeEnvironments(provider_pb2.ListComputeEnvironmentsRequest())
        ).environments
        if e.available
    )
    started = await consumer.start(
        provider_pb2.ComputeSpec(
            dataset=provider_pb2.AssetOrder(did=dataset_did, service_id="compute", order_id=order),
            raw_algorithm=provider_pb2.RawAlgorithm(
                code=code, container=common_pb2.AlgorithmContainer(entrypoint="python3 $ALGO", image="python")
            ),
            environment_id=environment.id,
        )
    )
    deadline = time.monotonic() + WAIT_S
    async for job in consumer.watch(started.job_id):
        assert time.monotonic() < deadline
    return (await consumer.details(started.job_id)).job


async def test_exit_code_and_no_network_reach_the_consumer(data_dir, postgres_url):
    files, base = serve_files({"/data.csv": b"a,b\n1,2\n"})
    try:
        async for stack in running_stack(postgres_url):
            async with grpc.aio.insecure_channel(stack.provider_address) as channel:
                data = settings.data_dir()
                publisher = Client(channel, load_or_create_key(data / "publisher.key"))
                consumer = Client(channel, load_or_create_key(data / "consumer.key"))
                dataset_did = publisher.did_for("adversarial")
                encrypted = await publisher.encrypt([common_pb2.FileLocation(type="url", url=f"{base}/data.csv")])
                await publisher.publish(
                    {
                        "version": "4.1.0",
                        "metadata": {"type": "dataset", "name": "d", "author": "a", "license": "CC0"},
                        "services": [
                            _service(
                                "compute",
                                "compute",
                                encrypted,
                                dataset_did,
                                {
                                    "allowRawAlgorithm": True,
                                    "allowNetworkAccess": False,
                                    "publisherTrustedAlgorithms": [],
                                    "publisherTrustedAlgorithmPublishers": [],
                                },
                            )
                        ],
                    },
                    "adversarial",
                )
                token = await publisher.create_datatoken(dataset_did, "compute")
                await publisher.mint(token, consumer.address, 2)
                await wait_for_environment(stack.provider_address)

                failed = await run_raw(consumer, dataset_did, "import sys\nsys.exit(3)\n")
                assert failed.status == 41
                assert failed.end_reason == common_pb2.END_REASON_FAILED
                assert failed.error_message == "algorithm failed: exit code 3"
                assert failed.algorithm_outcome.exit_code == 3

                with socket.socket() as listener:
                    listener.bind(("127.0.0.1", 0))
                    listener.listen(4)
                    probed = await run_raw(consumer, dataset_did, NETWORK_PROBE % listener.getsockname()[1])
                assert probed.status == 70, probed
                entry = next(f for f in probed.results.files if f.path == "probe.json")
                _, body = await consumer.result(probed.job_id, entry.index)
                assert json.loads(body) == {"connect": "ConnectionRefusedError"}
    finally:
        files.shutdown()
