"""Results as a new asset: AssetService.RegisterResultsAsset and DownloadAssetFile.

Who may register. Not a consumer, and not with the internal service token:
that credential opens the operator-service and the engine, and a pod should
never hold it. Instead StartCompute puts a *grant* in the job's workflow (the
workflow reaches only pod_config and pod_publish, through the engine, never
the algorithm): the provider's Ed25519 signature over {owner, the request key
of the orders that pay for the job, expiry}. The provider checks its own
signature, that those orders started exactly this job, that the job is still
running and owned by the grant's owner. So a grant is good for one job, one
owner, while that job publishes, and nothing else; a leaked grant cannot
create assets for anyone else or after the job ended.

What is registered. A dataset DDO owned by the consumer, with one "access"
service whose files (sealed for this provider, type "results") are the
manifest's storage locations; every location must be one this provider's
results storage holds, under the job's own prefix (IPFS: content-addressed,
checked by size), so a grant cannot turn arbitrary locations into an asset.
The DID is derived from the owner and the job id, so a retried registration
returns the same DID. Only the owner may download its files, through the
provider (DownloadAssetFile); nobody sees the locations.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from sqlalchemy import select

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import asset_pb2
from plumbing import errors, storage
from plumbing.database import Database
from plumbing.statuses import is_terminal
from services.provider.api import compute, results_download
from services.provider.api.assets import AssetServicer, parse_ddo_json, resolve
from services.provider.api.signatures import authenticate
from services.provider.domain import ddos, identity, sealing
from services.provider.domain import errors as codes
from services.provider.domain.canonical import canonical_json_bytes
from services.provider.domain.errors import Refusal
from services.provider.persistence import store
from services.provider.persistence.models import Asset, Order

GRANT_PREFIX = "c2dgrant1"
# Domain separation: the same key signs results statements.
_GRANT_CONTEXT = b"c2d results-asset grant v1\n"
# The binding to a live job is the real limit; the expiry caps a leaked grant's life.
GRANT_TTL_S = 7 * 24 * 3600
RESULTS_SERVICE = "results"
RESULTS_FILE_TYPE = "results"  # a location in this provider's results storage


@dataclass(frozen=True)
class ResultsGrant:
    owner: str
    request_key: str
    expires: int


def mint_grant(keys: sealing.ProviderKeys, owner: str, request_key: str, now: float | None = None) -> str:
    payload = {
        "purpose": "results-asset",
        "owner": owner,
        "request": request_key,
        "expires": int(now if now is not None else time.time()) + GRANT_TTL_S,
    }
    body = canonical_json_bytes(payload)
    signature = sealing.sign_bytes(keys, _GRANT_CONTEXT + body)
    return f"{GRANT_PREFIX}.{base64.urlsafe_b64encode(body).decode().rstrip('=')}.{signature}"


def open_grant(keys: sealing.ProviderKeys, grant: str, now: float | None = None) -> ResultsGrant:
    """The grant's claims, once its signature and expiry check out."""
    refused = errors.Unauthenticated(
        "grant is not a results-asset grant of this provider (pass the job's Workflow.results_asset_grant)",
        "grant_invalid",
    )
    prefix, _, rest = grant.partition(".")
    encoded, _, signature = rest.partition(".")
    if prefix != GRANT_PREFIX or not encoded or not signature:
        raise refused
    try:
        body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (ValueError, binascii.Error):
        raise refused from None
    if not sealing.verify_bytes(keys.verify_key_hex, _GRANT_CONTEXT + body, signature):
        raise refused
    claims = json.loads(body)  # signed by us: well-formed
    if claims.get("purpose") != "results-asset":
        raise refused
    if claims["expires"] < (now if now is not None else time.time()):
        raise errors.PermissionDenied("the results-asset grant expired", "grant_expired")
    return ResultsGrant(owner=claims["owner"], request_key=claims["request"], expires=claims["expires"])


def _results_did(owner: str, job_id: str) -> str:
    return ddos.derive_did(owner, f"c2d-results:{job_id}")


class ResultsAssetServicer(AssetServicer):
    """AssetService with the two results-asset RPCs."""

    def __init__(self, db: Database, keys: sealing.ProviderKeys, jobs: compute.ComputeServicer) -> None:
        super().__init__(db, keys)
        self._jobs = jobs
        self._store = storage.open_store(storage.configured())
        self.service_endpoint = "grpc://127.0.0.1"  # server.py sets the bound address

    # -- registering ------------------------------------------------------------------

    async def RegisterResultsAsset(self, request, context):  # type: ignore[override]
        if not request.job_id:
            raise errors.InvalidArgument("job_id is required", "job_id_missing")
        grant = open_grant(self._keys, request.grant)
        await self._check_grant_is_for(grant, request.job_id)
        job = await self._jobs.job(request.job_id)
        if job.owner != grant.owner:
            raise errors.PermissionDenied(f"the grant is not for job {request.job_id}", "grant_wrong_job")
        if is_terminal(job.status):
            raise errors.FailedPrecondition(
                f"job {job.job_id} has ended; its results asset can only be registered while it publishes",
                "job_ended",
            )
        files = await self._sealable_files(job.job_id, request.results)
        did = _results_did(job.owner, job.job_id)
        if await self._db.run(lambda s: store.read_asset(s, did)) is not None:
            return asset_pb2.RegisterResultsAssetResponse(did=did)  # a retry: same job, same asset
        data, ddo = parse_ddo_json(json.dumps(self._ddo(job, did, files)), job.owner, did)
        row = Asset(
            did=did,
            owner=job.owner,
            asset_type=ddo.metadata.type,
            name=ddo.metadata.name,
            ddo_json=json.dumps(data, sort_keys=True),
            created_at=store.utcnow(),
        )
        try:
            await self._db.run(lambda s: store.create_asset(s, row))
        except Refusal:
            if await self._db.run(lambda s: store.read_asset(s, did)) is None:
                raise  # not a concurrent retry of the same registration
        return asset_pb2.RegisterResultsAssetResponse(did=did)

    async def _check_grant_is_for(self, grant: ResultsGrant, job_id: str) -> None:
        # StartCompute records the job on the orders it claimed under the grant's request key
        jobs = await self._db.run(
            lambda s: list(s.scalars(select(Order.used_by_job_id).where(Order.claimed_by_request == grant.request_key)))
        )
        if not jobs or any(j not in (job_id, None) for j in jobs):
            raise errors.PermissionDenied(f"the grant is not for job {job_id}", "grant_wrong_job")
        if None in jobs:  # StartCompute has not recorded the job yet: a moment's race
            raise errors.Unavailable(f"job {job_id} is still being recorded; try again", "job_not_recorded")

    async def _sealable_files(self, job_id: str, results: common_pb2.ResultsManifest) -> list[dict[str, Any]]:
        if not results.files:
            raise errors.InvalidArgument("results lists no files", "results_empty")
        files = []
        for entry in results.files:
            where = f"results.files[{entry.index}] ({entry.path!r})"
            location = entry.location
            try:
                kind = storage.kind_of(location)
            except storage.StorageError as exc:
                raise errors.InvalidArgument(f"{where}: {exc}", "location_invalid") from None
            if kind != self._store.kind:
                raise errors.InvalidArgument(
                    f"{where}: {location} is not in this provider's {self._store.kind} results storage",
                    "location_invalid",
                )
            if not self._inside_job(location, job_id):
                raise errors.PermissionDenied(
                    f"{where}: {location} is not one of job {job_id}'s results", "location_foreign"
                )
            try:
                size = await asyncio.to_thread(self._store.size, location)
            except storage.ObjectNotFound:
                raise errors.InvalidArgument(f"{where}: nothing is stored at {location}", "location_missing") from None
            except storage.StorageError as exc:
                raise errors.Unavailable(
                    f"{where}: the results storage did not answer: {exc}", "storage_unavailable"
                ) from None
            if size != entry.size:
                raise errors.InvalidArgument(
                    f"{where}: {location} holds {size} bytes, the manifest says {entry.size}", "size_mismatch"
                )
            files.append(
                {
                    "type": RESULTS_FILE_TYPE,
                    "url": location,
                    "path": entry.path,
                    "size": entry.size,
                    "sha256": entry.sha256,
                    "kind": common_pb2.ResultKind.Name(entry.kind),
                    "content_type": entry.content_type,
                }
            )
        return files

    def _inside_job(self, location: str, job_id: str) -> bool:
        # pod_publish writes every result under "<job id>/"; IPFS has no prefixes
        if location.startswith("local:"):
            return location[len("local:") :].startswith(f"{job_id}/")
        if location.startswith("s3://"):
            bucket, key = storage.parse_s3_location(location)
            return bucket == getattr(self._store, "bucket", None) and key.startswith(f"{job_id}/")
        return location.startswith("ipfs://")

    def _ddo(self, job: common_pb2.Job, did: str, files: list[dict[str, Any]]) -> dict[str, Any]:
        algorithm = job.algorithm_did or "a raw algorithm"
        return {
            "version": "4.1.0",
            "metadata": {
                "type": "dataset",
                "name": f"Results of compute job {job.job_id}",
                "author": job.owner,
                "license": "proprietary",
                "description": f"Results of {algorithm} on {', '.join(job.dataset_dids)}",
                "additionalInformation": {
                    "c2dResults": {
                        "jobId": job.job_id,
                        "datasetDids": list(job.dataset_dids),
                        "algorithmDid": job.algorithm_did,
                    },
                },
            },
            "services": [
                {
                    "id": RESULTS_SERVICE,
                    "type": "access",
                    "timeout": 0,
                    "files": sealing.seal_files(self._keys.public_key_hex, files),
                    "datatokenAddress": ddos.datatoken_address(did, RESULTS_SERVICE),
                    "serviceEndpoint": self.service_endpoint,
                }
            ],
            "credentials": {"allow": [{"type": "address", "values": [job.owner]}]},
        }

    # -- downloading ------------------------------------------------------------------

    async def DownloadAssetFile(self, request, context):  # type: ignore[override]
        caller = await authenticate(self._db, "DownloadAssetFile", request)
        row, ddo = await resolve(self._db, request.did)
        if caller != identity.normalize_address(row.owner):
            raise Refusal(codes.NOT_OWNER, f"only the owner of {request.did} may download its files")
        service_id = request.service_id or RESULTS_SERVICE
        service = ddo.service(service_id)
        if service is None:
            raise Refusal(codes.SERVICE_NOT_FOUND, f"{request.did} has no service {service_id!r}")
        files = sealing.open_files(self._keys, service.files)
        if any(f.get("type") != RESULTS_FILE_TYPE for f in files):
            raise errors.FailedPrecondition(
                f"{request.did} is not a results asset: only results assets' files can be downloaded",
                "not_results_asset",
            )
        if request.index >= len(files):
            raise errors.NotFound(f"{request.did} has no file {request.index} (it has {len(files)})", "file_not_found")
        found = files[request.index]
        entry = json_format.ParseDict(
            {k: v for k, v in found.items() if k not in ("type", "url")} | {"index": request.index},
            common_pb2.ResultFile(),
        )
        if request.offset > entry.size:
            raise errors.InvalidArgument(
                f"offset {request.offset} is beyond the file's {entry.size} bytes", "offset_invalid"
            )
        first = True
        async with contextlib.aclosing(
            results_download.stream_chunks(self._store, found["url"], request.offset)
        ) as chunks:
            async for data, offset in chunks:
                yield asset_pb2.DownloadAssetFileResponse(file=entry if first else None, data=data, offset=offset)
                first = False
        if first:  # an empty file (or offset at its end) still answers with its entry
            yield asset_pb2.DownloadAssetFileResponse(file=entry, offset=request.offset)
