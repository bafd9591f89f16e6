"""`c2d demo`: one real job through every component.

Publishes a small CSV dataset and a Python algorithm from descriptions, as
`c2d asset publish` does (their files inline, sealed for the provider), gives
the consumer datatokens, starts the job (ordering both assets), prints each
status as it arrives, and downloads the result and the algorithm's log,
checked against the provider-signed manifest.

serve_files and _service are the tests' helpers (an HTTP file server, a
DDO service entry).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from c2d.common.v1 import common_pb2
from c2d_sdk import AsyncClient, ComputeRequest
from cli.client import connect, load_or_create_key
from plumbing import settings, untrusted
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


def descriptions() -> dict[str, dict[str, Any]]:
    """The demo's algorithm and dataset, as `c2d asset publish` reads them (files beside them)."""
    container = {"entrypoint": "python3 $ALGO", "image": "python", "tag": "3.11", "checksum": IMAGE_DIGEST}
    return {
        "algorithm": {
            "type": "algorithm",
            "name": "Mean temperature",
            "author": "c2d demo",
            "license": "MIT",
            "language": "python",
            "files": ["mean.py"],
            "container": container,
            "timeout": 3600,
        },
        "dataset": {
            "type": "dataset",
            "name": "City temperatures",
            "author": "c2d demo",
            "license": "CC0",
            "files": ["weather.csv"],
            "timeout": 3600,
            "compute": {"allow_raw_algorithm": False, "allow_network": False},
        },
    }


async def run_demo(
    provider_address: str, out_dir: Path, say: Callable[[str], object] = print, consumer_key: str | None = None
) -> dict[str, Any]:
    """Runs the demo job against a provider; returns what happened.

    The files travel inline, sealed in the DDOs (a local file in a description),
    so any running stack stages them: no server of the demo's to allow.
    The consumer is ``consumer_key``'s account (default: one kept in the data directory)."""
    data = settings.data_dir()
    consumer_key = consumer_key or load_or_create_key(data / "consumer.key")
    files = tempfile.TemporaryDirectory(prefix="c2d-demo-")
    base = Path(files.name)
    (base / "mean.py").write_text(ALGORITHM)
    (base / "weather.csv").write_text(CSV)
    try:
        async with connect(provider_address) as channel:
            publisher = AsyncClient(channel, load_or_create_key(data / "demo-publisher.key"))
            consumer = AsyncClient(channel, consumer_key)
            described = descriptions()
            algorithm = await publisher.publish_asset(described["algorithm"], base)
            trusted = {"did": algorithm.did, "files_checksum": algorithm.files_checksum}
            described["dataset"]["compute"]["trusted_algorithms"] = [trusted]
            dataset = await publisher.publish_asset(described["dataset"], base)
            say(f"published dataset {dataset.did}\npublished algorithm {algorithm.did}")
            for asset in (dataset, algorithm):
                await publisher.mint(asset.datatoken, consumer.address, 1)
            say(f"consumer {consumer.address} holds a datatoken of each")

            started = time.monotonic()
            response = await consumer.start_compute(ComputeRequest(datasets=[dataset.did], algorithm=algorithm.did))
            job_id = response.job_id
            say(f"job {job_id} started in environment {response.job.environment_id} (both assets ordered)")
            statuses: list[int] = []
            async for job in consumer.watch(job_id):
                if not statuses or statuses[-1] != job.status:
                    statuses.append(job.status)
                    say(f"  {time.monotonic() - started:7.3f} s  status {job.status:>2}  {TEXT[Status(job.status)]}")
            elapsed = time.monotonic() - started
            job = await consumer.job(job_id)
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
            # checked against the provider-signed manifest as they arrive
            downloaded = await consumer.download_results(job_id, out_dir / job_id)
            saved = {file.path: file.saved_to for file in downloaded}
            # what a job wrote is hostile input; one small file, read once
            result = untrusted.parse_json(saved["result.json"].read_bytes(), "result.json")
            ok = result == EXPECTED
            say(f"result {result} saved to {saved['result.json']}")
            if "algorithm.log" in saved:
                say(f"the algorithm's log saved to {saved['algorithm.log']}")
            say(f"job took {elapsed:.3f} s from StartCompute to status 70; result {'correct' if ok else 'WRONG'}")
            log = str(saved.get("algorithm.log", ""))
            return {**outcome, "ok": ok, "result": result, "saved": str(saved["result.json"]), "log": log}
    finally:
        files.cleanup()


def provider_running(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, int(port))) == 0


async def demo_main(
    address: str, consumer_key: str, out_dir: Path, say: Callable[[str], object] = print
) -> dict[str, Any]:
    """`c2d demo`: against the provider at ``address``, or a stack of its own when none answers there;
    returns what run_demo says happened."""
    from cli.stack import from_environment, start_stack

    stack = None
    if provider_running(address):
        say(f"using the provider already running on {address}")
    else:
        say(f"no provider on {address}: starting one for the demo (data in {settings.data_dir()})")
        stack = await start_stack(*from_environment())
        address = stack.provider_address
    try:
        async with AsyncClient(address) as probe:
            # the operator learns the environments from the engine's first heartbeat
            for _ in range(100):
                if any(e.available for e in await probe.environments()):
                    break
                await asyncio.sleep(0.1)
        outcome = await run_demo(address, out_dir, say, consumer_key)
    finally:
        if stack is not None:
            await stack.stop()
    return outcome
