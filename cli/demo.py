"""`c2d demo`: one real job through every component.

Publishes a small CSV dataset and a Python algorithm (files served by a local
HTTP server, their URLs encrypted for the provider), gives the consumer
datatokens, orders, starts the job, prints each status as it arrives, and
downloads and checks the result.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import grpc

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import provider_pb2
from cli.client import Client, connect, load_or_create_key
from plumbing import assets, settings, untrusted
from plumbing.statuses import TEXT, Status
from services.provider.domain import ddos

CSV = "city,temperature\nOslo,4.5\nLisbon,18.25\nNairobi,21.0\nReykjavik,1.25\n"
ALGORITHM = """\
import csv, json, os
dids = json.loads(os.environ["DIDS"])
rows = []
for did in dids:
    with open(os.path.join(os.environ["INPUTS"], did, "0"), newline="") as f:
        rows += list(csv.DictReader(f))
temps = [float(r["temperature"]) for r in rows]
warmest = max(rows, key=lambda r: float(r["temperature"]))["city"]
result = {"rows": len(rows), "mean_temperature": sum(temps) / len(temps), "warmest": warmest}
with open(os.path.join(os.environ["OUTPUTS"], "result.json"), "w") as f:
    json.dump(result, f, sort_keys=True)
print("processed", len(rows), "rows")
"""
EXPECTED = {"mean_temperature": 11.25, "rows": 4, "warmest": "Nairobi"}
IMAGE_DIGEST = "sha256:" + hashlib.sha256(b"python:3.11").hexdigest()


class _Files(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def serve_files(files: dict[str, bytes]) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = type("Files", (_Files,), {"files": files})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _service(service_id: str, kind: str, files: str, did: str, compute: dict[str, Any] | None = None) -> dict[str, Any]:
    service = {
        "id": service_id,
        "type": kind,
        "files": files,
        "timeout": 3600,
        "datatokenAddress": ddos.datatoken_address(did, service_id),
        "serviceEndpoint": "grpc://127.0.0.1:50051",
    }
    if compute is not None:
        service["compute"] = compute
    return service


async def run_demo(provider_address: str, out_dir: Path, say=print) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Runs the demo job against a provider; returns what happened."""
    http_server, base = serve_files({"/weather.csv": CSV.encode(), "/mean.py": ALGORITHM.encode()})
    data = settings.data_dir()
    try:
        async with connect(provider_address) as channel:
            publisher = Client(channel, load_or_create_key(data / "demo-publisher.key"))
            consumer = Client(channel, load_or_create_key(data / "consumer.key"))
            salt = str(time.time_ns())

            algo_did = publisher.did_for("algo-" + salt)
            algo_files = await publisher.encrypt([common_pb2.FileLocation(type="url", url=f"{base}/mean.py")])
            container = {"entrypoint": "python3 $ALGO", "image": "python", "tag": "3.11", "checksum": IMAGE_DIGEST}
            await publisher.publish(
                {
                    "version": "4.1.0",
                    "metadata": {
                        "type": "algorithm",
                        "name": "Mean temperature",
                        "author": "c2d demo",
                        "license": "MIT",
                        "algorithm": {"language": "python", "version": "1.0", "container": container},
                    },
                    "services": [_service("access", "access", algo_files, algo_did)],
                },
                "algo-" + salt,
            )

            dataset_did = publisher.did_for("data-" + salt)
            dataset_files = await publisher.encrypt([common_pb2.FileLocation(type="url", url=f"{base}/weather.csv")])
            trusted = {
                "did": algo_did,
                "filesChecksum": assets.files_checksum([hashlib.sha256(ALGORITHM.encode()).hexdigest()]),
                "containerSectionChecksum": assets.container_checksum(container),
            }
            await publisher.publish(
                {
                    "version": "4.1.0",
                    "metadata": {
                        "type": "dataset",
                        "name": "City temperatures",
                        "author": "c2d demo",
                        "license": "CC0",
                    },
                    "services": [
                        _service(
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
            say(f"published dataset {dataset_did}\npublished algorithm {algo_did}")

            for did, service_id in ((dataset_did, "compute"), (algo_did, "access")):
                token = await publisher.create_datatoken(did, service_id)
                await publisher.mint(token, consumer.address, 1)
            dataset_order = await consumer.order(dataset_did, "compute")
            algo_order = await consumer.order(algo_did, "access")
            say(f"consumer {consumer.address} ordered both assets")

            environments = (
                await consumer.compute.ListComputeEnvironments(provider_pb2.ListComputeEnvironmentsRequest())
            ).environments
            environment = next(e for e in environments if e.available)
            started = time.monotonic()
            response = await consumer.start(
                provider_pb2.ComputeSpec(
                    dataset=provider_pb2.AssetOrder(did=dataset_did, service_id="compute", order_id=dataset_order),
                    algorithm_asset=provider_pb2.AssetOrder(did=algo_did, service_id="access", order_id=algo_order),
                    environment_id=environment.id,
                )
            )
            job_id = response.job_id
            say(f"job {job_id} started in environment {environment.id}")
            statuses = []
            job = response.job
            async for job in consumer.watch(job_id):
                if not statuses or statuses[-1] != job.status:
                    statuses.append(job.status)
                    say(f"  {time.monotonic() - started:7.3f} s  status {job.status:>2}  {TEXT[Status(job.status)]}")
            elapsed = time.monotonic() - started
            details = await consumer.details(job_id)
            job = details.job
            outcome = {
                "job_id": job_id,
                "statuses": statuses,
                "status": job.status,
                "seconds": elapsed,
                "end_reason": job.end_reason,
                "error": job.error_message,
            }
            if job.status != Status.FINISHED or job.end_reason != common_pb2.END_REASON_COMPLETED:
                say(f"job ended with status {job.status}: {job.error_message or job.status_text}")
                return {**outcome, "ok": False}
            entry = next(f for f in job.results.files if f.path == "result.json")
            _, body = await consumer.result(job_id, entry.index)
            # one small file, once, at the end of the demo: no need for a thread
            out_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
            saved = out_dir / f"{job_id}-result.json"
            saved.write_bytes(body)
            result = untrusted.parse_json(body, "result.json")
            ok = result == EXPECTED and hashlib.sha256(body).hexdigest() == entry.sha256
            say(f"result {result} saved to {saved}")
            say(f"job took {elapsed:.3f} s from StartCompute to status 70; result {'correct' if ok else 'WRONG'}")
            return {**outcome, "ok": ok, "result": result, "saved": str(saved)}
    finally:
        http_server.shutdown()


def provider_running(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, int(port))) == 0


async def demo_main() -> int:
    import os

    from cli.stack import from_environment, start_stack

    provider, operator, engine = from_environment()
    stack = None
    if provider_running(provider.address):
        print(f"using the provider already running on {provider.address}")
        address = provider.address
    else:
        # The demo's files are served from 127.0.0.1, which pod_config refuses
        # by default (it guards the publisher's network): allow it for this run.
        os.environ.setdefault("C2D_STAGING_ALLOW_HOSTS", "127.0.0.1")
        stack = await start_stack(provider, operator, engine)
        address = stack.provider_address
        await asyncio.sleep(0.2)
    try:
        for _ in range(50):  # the operator learns the engine's environments from its first heartbeat
            if await _environment_ready(address):
                break
            await asyncio.sleep(0.1)
        outcome = await run_demo(address, settings.data_dir() / "results-downloaded")
    finally:
        if stack is not None:
            await stack.stop()
    return 0 if outcome["ok"] else 1


async def _environment_ready(address: str) -> bool:
    from c2d.provider.v1 import provider_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = provider_pb2_grpc.ProviderServiceStub(channel)
        try:
            response = await stub.ListComputeEnvironments(provider_pb2.ListComputeEnvironmentsRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        return any(e.available for e in response.environments)
