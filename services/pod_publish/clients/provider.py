"""pod_publish's call to the provider's AssetService: register the results as the consumer's asset.

The workflow carries the provider's grant for it (see
services/provider/domain/results_grants.py) and where the provider listens.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import grpc
from google.protobuf import json_format

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import asset_pb2, asset_pb2_grpc
from plumbing import tracing
from services.pod_publish.domain.publishing import AssetRegistrationFailed

log = logging.getLogger("c2d.pod_publish")
REGISTER_ATTEMPTS = 5


async def register_results_asset(workflow: common_pb2.Workflow, job_id: str, manifest: dict[str, Any]) -> str:
    """Registers the results as the consumer's new asset; returns its DID (a publishing.Registrar)."""
    # the deployment's setting wins; else the provider that started the job said where it listens
    address = os.environ.get("C2D_PROVIDER_ADDRESS") or workflow.provider_address
    if not address:
        raise AssetRegistrationFailed("no provider address: set C2D_PROVIDER_ADDRESS in the engine's environment")
    if not workflow.results_asset_grant:
        raise AssetRegistrationFailed("the workflow carries no results-asset grant from the provider")
    results = json_format.ParseDict(manifest, common_pb2.ResultsManifest())
    request = asset_pb2.RegisterResultsAssetRequest(job_id=job_id, grant=workflow.results_asset_grant, results=results)
    async with grpc.aio.insecure_channel(address, interceptors=tracing.client_interceptors() or None) as channel:
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
