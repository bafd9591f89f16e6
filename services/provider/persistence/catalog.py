"""The published assets as the servicers and the compute plan read them."""

from __future__ import annotations

from plumbing.database import Database
from services.provider.domain import ddos
from services.provider.domain import errors as codes
from services.provider.domain.errors import Refusal
from services.provider.persistence import store


class AssetCatalog:
    """Resolves DIDs to the DDOs published on this provider (the compute
    plan's `AssetCatalog` port)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def resolve(self, did: str) -> ddos.PublishedAsset:
        """The published asset, or a Refusal: did_invalid, did_not_found."""
        ddos.parse_did(did)
        row = await self._db.run(lambda s: store.read_asset(s, did))
        if row is None:
            raise Refusal(codes.DID_NOT_FOUND, f"asset {did} is not published on this provider")
        _, ddo = ddos.parse_ddo_json(row.ddo_json, row.owner, did)
        return ddos.PublishedAsset(did=did, owner=row.owner, ddo=ddo, ddo_json=row.ddo_json)
