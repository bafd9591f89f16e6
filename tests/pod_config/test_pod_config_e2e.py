"""Staging failures on the full stack (provider, operator-service on PostgreSQL,
engine, pod_config as a real process): the status and the reason reach the
database and the consumer, and the publisher's URL reaches neither, nor the
operator's configure log."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy
from google.protobuf import text_format

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import provider_pb2
from cli import demo
from cli.client import Client, load_or_create_key
from plumbing import assets
from services.operator_service.api.convert import ORDERS_RELEASED
from testkit.stacks import running_stack

DEADLINE_S = 120  # a loaded 2-core machine: generous


class Recorder:
    """Every response the consumer and the publisher received, as text."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def keep(self, value: Any) -> Any:
        self.texts.append(text_format.MessageToString(value) if hasattr(value, "DESCRIPTOR") else str(value))
        return value

    @property
    def everything(self) -> str:
        return "\n".join(self.texts)


async def _environment(consumer: Client, seen: Recorder) -> str:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        envs = seen.keep(await consumer.compute.ListComputeEnvironments(provider_pb2.ListComputeEnvironmentsRequest()))
        ready = [e for e in envs.environments if e.available]
        if ready:
            return ready[0].id
        await asyncio.sleep(0.1)
    raise AssertionError("the engine's environment never became available")


async def _run_job(
    channel: grpc.aio.Channel,
    data_dir: Path,
    dataset_url: str,
    algorithm_url: str,
    trusted_checksum: str,
    seen: Recorder,
) -> tuple[str, str, common_pb2.Job]:
    """Publishes a dataset and an algorithm (as cli/demo.py does), orders both,
    starts a job and waits for its end; returns (dataset DID, job id, final job)."""
    publisher = Client(channel, load_or_create_key(data_dir / "publisher.key"))
    consumer = Client(channel, load_or_create_key(data_dir / "consumer.key"))
    salt = uuid.uuid4().hex
    algo_did = publisher.did_for("algo-" + salt)
    container = {"entrypoint": "python3 $ALGO", "image": "python", "tag": "3.11", "checksum": demo.IMAGE_DIGEST}
    algo_files = seen.keep(await publisher.encrypt([common_pb2.FileLocation(type="url", url=algorithm_url)]))
    seen.keep(
        await publisher.publish(
            {
                "version": "4.1.0",
                "metadata": {
                    "type": "algorithm",
                    "name": "algo",
                    "author": "t",
                    "license": "MIT",
                    "algorithm": {"language": "python", "version": "1", "container": container},
                },
                "services": [demo._service("access", "access", algo_files, algo_did)],
            },
            "algo-" + salt,
        )
    )
    dataset_did = publisher.did_for("data-" + salt)
    dataset_files = seen.keep(await publisher.encrypt([common_pb2.FileLocation(type="url", url=dataset_url)]))
    trusted = {
        "did": algo_did,
        "filesChecksum": trusted_checksum,
        "containerSectionChecksum": assets.container_checksum(container),
    }
    seen.keep(
        await publisher.publish(
            {
                "version": "4.1.0",
                "metadata": {"type": "dataset", "name": "data", "author": "t", "license": "CC0"},
                "services": [
                    demo._service(
                        "compute",
                        "compute",
                        dataset_files,
                        dataset_did,
                        {
                            "allowRawAlgorithm": False,
                            "allowNetworkAccess": False,
                            "publisherTrustedAlgorithms": [trusted],
                            "publisherTrustedAlgorithmPublishers": [],
                        },
                    )
                ],
            },
            "data-" + salt,
        )
    )
    for did, service_id in ((dataset_did, "compute"), (algo_did, "access")):
        token = seen.keep(await publisher.create_datatoken(did, service_id))
        seen.keep(await publisher.mint(token, consumer.address, 1))
    dataset_order = seen.keep(await consumer.order(dataset_did, "compute"))
    algo_order = seen.keep(await consumer.order(algo_did, "access"))
    started = seen.keep(
        await consumer.start(
            provider_pb2.ComputeSpec(
                dataset=provider_pb2.AssetOrder(did=dataset_did, service_id="compute", order_id=dataset_order),
                algorithm_asset=provider_pb2.AssetOrder(did=algo_did, service_id="access", order_id=algo_order),
                environment_id=await _environment(consumer, seen),
            )
        )
    )

    async def watch() -> None:
        async for job in consumer.watch(started.job_id):
            seen.keep(job)

    await asyncio.wait_for(watch(), DEADLINE_S)
    details = seen.keep(await consumer.details(started.job_id))
    return dataset_did, started.job_id, details.job


def _stored(database_url: str, job_id: str) -> tuple[list[int], str, list[str]]:
    """(status history, the job's error_message, every event's error_message) as PostgreSQL holds them."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            events = conn.execute(
                sqlalchemy.text("SELECT status, error_message FROM job_events WHERE job_id = :j ORDER BY sequence"),
                {"j": job_id},
            ).all()
            message = conn.execute(
                sqlalchemy.text("SELECT error_message FROM jobs WHERE job_id = :j"), {"j": job_id}
            ).scalar_one()
    finally:
        engine.dispose()
    return [e[0] for e in events], message, [e[1] for e in events]


async def test_staging_failures_reach_postgresql_with_reasons_and_never_the_url(data_dir, postgres_url):
    secret = f"publisher-secret-{uuid.uuid4().hex}"
    algorithm = b"print('never runs')\n"
    http_server, base = demo.serve_files({f"/{secret}/algo.py": algorithm})  # the dataset path answers 404
    missing_url, algorithm_url = f"{base}/{secret}/weather.csv", f"{base}/{secret}/algo.py"
    seen = Recorder()
    try:
        async for stack in running_stack(postgres_url):
            async with grpc.aio.insecure_channel(stack.provider_address) as channel:
                good_checksum = assets.files_checksum([hashlib.sha256(algorithm).hexdigest()])
                dataset_404, job_404, job_a = await _run_job(
                    channel, Path(data_dir), missing_url, algorithm_url, good_checksum, seen
                )
                wrong_checksum = assets.files_checksum([hashlib.sha256(b"another algorithm").hexdigest()])
                _, job_mismatch, job_b = await _run_job(
                    channel, Path(data_dir), algorithm_url, algorithm_url, wrong_checksum, seen
                )
    finally:
        http_server.shutdown()

    # A dataset URL answering 404: 31, naming the DID and the file index.
    history, message, event_messages = _stored(postgres_url, job_404)
    assert history == [1, 10, 20, 31]
    assert message == f"data provisioning failed: dataset {dataset_404} file 0: HTTP 404"
    assert event_messages[-1] == message
    # the consumer is also told that the job gave its orders back (the publisher's file failed, not them)
    released = f"{message}; {ORDERS_RELEASED}"
    assert (job_a.status, job_a.error_message, job_a.error_code) == (31, released, "dataset_fetch_failed")
    assert job_a.orders_released

    # The algorithm's files differ from what the dataset trusts: 32.
    history, message, _ = _stored(postgres_url, job_mismatch)
    assert history == [1, 10, 20, 32]
    assert message.startswith("algorithm provisioning failed: checksum mismatch")
    assert (job_b.status, job_b.error_code) == (32, "checksum_mismatch")

    # The URL is nowhere: not in a response, a stored message, or the operator's configure log.
    configure_logs = [
        Path(data_dir) / "workspaces" / job / "admin" / "configure.log" for job in (job_404, job_mismatch)
    ]
    logs = "\n".join(p.read_text() for p in configure_logs)
    assert f"dataset {dataset_404} file 0" in logs  # the log says what failed...
    stored = "\n".join(_stored(postgres_url, job_404)[2] + _stored(postgres_url, job_mismatch)[2])
    for where, text in (("responses", seen.everything), ("database", stored), ("configure.log", logs)):
        assert secret not in text, where  # ...but never where it came from
        assert base not in text, where
