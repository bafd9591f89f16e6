"""AssetService through real gRPC: paging and filters, updates by the owner
only, replays refused, and encrypted files that stay opaque."""

from __future__ import annotations

import json

import grpc

from c2d.provider.v1 import asset_pb2
from services.provider.domain import errors as codes
from testkit.market import SECRET_PATH, Market, assert_refusal, refused


async def _list(market: Market, **fields) -> list[asset_pb2.AssetSummary]:  # type: ignore[no-untyped-def]
    """Every page of a listing, two at a time."""
    assets, token = [], ""
    while True:
        page = await market.consumer.assets.ListAssets(
            asset_pb2.ListAssetsRequest(page_size=2, page_token=token, **fields)
        )
        assert len(page.assets) <= 2
        assets += page.assets
        token = page.next_page_token
        if not token:
            return assets


async def test_list_assets_pages_through_everything_and_filters(market: Market):
    datasets = [await market.publish_dataset(raw=True) for _ in range(3)]
    algorithms = [await market.publish_algorithm(), await market.publish_algorithm(publisher=market.other)]
    everything = await _list(market)
    assert sorted(a.did for a in everything) == sorted(datasets + algorithms)
    assert len({a.did for a in everything}) == 5  # no page repeats an asset
    assert sorted(a.did for a in await _list(market, type="dataset")) == sorted(datasets)
    assert sorted(a.did for a in await _list(market, type="algorithm")) == sorted(algorithms)
    assert [a.did for a in await _list(market, owner=market.other.address)] == [algorithms[1]]
    assert [a.did for a in await _list(market, type="dataset", owner=market.other.address)] == []
    summary = next(a for a in everything if a.did == datasets[0])
    assert (summary.name, summary.type, summary.owner) == ("City temperatures", "dataset", market.publisher.address)


async def test_list_assets_refuses_bad_paging_and_filters(market: Market):
    for request, code, word in [
        (asset_pb2.ListAssetsRequest(page_size=100_000), "page_size_invalid", "page_size"),
        (asset_pb2.ListAssetsRequest(type="movie"), "type_invalid", "dataset or algorithm"),
        (asset_pb2.ListAssetsRequest(page_token="'; drop table assets"), "page_token_invalid", "page_token"),
    ]:
        error = await refused(market.consumer.assets.ListAssets(request))
        assert_refusal(error, grpc.StatusCode.INVALID_ARGUMENT, code, word)


async def test_the_owner_updates_an_asset(market: Market):
    dataset = await market.publish_dataset(raw=True)
    ddo = json.loads((await market.consumer.assets.GetAsset(asset_pb2.GetAssetRequest(did=dataset))).ddo_json)
    ddo["metadata"]["name"] = "City temperatures, 2025 edition"
    request = asset_pb2.UpdateAssetRequest(did=dataset, ddo_json=json.dumps(ddo))
    await market.publisher.assets.UpdateAsset(market.publisher.signed("UpdateAsset", request))
    got = await market.consumer.assets.GetAsset(asset_pb2.GetAssetRequest(did=dataset))
    assert json.loads(got.ddo_json)["metadata"]["name"] == "City temperatures, 2025 edition"
    assert got.owner == market.publisher.address
    # Another address cannot, even with a valid DDO.
    error = await refused(market.other.assets.UpdateAsset(market.other.signed("UpdateAsset", request)))
    assert_refusal(error, grpc.StatusCode.PERMISSION_DENIED, codes.NOT_OWNER, market.publisher.address)


async def test_a_replayed_successful_publish_is_refused_and_publishes_nothing(market: Market):
    dataset = await market.publish_dataset(raw=True)
    ddo = json.loads((await market.consumer.assets.GetAsset(asset_pb2.GetAssetRequest(did=dataset))).ddo_json)
    request = market.publisher.signed(
        "PublishAsset", asset_pb2.PublishAssetRequest(ddo_json=json.dumps(ddo), salt="once")
    )
    did = (await market.publisher.assets.PublishAsset(request)).did
    replay = await refused(market.publisher.assets.PublishAsset(request))
    assert_refusal(replay, grpc.StatusCode.PERMISSION_DENIED, codes.NONCE_INVALID, "already used")
    assert [a.did for a in await _list(market) if a.did == did] == [did]


async def test_get_asset_shows_the_files_encrypted_only(market: Market):
    dataset = await market.publish_dataset(raw=True)
    got = await market.consumer.assets.GetAsset(asset_pb2.GetAssetRequest(did=dataset))
    files = json.loads(got.ddo_json)["services"][0]["files"]
    assert files.startswith("0x") and SECRET_PATH not in got.ddo_json and market.base_url not in got.ddo_json
