"""The pod_publish program: upload the job's results, report the manifest.

Runs once per job with the job's token; talks to the engine's
JobAgentService and, when the job asks for its results as a new asset, to
the provider's AssetService with the provider's grant from the workflow (see
services/provider/domain/results_grants.py). Its log (the operator's
publish.log) records each step with sizes and durations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import job_agent_pb2, job_agent_pb2_grpc
from c2d.provider.v1 import asset_pb2, asset_pb2_grpc
from plumbing import auth, pods, storage
from plumbing.statuses import Status
from services.pod_publish import publishing

log = logging.getLogger("c2d.pod_publish")
REGISTER_ATTEMPTS = 5


class AssetRegistrationFailed(Exception):
    pass


async def register_results_asset(
    workflow: common_pb2.Workflow, job_id: str, results: common_pb2.ResultsManifest
) -> str:
    """Registers the results as the consumer's new asset; returns its DID."""
    # the deployment's setting wins; else the provider that started the job said where it listens
    address = os.environ.get("C2D_PROVIDER_ADDRESS") or workflow.provider_address
    if not address:
        raise AssetRegistrationFailed("no provider address: set C2D_PROVIDER_ADDRESS in the engine's environment")
    if not workflow.results_asset_grant:
        raise AssetRegistrationFailed("the workflow carries no results-asset grant from the provider")
    request = asset_pb2.RegisterResultsAssetRequest(job_id=job_id, grant=workflow.results_asset_grant, results=results)
    async with grpc.aio.insecure_channel(address) as channel:
        assets = asset_pb2_grpc.AssetServiceStub(channel)
        for attempt in range(REGISTER_ATTEMPTS):
            try:
                return (await assets.RegisterResultsAsset(request, timeout=30)).did
            except grpc.aio.AioRpcError as exc:
                retry = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if not retry or attempt == REGISTER_ATTEMPTS - 1:
                    raise AssetRegistrationFailed(
                        f"the provider at {address} answered {exc.code().name}: {exc.details()}"
                    ) from None
                log.info("registering the results asset: %s; retry %d", exc.code().name, attempt + 1)
                await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


async def run(pod: pods.Pod, channel: Any) -> int:
    job_id, data_root = pod.job_id, pod.data_root
    metadata = auth.bearer(pod.token)
    started = time.monotonic()
    agent = job_agent_pb2_grpc.JobAgentServiceStub(channel)
    response = await agent.GetWorkflow(job_agent_pb2.GetWorkflowRequest(job_id=job_id), metadata=metadata)
    workflow = response.workflow
    log.info("fetched the workflow in %.3f s", time.monotonic() - started)
    store = None
    manifest = None
    try:
        with tempfile.TemporaryDirectory(prefix="c2d-publish-") as scratch:
            step = time.monotonic()
            collected = publishing.collect(data_root, workflow.pack_outputs, Path(scratch))
            config = storage.configured()
            config = dataclasses.replace(
                config, part_size=publishing.part_size_for(config.part_size, collected.largest_file)
            )
            store = storage.open_store(config)
            log.info(
                "collected %d files (%d bytes, %d skipped) in %.3f s; publishing to %s storage",
                len(collected.sources),
                collected.total_bytes,
                len(collected.skipped),
                time.monotonic() - step,
                store.kind,
            )
            step = time.monotonic()
            manifest = await asyncio.to_thread(publishing.publish, store, job_id, collected)
            log.info("uploaded %d files in %.3f s", len(manifest["files"]), time.monotonic() - step)
        results = json_format.ParseDict(manifest, common_pb2.ResultsManifest())
        results_did = ""
        if workflow.publish_results_as_asset:
            step = time.monotonic()
            results_did = await register_results_asset(workflow, job_id, results)
            log.info("registered the results as asset %s in %.3f s", results_did, time.monotonic() - step)
    except (publishing.PublishFailed, storage.StorageError, AssetRegistrationFailed) as exc:
        if isinstance(exc, AssetRegistrationFailed):
            message = f"results upload failed: registering the results as an asset failed: {exc}"
            # the job fails, so nothing may stay behind in storage
            await asyncio.to_thread(publishing.remove, store, [f["location"] for f in manifest["files"]])  # type: ignore[arg-type,index]
        elif isinstance(exc, publishing.PublishFailed):
            message = str(exc)
        else:
            message = f"results upload failed: {exc}"
        log.error("%s", message)
        await agent.ReportProgress(
            job_agent_pb2.ReportProgressRequest(
                job_id=job_id,
                status=Status.RESULTS_UPLOAD_FAILED,  # type: ignore[arg-type]
                error_code="results_asset_failed"
                if isinstance(exc, AssetRegistrationFailed)
                else "results_upload_failed",
                message=message,
            ),
            metadata=metadata,
        )
        return 1
    step = time.monotonic()
    await agent.ReportResults(
        job_agent_pb2.ReportResultsRequest(job_id=job_id, results=results, results_did=results_did), metadata=metadata
    )
    log.info("reported the manifest in %.3f s", time.monotonic() - step)
    total = sum(f.size for f in results.files)
    log.info("published %d files (%d bytes) in %.3f s", len(results.files), total, time.monotonic() - started)
    return 0


def main() -> None:
    pods.main("pod_publish", run)
