"""A running stack with a publisher, two consumers and a file server: the
provider's API tests publish assets, buy orders and start jobs through it,
over real gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
import pytest

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import provider_pb2
from cli import demo
from cli.client import Client
from cli.stack import Stack, start_stack
from plumbing import assets
from plumbing.grpc_errors import error_code, reason_of
from testkit.stacks import settings_for

PUBLISHER_KEY = "0x" + "31" * 32
CONSUMER_KEY = "0x" + "32" * 32
OTHER_KEY = "0x" + "33" * 32
# Where the dataset lives: no response or log may ever show this path.
SECRET_PATH = "/private-bucket/weather-7f3a9c.csv"
CONTAINER = {"entrypoint": "python3 $ALGO", "image": "python", "tag": "3.11", "checksum": demo.IMAGE_DIGEST}
PARAMETERS = [
    {"name": "window", "type": "number", "label": "Window (h)", "required": True},
    {
        "name": "unit",
        "type": "select",
        "label": "Unit",
        "required": False,
        "options": [{"C": "Celsius"}, {"F": "Fahrenheit"}],
        "default": "C",
    },
]
WAIT_S = 60.0


@dataclass
class Market:
    stack: Stack
    channel: grpc.aio.Channel
    publisher: Client
    consumer: Client
    other: Client
    base_url: str
    environment_id: str

    def salt(self) -> str:
        return f"{time.time_ns()}"

    # -- publishing --------------------------------------------------------------------

    async def publish_algorithm(
        self,
        code: str = demo.ALGORITHM,
        publisher: Client | None = None,
        parameters: list[dict[str, Any]] | None = None,
        container: dict[str, Any] | None = None,
        file_url: str = "",
    ) -> str:
        """A published algorithm; its file is `code`, served by the market, or at `file_url`."""
        publisher = publisher or self.publisher
        salt = "algo-" + self.salt()
        did = publisher.did_for(salt)
        path = f"/algo-{salt}.py"
        _Files.files[path] = code.encode()
        url = file_url or self.base_url + path
        files = await publisher.encrypt([common_pb2.FileLocation(type="url", url=url)])
        algorithm: dict[str, Any] = {"language": "python", "version": "1.0", "container": container or CONTAINER}
        if parameters is not None:
            algorithm["consumerParameters"] = parameters
        await publisher.publish(
            {
                "version": "4.1.0",
                "metadata": {
                    "type": "algorithm",
                    "name": "Mean temperature",
                    "author": "tests",
                    "license": "MIT",
                    "algorithm": algorithm,
                },
                "services": [demo._service("access", "access", files, did)],
            },
            salt,
        )
        return did

    def trust(
        self,
        algorithm_did: str,
        code: str = demo.ALGORITHM,
        container: dict[str, Any] | None = None,
        files_checksum: str | None = None,
    ) -> dict[str, Any]:
        """A publisherTrustedAlgorithms entry pinning the algorithm's files and container."""
        return {
            "did": algorithm_did,
            "filesChecksum": files_checksum or assets.files_checksum([hashlib.sha256(code.encode()).hexdigest()]),
            "containerSectionChecksum": assets.container_checksum(container or CONTAINER),
        }

    async def publish_dataset(
        self,
        trusted: list[dict[str, Any]] | None = None,
        publishers: list[str] | None = None,
        raw: bool = False,
        network: bool = False,
        timeout: int = 3600,
        credentials: dict[str, Any] | None = None,
        extra_services: list[dict[str, Any]] = (),
        file_url: str = "",
    ) -> str:
        salt = "data-" + self.salt()
        did = self.publisher.did_for(salt)
        url = file_url or self.base_url + SECRET_PATH
        files = await self.publisher.encrypt([common_pb2.FileLocation(type="url", url=url)])
        service = demo._service(
            "compute",
            "compute",
            files,
            did,
            {
                "allowRawAlgorithm": raw,
                "allowNetworkAccess": network,
                "publisherTrustedAlgorithms": trusted or [],
                "publisherTrustedAlgorithmPublishers": publishers or [],
            },
        )
        service["timeout"] = timeout
        services = [service, *(dict(copy.deepcopy(s), files=files) for s in extra_services)]
        ddo: dict[str, Any] = {
            "version": "4.1.0",
            "metadata": {"type": "dataset", "name": "City temperatures", "author": "tests", "license": "CC0"},
            "services": services,
        }
        if credentials is not None:
            ddo["credentials"] = credentials
        await self.publisher.publish(ddo, salt)
        return did

    async def fund(
        self, did: str, service_id: str, holder: Client, amount: int = 1, owner: Client | None = None
    ) -> str:
        owner = owner or self.publisher
        token = await owner.create_datatoken(did, service_id)
        await owner.mint(token, holder.address, amount)
        return token

    async def buy(self, did: str, service_id: str, holder: Client | None = None, owner: Client | None = None) -> str:
        holder = holder or self.consumer
        await self.fund(did, service_id, holder, owner=owner)
        return await holder.order(did, service_id)

    def spec(
        self, dataset: str, dataset_order: str, algorithm: str | None = None, algorithm_order: str = "", **fields: Any
    ) -> provider_pb2.ComputeSpec:
        spec = provider_pb2.ComputeSpec(
            dataset=provider_pb2.AssetOrder(did=dataset, service_id="compute", order_id=dataset_order),
            **{"environment_id": self.environment_id, **fields},
        )
        if algorithm is not None:
            spec.algorithm_asset.CopyFrom(
                provider_pb2.AssetOrder(did=algorithm, service_id="access", order_id=algorithm_order)
            )
        return spec

    async def ready_job(self, consumer: Client | None = None, **fields: Any) -> tuple[str, str, str, str]:
        """A dataset and algorithm, both ordered: (dataset, dataset order, algorithm, algorithm order)."""
        consumer = consumer or self.consumer
        algorithm = await self.publish_algorithm()
        dataset = await self.publish_dataset(trusted=[self.trust(algorithm)], **fields)
        return (
            dataset,
            await self.buy(dataset, "compute", consumer),
            algorithm,
            await self.buy(algorithm, "access", consumer),
        )

    async def start_job(self, consumer: Client | None = None, **spec_fields: Any) -> str:
        consumer = consumer or self.consumer
        dataset, dataset_order, algorithm, algorithm_order = await self.ready_job(consumer)
        response = await consumer.start(self.spec(dataset, dataset_order, algorithm, algorithm_order, **spec_fields))
        return response.job_id

    async def finished(self, job_id: str, consumer: Client | None = None) -> common_pb2.Job:
        """The job once it reached a final status (watched, not polled)."""
        consumer = consumer or self.consumer

        async def last() -> common_pb2.Job:
            job = None
            async for job in consumer.watch(job_id):
                pass
            assert job is not None
            return job

        return await asyncio.wait_for(last(), WAIT_S)


class _Files(demo._Files):
    files: ClassVar[dict[str, bytes]] = {SECRET_PATH: demo.CSV.encode()}


def serve() -> tuple[Any, str]:
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


async def wait_for_environment(client: Client) -> str:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        request = provider_pb2.ListComputeEnvironmentsRequest()
        environments = (await client.compute.ListComputeEnvironments(request)).environments
        available = [e for e in environments if e.available]
        if available:
            return available[0].id
        await asyncio.sleep(0.05)
    raise AssertionError("the engine's environment never became available")


@contextlib.asynccontextmanager
async def open_market(
    database_url: str = "", backend: str = "noop", engine: dict[str, Any] | None = None, **provider: Any
) -> AsyncIterator[Market]:
    settings = settings_for(database_url, backend=backend, **(engine or {}))
    if provider:
        import dataclasses

        settings = (dataclasses.replace(settings[0], **provider), *settings[1:])  # type: ignore[assignment]
    http_server, base = serve()
    stack = await start_stack(*settings)
    try:
        async with grpc.aio.insecure_channel(stack.provider_address) as channel:
            publisher = Client(channel, PUBLISHER_KEY)
            environment = await wait_for_environment(publisher)
            yield Market(
                stack, channel, publisher, Client(channel, CONSUMER_KEY), Client(channel, OTHER_KEY), base, environment
            )
    finally:
        await stack.stop()
        http_server.shutdown()


async def refused(call: Any) -> grpc.aio.AioRpcError:
    """The error a call fails with (it must fail)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def assert_refusal(error: grpc.aio.AioRpcError, status: grpc.StatusCode, code: str, *words: str) -> None:
    """Status, machine-readable code and a message naming what to act on."""
    assert error.code() == status, (error.code(), error.details())
    assert error_code(error) == reason_of(code), (error_code(error), error.details())
    for word in words:
        assert word in error.details(), (word, error.details())
