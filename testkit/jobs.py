"""Runs real jobs for the pod_publish tests and bench/publishing.py: a stack (testkit/stacks.py)
with the storage its C2D_STORAGE_* variables name, a dataset that allows raw
algorithms, and a consumer who orders it and runs a given algorithm."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import grpc

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import asset_pb2, provider_pb2
from cli import demo
from cli.client import Client
from cli.stack import Stack, start_stack
from plumbing import settings
from plumbing.statuses import is_terminal
from services.provider.domain import sealing
from testkit.stacks import settings_for

PUBLISHER_KEY = "0x" + "61" * 32
CONSUMER_KEY = "0x" + "62" * 32
OTHER_KEY = "0x" + "63" * 32
# Generous: other suites load the same 2 cores.
JOB_WAIT_S = 240.0


@dataclass
class Bench:
    stack: Stack
    channel: grpc.aio.Channel
    publisher: Client
    consumer: Client
    other: Client
    base_url: str

    async def dataset(self, holder: Client | None = None, location: common_pb2.FileLocation | None = None) -> str:
        """A dataset whose compute service allows raw algorithms; `holder`
        (the consumer unless named) holds its datatokens; its file is at
        `location` (the bench's weather.csv unless named)."""
        salt = f"data-{time.time_ns()}"
        did = self.publisher.did_for(salt)
        location = location or common_pb2.FileLocation(type="url", url=f"{self.base_url}/weather.csv")
        files = await self.publisher.encrypt([location])
        await self.publisher.publish(
            {
                "version": "4.1.0",
                "metadata": {"type": "dataset", "name": "City temperatures", "author": "tests", "license": "CC0"},
                "services": [
                    demo._service(
                        "compute",
                        "compute",
                        files,
                        did,
                        {
                            "allowRawAlgorithm": True,
                            "allowNetworkAccess": False,
                            "publisherTrustedAlgorithms": [],
                            "publisherTrustedAlgorithmPublishers": [],
                        },
                    )
                ],
            },
            salt,
        )
        token = await self.publisher.create_datatoken(did, "compute")
        await self.publisher.mint(token, (holder or self.consumer).address, 5)
        return did

    async def start(self, code: str, consumer: Client | None = None, **spec: object) -> tuple[str, str]:
        """`consumer` (the bench's unless named) orders a fresh dataset and
        starts `code` on it; returns (job id, order id)."""
        consumer = consumer or self.consumer
        did = await self.dataset(consumer)
        order = await consumer.order(did, "compute")
        return await self.start_on(did, order, code, consumer, **spec), order

    async def start_on(self, did: str, order: str, code: str, consumer: Client | None = None, **spec: object) -> str:
        """Starts `code` on dataset `did`, paid by `order`; returns the job id."""
        consumer = consumer or self.consumer
        environments = (
            await consumer.compute.ListComputeEnvironments(provider_pb2.ListComputeEnvironmentsRequest())
        ).environments
        response = await consumer.start(
            provider_pb2.ComputeSpec(
                dataset=provider_pb2.AssetOrder(did=did, service_id="compute", order_id=order),
                raw_algorithm=provider_pb2.RawAlgorithm(
                    code=code,
                    container=common_pb2.AlgorithmContainer(entrypoint="python3 $ALGO", image="python"),
                ),
                environment_id=environments[0].id,
                **spec,  # type: ignore[arg-type]
            )
        )
        return response.job_id

    async def run(self, code: str, **spec: object) -> common_pb2.Job:
        """Runs `code` as a job to its end and returns the job's final record."""
        job_id, _ = await self.start(code, **spec)
        return await self.finished(job_id)

    async def finished(self, job_id: str, consumer: Client | None = None) -> common_pb2.Job:
        consumer = consumer or self.consumer

        async def watch() -> None:
            async for job in consumer.watch(job_id):
                if is_terminal(job.status):
                    return

        await asyncio.wait_for(watch(), JOB_WAIT_S)
        return (await consumer.details(job_id)).job


async def download_asset_file(
    client: Client, did: str, index: int, offset: int = 0, service_id: str = ""
) -> tuple[common_pb2.ResultFile, bytes]:
    """A results asset's file, through DownloadAssetFile signed by `client`: its entry and its bytes."""
    request = client.signed(
        "DownloadAssetFile",
        asset_pb2.DownloadAssetFileRequest(did=did, index=index, offset=offset, service_id=service_id),
    )
    entry, chunks = common_pb2.ResultFile(), []
    async for chunk in client.assets.DownloadAssetFile(request):
        if chunk.HasField("file"):
            entry = chunk.file
        chunks.append(chunk.data)
    return entry, b"".join(chunks)


def provider_keys() -> sealing.ProviderKeys:
    """The stack's provider keys, from its key file (what signs its grants)."""
    return sealing.ProviderKeys.from_json((settings.data_dir() / "provider-keys.json").read_text())


def request_key(*order_ids: str) -> str:
    """How StartCompute keys the orders that pay for one job (a grant names it)."""
    return hashlib.sha256(":".join(sorted(order_ids)).encode()).hexdigest()


def publish_log(job_id: str) -> str:
    """The operator's publish.log of a job (admin logs stay in the engine's workspace)."""
    return (settings.data_dir() / "workspaces" / job_id / "admin" / "publish.log").read_text()


async def final_publish_log(job_id: str, timeout_s: float = 30.0) -> str:
    """publish.log once pod_publish wrote its last line ("published N files"): the job moves on
    as soon as the pod reports its results, and the pod logs its last two lines after that."""
    deadline = time.monotonic() + timeout_s
    while not re.search(r"published \d+ files", text := publish_log(job_id)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return text


async def environment_ready(consumer: Client) -> None:
    for _ in range(600):
        envs = (
            await consumer.compute.ListComputeEnvironments(provider_pb2.ListComputeEnvironmentsRequest())
        ).environments
        if any(e.available for e in envs):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the engine's environment never became available")


@contextlib.asynccontextmanager
async def job_bench(
    database_url: str = "", provider: Mapping[str, object] | None = None, **engine: object
) -> AsyncIterator[Bench]:
    """A running stack and its clients; set C2D_STORAGE_* before entering.
    `provider` overrides provider settings, `engine` the engine's."""
    server, base = demo.serve_files({"/weather.csv": demo.CSV.encode()})
    try:
        provider_settings, operator_settings, engine_settings = settings_for(database_url, **engine)
        provider_settings = dataclasses.replace(provider_settings, **(provider or {}))  # type: ignore[arg-type]
        stack = await start_stack(provider_settings, operator_settings, engine_settings)
        try:
            async with grpc.aio.insecure_channel(stack.provider_address) as channel:
                consumer = Client(channel, CONSUMER_KEY)
                await environment_ready(consumer)
                yield Bench(stack, channel, Client(channel, PUBLISHER_KEY), consumer, Client(channel, OTHER_KEY), base)
        finally:
            await stack.stop()
    finally:
        server.shutdown()


def s3_env(monkeypatch, server, bucket: str, secret_key: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """Points the stack (provider and pods) at a SeaweedFS bucket."""
    for name, value in {
        "KIND": "s3",
        "S3_ENDPOINT": server.endpoint,
        "S3_ACCESS_KEY": server.access_key,
        "S3_SECRET_KEY": secret_key or server.secret_key,
        "S3_BUCKET": bucket,
        "S3_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(f"C2D_STORAGE_{name}", value)


def bucket_keys(server, bucket: str) -> set[str]:  # type: ignore[no-untyped-def]
    return {o.object_name for o in server.client().list_objects(bucket, recursive=True)}
