"""Results as a new asset: AssetService.RegisterResultsAsset and DownloadAssetFile.

A job's pod_publish registers its results with the grant StartCompute put in
the job's workflow (domain/results_grants.py says who may, and why); the
asset is a dataset DDO owned by the job's owner whose files are results
locations this provider issues, signed for the job, its owner and the asset
(domain/results_assets.py, domain/file_locations.py). Every location must be
one this provider's results storage holds, under the job's own prefix (IPFS:
content-addressed, checked by size), so a grant cannot turn arbitrary
locations into an asset.

DownloadAssetFile serves a file to the asset's owner and the job's viewers
only, and only if this provider issued its location for this asset and
owner, the job is the owner's, and the location is one of the results the
job's own record lists: a location sealed by anyone else, or issued for
another job or asset, serves nothing. Nobody sees the locations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import asset_pb2
from plumbing import errors, storage
from plumbing.database import Database
from plumbing.rpc_types import StreamContext, UnaryContext
from plumbing.statuses import is_terminal
from services.provider.api.assets import AssetServicer
from services.provider.api.authentication import authenticate
from services.provider.api.downloads import recorded_results, stream_result_file
from services.provider.clients.operator import OperatorClient
from services.provider.domain import ddos, file_locations, identity, results_grants, sealing
from services.provider.domain import errors as codes
from services.provider.domain.errors import Refusal
from services.provider.domain.file_locations import RESULTS_FILE_TYPE
from services.provider.domain.results_assets import RESULTS_KIND, RESULTS_SERVICE, results_ddo, results_did
from services.provider.domain.signed_requests import RequestVerifier
from services.provider.persistence import store
from services.provider.persistence.catalog import AssetCatalog
from services.provider.persistence.models import Asset


class ResultsAssetServicer(AssetServicer):
    """AssetService with the two results-asset RPCs."""

    def __init__(
        self,
        db: Database,
        keys: sealing.ProviderKeys,
        verifier: RequestVerifier,
        assets: AssetCatalog,
        operator: OperatorClient,
        results: storage.ObjectStore,
        results_storage: file_locations.ResultsStorage,
    ) -> None:
        super().__init__(db, keys, verifier, assets, results_storage)
        self._operator = operator
        self._results = results
        self.service_endpoint = "grpc://127.0.0.1"  # server.py sets the bound address

    # -- registering ------------------------------------------------------------------

    async def RegisterResultsAsset(
        self,
        request: asset_pb2.RegisterResultsAssetRequest,
        context: UnaryContext[asset_pb2.RegisterResultsAssetRequest, asset_pb2.RegisterResultsAssetResponse],
    ) -> asset_pb2.RegisterResultsAssetResponse:
        if not request.job_id:
            raise errors.InvalidArgument("job_id is required", "job_id_missing", field="job_id")
        grant = results_grants.open_grant(self._keys, request.grant)
        jobs_of_orders = await self._db.run(lambda s: store.read_jobs_of_claimed_orders(s, grant.request_key))
        results_grants.check_grant_pays_for(grant, request.job_id, jobs_of_orders)
        job = await self._operator.get_job(request.job_id)
        results_grants.check_grant_holder(grant, request.job_id, job.owner)
        if is_terminal(job.status):
            raise errors.FailedPrecondition(
                f"job {job.job_id} has ended; its results asset can only be registered while it publishes",
                "job_ended",
            )
        files = await self._sealable_files(job.job_id, request.results)
        did = results_did(job.owner, job.job_id)
        if await self._db.run(lambda s: store.read_asset(s, did)) is not None:
            return asset_pb2.RegisterResultsAssetResponse(did=did)  # a retry: same job, same asset
        ddo_dict = results_ddo(
            self._keys, job_id=job.job_id, owner=job.owner, files=files, service_endpoint=self.service_endpoint
        )
        data, ddo = ddos.parse_ddo_json(json.dumps(ddo_dict), job.owner, did)
        row = Asset(
            did=did,
            owner=job.owner,
            asset_type=RESULTS_KIND,
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

    async def _sealable_files(self, job_id: str, results: common_pb2.ResultsManifest) -> list[dict[str, Any]]:
        if not results.files:
            raise errors.InvalidArgument("results lists no files", "results_empty", field="results.files")
        files = []
        for position, entry in enumerate(results.files):
            where = f"results.files[{entry.index}] ({entry.path!r})"
            field = f"results.files[{position}]"
            location = entry.location
            try:
                kind = storage.kind_of(location)
            except storage.StorageError as exc:
                raise errors.InvalidArgument(f"{where}: {exc}", "location_invalid", field=f"{field}.location") from None
            if kind != self._results.kind:
                raise errors.InvalidArgument(
                    f"{where}: {location} is not in this provider's {self._results.kind} results storage",
                    "location_invalid",
                    field=f"{field}.location",
                )
            if not self._results_storage.holds(location, job_id):
                raise errors.PermissionDenied(
                    f"{where}: {location} is not one of job {job_id}'s results", "location_foreign"
                )
            try:
                size = await asyncio.to_thread(self._results.size, location)
            except storage.ObjectNotFound:
                raise errors.InvalidArgument(
                    f"{where}: nothing is stored at {location}", "location_missing", field=f"{field}.location"
                ) from None
            except storage.StorageError as exc:
                raise errors.Unavailable(
                    f"{where}: the results storage did not answer: {exc}", "storage_unavailable"
                ) from None
            if size != entry.size:
                raise errors.InvalidArgument(
                    f"{where}: {location} holds {size} bytes, the manifest says {entry.size}",
                    "size_mismatch",
                    field=f"{field}.size",
                )
            files.append(
                {
                    "url": location,
                    "path": entry.path,
                    "size": entry.size,
                    "sha256": entry.sha256,
                    "kind": common_pb2.ResultKind.Name(entry.kind),
                    "content_type": entry.content_type,
                }
            )
        return files

    # -- downloading ------------------------------------------------------------------

    async def DownloadAssetFile(
        self,
        request: asset_pb2.DownloadAssetFileRequest,
        context: StreamContext[asset_pb2.DownloadAssetFileRequest, asset_pb2.DownloadAssetFileResponse],
    ) -> AsyncIterator[asset_pb2.DownloadAssetFileResponse]:
        caller = await authenticate(self._verifier, "DownloadAssetFile", request)
        asset = await self._assets.resolve(request.did)
        service_id = request.service_id or RESULTS_SERVICE
        service = asset.ddo.service(service_id)
        if service is None:
            raise Refusal(codes.SERVICE_NOT_FOUND, f"{request.did} has no service {service_id!r}")
        files = sealing.open_files(self._keys, service.files)
        if any(f.get("type") != RESULTS_FILE_TYPE for f in files):
            raise errors.FailedPrecondition(
                f"{request.did} is not a results asset: only results assets' files can be downloaded",
                "not_results_asset",
            )
        is_owner = caller == identity.normalize_address(asset.owner)
        not_yours = Refusal(
            codes.NOT_OWNER, f"only the owner of {request.did} and its job's viewers may download its files"
        )
        if request.index >= len(files):
            if not is_owner:
                raise not_yours  # a stranger learns nothing, not even how many files there are
            raise errors.NotFound(f"{request.did} has no file {request.index} (it has {len(files)})", "file_not_found")
        location = file_locations.open_results_location(
            self._keys, files[request.index], owner=asset.owner, did=asset.did, field=f"file {request.index}"
        )
        job = await self._job_of(asset, location)
        if not is_owner and (job is None or caller not in job.viewers):
            raise not_yours
        if job is None:
            raise errors.FailedPrecondition(
                f"the job behind {asset.did} was deleted, and its results with it", "results_expired"
            )
        recorded = next((f for f in recorded_results(job) if f.location == location.url), None)
        if recorded is None or not self._results_storage.holds(location.url, job.job_id):
            raise errors.PermissionDenied(
                f"file {request.index} of {request.did} is not one of its job's results", "results_location_foreign"
            )
        entry = common_pb2.ResultFile()
        entry.CopyFrom(recorded)
        entry.index, entry.location = request.index, ""  # the asset's numbering; nobody sees locations
        download = stream_result_file(
            self._results, location.url, entry, request.offset, asset_pb2.DownloadAssetFileResponse
        )
        async with contextlib.aclosing(download) as responses:  # closed at once if the consumer goes away
            async for response in responses:
                yield response

    async def _job_of(
        self, asset: ddos.PublishedAsset, location: file_locations.ResultsLocation
    ) -> common_pb2.Job | None:
        """The job a results location was issued for, checked to be the asset's owner's (None: deleted)."""
        try:
            job = await self._operator.get_job(location.job_id)
        except errors.NotFound:
            return None
        if identity.normalize_address(job.owner) != identity.normalize_address(asset.owner):
            raise errors.PermissionDenied(
                f"the results of {asset.did} belong to another owner's job", "results_location_foreign"
            )
        return job
