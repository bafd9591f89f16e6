"""Wires the Provider: database, keys, the signature settler, the operator
client, the results storage, and the servicers that use them."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from types import ModuleType

from c2d.provider.v1 import asset_pb2, asset_pb2_grpc, ledger_pb2, ledger_pb2_grpc, provider_pb2, provider_pb2_grpc
from plumbing import auth, fetching, job_files, logs, metrics, settings, storage
from plumbing.database import Database, sqlite_url
from plumbing.ethereum import Account
from plumbing.server import (
    Registration,
    RunningServer,
    configure_observability,
    local_address,
    serve_until_signalled,
    start_server,
)
from services.provider.api.compute import ComputeServicer
from services.provider.api.ledger import LedgerServicer
from services.provider.api.results_assets import ResultsAssetServicer
from services.provider.clients.algorithm_files import AlgorithmFiles
from services.provider.clients.operator import OperatorClient
from services.provider.domain.file_locations import ResultsStorage
from services.provider.domain.sealing import ProviderKeys
from services.provider.domain.signed_requests import RequestVerifier, Settler
from services.provider.metrics import CountedSettler
from services.provider.persistence import request_settling
from services.provider.persistence.catalog import AssetCatalog
from services.provider.persistence.models import Base
from services.provider.settings import ProviderSettings

log = logging.getLogger("c2d.provider")


def _name(module: ModuleType, service: str) -> str:
    return module.DESCRIPTOR.services_by_name[service].full_name


def load_keys(path: Path) -> tuple[ProviderKeys, str]:
    """The provider's keys and fee address, created on first start (mode 0600)."""
    fee_path = path.with_name(path.stem + "-fee.key")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_secret(path, ProviderKeys.generate().to_json())
    if not fee_path.exists():
        _write_secret(fee_path, Account.create().key.hex())
    return ProviderKeys.from_json(path.read_text()), Account.from_key(fee_path.read_text().strip()).address


def _write_secret(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process created it first
    with os.fdopen(fd, "w") as f:
        f.write(text)


async def start(config: ProviderSettings) -> RunningServer:
    logs.bind(component="provider")
    data = settings.data_dir()
    db = Database(config.database_url or sqlite_url(data / "provider.db"), Base.metadata)
    db.create_schema()
    settler: Settler = (
        request_settling.WorkerSettler(db.url) if config.signature_worker else request_settling.ThreadSettler(db)
    )
    server_metrics = metrics.Metrics("provider")
    verifier = RequestVerifier(CountedSettler(settler, server_metrics))
    keys, fee_address = load_keys(Path(config.keys_file) if config.keys_file else data / "provider-keys.json")
    operator = OperatorClient(config.operator_address, auth.service_token())
    catalog = AssetCatalog(db)
    results_config = storage.configured()
    results = storage.open_store(results_config)
    if results_config.kind == "local":  # raises here if the reader cannot drop root
        log.info("results in local storage: %s", job_files.describe_reader())
    # what no publisher's file may name (domain/file_locations.py)
    results_storage = ResultsStorage(results_config.kind, results_config.s3_bucket)
    # a trusted algorithm's files, fetched as pod_config fetches them (the same C2D_STAGING_* settings)
    algorithm_files = AlgorithmFiles(
        fetching.default_fetchers(storage_config=results_config),
        fetching.staging_limits(
            settings.load(fetching.StagingSettings, "C2D_STAGING"), config.algorithm_check_max_bytes
        ),
        config.algorithm_check_cache_s,
    )
    links = storage.ResultLinks(results_config, config.result_link_ttl_s)
    compute = ComputeServicer(
        db, keys, fee_address, verifier, catalog, operator, results, results_storage, algorithm_files, links
    )
    # AssetService plus the results-as-asset RPCs (api/results_assets.py)
    assets = ResultsAssetServicer(db, keys, verifier, catalog, operator, results, results_storage)
    running = await start_server(
        config.address,
        [
            Registration(
                _name(provider_pb2, "ProviderService"), provider_pb2_grpc.add_ProviderServiceServicer_to_server, compute
            ),
            Registration(_name(asset_pb2, "AssetService"), asset_pb2_grpc.add_AssetServiceServicer_to_server, assets),
            Registration(
                _name(ledger_pb2, "LedgerService"),
                ledger_pb2_grpc.add_LedgerServiceServicer_to_server,
                LedgerServicer(db, verifier, catalog, fee_address, config.order_timeout_s),
            ),
        ],
        server_metrics=server_metrics,
        metrics_address=config.metrics_address,
    )

    # Results as an asset: where pods on this host reach us (port 0 is known only now)
    compute.reachable_address = local_address(config.address, running.port)
    assets.service_endpoint = f"grpc://{compute.reachable_address}"

    async def shutdown() -> None:
        await operator.close()
        await verifier.close()
        db.close()

    running.on_stop.append(shutdown)
    return running


def main() -> None:
    config = settings.load(ProviderSettings, "C2D_PROVIDER")
    configure_observability("provider")

    async def run() -> None:
        await serve_until_signalled(await start(config), "provider")

    asyncio.run(run())


if __name__ == "__main__":
    main()
