"""AssetService: publish and resolve DDOs, seal file locations."""

from __future__ import annotations

import json

from google.protobuf import json_format
from sqlalchemy.orm import Session

from c2d.provider.v1 import asset_pb2, asset_pb2_grpc
from plumbing import errors
from plumbing.assets import SHA256_SYNTAX, is_sha256_hex
from plumbing.database import Database
from plumbing.rpc_types import UnaryContext
from services.provider.api.authentication import authenticate
from services.provider.domain import ddos, file_locations, sealing
from services.provider.domain import errors as codes
from services.provider.domain.errors import Refusal
from services.provider.domain.results_assets import RESULTS_KIND
from services.provider.domain.signed_requests import RequestVerifier
from services.provider.persistence import store
from services.provider.persistence.catalog import AssetCatalog
from services.provider.persistence.models import Asset

MAX_PAGE = 1000


class AssetServicer(asset_pb2_grpc.AssetServiceServicer):
    def __init__(
        self,
        db: Database,
        keys: sealing.ProviderKeys,
        verifier: RequestVerifier,
        assets: AssetCatalog,
        results_storage: file_locations.ResultsStorage,
    ) -> None:
        self._db = db
        self._keys = keys
        self._verifier = verifier
        self._assets = assets
        self._results_storage = results_storage

    def _stored_kind(self, ddo: ddos.Ddo, owner: str, did: str) -> str:
        """The kind to store an asset as, once every service's files are ones
        its publisher may name: RESULTS_KIND if they are results locations
        this provider issued for it (a results asset), else its DDO's type."""
        issued = False
        for index, service in enumerate(ddo.services):
            files = sealing.open_files(self._keys, service.files)  # refuses files not sealed for this provider
            issued |= file_locations.check_asset_files(
                self._keys,
                files,
                owner=owner,
                did=did,
                results=self._results_storage,
                field=f"services[{index}].files",
            )
        return RESULTS_KIND if issued else ddo.metadata.type

    async def EncryptFiles(
        self,
        request: asset_pb2.EncryptFilesRequest,
        context: UnaryContext[asset_pb2.EncryptFilesRequest, asset_pb2.EncryptFilesResponse],
    ) -> asset_pb2.EncryptFilesResponse:
        if not request.files:
            raise errors.InvalidArgument("name at least one file to encrypt", "files_missing", field="files")
        files = []
        for index, location in enumerate(request.files):
            entry = json_format.MessageToDict(location, preserving_proto_field_name=True)
            file_locations.check_publisher_file(entry, self._results_storage, f"files[{index}]")
            # pod_config verifies the bytes against it and refuses any other spelling: refuse it here, once
            if location.checksum and not is_sha256_hex(location.checksum):
                raise errors.InvalidArgument(
                    f"files[{index}].checksum must be a sha256 digest, {SHA256_SYNTAX}",
                    "file_checksum_invalid",
                    field=f"files[{index}].checksum",
                )
            files.append(entry)
        return asset_pb2.EncryptFilesResponse(encrypted_files=sealing.seal_files(self._keys.public_key_hex, files))

    async def PublishAsset(
        self,
        request: asset_pb2.PublishAssetRequest,
        context: UnaryContext[asset_pb2.PublishAssetRequest, asset_pb2.PublishAssetResponse],
    ) -> asset_pb2.PublishAssetResponse:
        owner = await authenticate(self._verifier, "PublishAsset", request)
        if not request.salt:
            raise errors.InvalidArgument(
                "salt is required (it makes the DID unique per publisher)", "salt_missing", field="salt"
            )
        did = ddos.derive_did(owner, request.salt)
        data, ddo = ddos.parse_ddo_json(request.ddo_json, owner, did)
        row = Asset(
            did=did,
            owner=owner,
            asset_type=self._stored_kind(ddo, owner, did),
            name=ddo.metadata.name,
            ddo_json=json.dumps(data, sort_keys=True),
            created_at=store.utcnow(),
        )
        await self._db.run(lambda s: store.create_asset(s, row))
        return asset_pb2.PublishAssetResponse(did=did)

    async def GetAsset(
        self,
        request: asset_pb2.GetAssetRequest,
        context: UnaryContext[asset_pb2.GetAssetRequest, asset_pb2.GetAssetResponse],
    ) -> asset_pb2.GetAssetResponse:
        asset = await self._assets.resolve(request.did)
        return asset_pb2.GetAssetResponse(ddo_json=asset.ddo_json, owner=asset.owner)

    async def ListAssets(
        self,
        request: asset_pb2.ListAssetsRequest,
        context: UnaryContext[asset_pb2.ListAssetsRequest, asset_pb2.ListAssetsResponse],
    ) -> asset_pb2.ListAssetsResponse:
        page_size = request.page_size or 100
        if page_size > MAX_PAGE:
            raise errors.InvalidArgument(
                f"page_size must be at most {MAX_PAGE}", "page_size_invalid", field="page_size"
            )
        if request.type and request.type not in ddos.ASSET_TYPES:
            raise errors.InvalidArgument("type must be dataset or algorithm", "type_invalid", field="type")
        if request.page_token and not ddos.is_did(request.page_token):
            raise errors.InvalidArgument(
                "page_token is not one this provider issued", "page_token_invalid", field="page_token"
            )
        rows = await self._db.run(
            lambda s: store.list_assets(s, request.type, request.owner, page_size, request.page_token)
        )
        token = rows[page_size - 1].did if len(rows) > page_size else ""
        return asset_pb2.ListAssetsResponse(
            assets=[
                asset_pb2.AssetSummary(did=r.did, name=r.name, type=r.asset_type, owner=r.owner)
                for r in rows[:page_size]
            ],
            next_page_token=token,
        )

    async def UpdateAsset(
        self,
        request: asset_pb2.UpdateAssetRequest,
        context: UnaryContext[asset_pb2.UpdateAssetRequest, asset_pb2.UpdateAssetResponse],
    ) -> asset_pb2.UpdateAssetResponse:
        caller = await authenticate(self._verifier, "UpdateAsset", request)
        asset = await self._assets.resolve(request.did)
        if asset.owner != caller:
            raise Refusal(codes.NOT_OWNER, f"only the owner {asset.owner} may update {request.did}")
        data, ddo = ddos.parse_ddo_json(request.ddo_json, asset.owner, request.did)
        kind = self._stored_kind(ddo, asset.owner, request.did)

        def update(session: Session) -> None:
            stored = store.read_asset(session, request.did)
            assert stored is not None  # resolved above, and assets are never deleted
            stored.ddo_json = json.dumps(data, sort_keys=True)
            stored.name, stored.asset_type = ddo.metadata.name, kind

        await self._db.run(update)
        return asset_pb2.UpdateAssetResponse()
