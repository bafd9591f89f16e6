"""Wires the Operator-Service: database (migrated at start-up) and the store
on it, a client and a link per engine, the storage-expiry sweeper, gRPC."""

from __future__ import annotations

import asyncio

from c2d.operator.v1 import operator_pb2, operator_pb2_grpc
from plumbing import auth, logs, metrics, settings, storage
from plumbing.database import Database, sqlite_url
from plumbing.server import (
    Registration,
    RunningServer,
    configure_observability,
    serve_until_signalled,
    start_server,
)
from services.operator_service import metrics as operator_metrics
from services.operator_service.api.servicer import OperatorServicer
from services.operator_service.clients.engines import EngineClient
from services.operator_service.domain.engine_links import EngineLink
from services.operator_service.domain.expiry import ExpirySweeper, ResultsRemover
from services.operator_service.domain.watching import Broker
from services.operator_service.persistence import migrations
from services.operator_service.persistence.models import Base, Job
from services.operator_service.persistence.store import Store
from services.operator_service.settings import OperatorSettings

OPERATOR_SERVICE = operator_pb2.DESCRIPTOR.services_by_name["OperatorService"].full_name


def parse_engines(entries: tuple[str, ...]) -> dict[str, str]:
    engines = {}
    for entry in entries:
        engine_id, sep, address = entry.partition("=")
        if not sep or not engine_id or not address:
            raise ValueError(f"C2D_OPERATOR_ENGINES entry {entry!r}: expected id=host:port")
        engines[engine_id] = address
    return engines


async def start(config: OperatorSettings) -> RunningServer:
    logs.bind(component="operator-service")
    db = Database(config.database_url or sqlite_url(settings.data_dir() / "operator.db"), Base.metadata)
    await asyncio.to_thread(migrations.upgrade, db.engine)
    store = Store(db)
    broker: Broker[Job] = Broker()
    token = auth.service_token()
    links = {
        engine_id: EngineLink(
            engine_id,
            address,
            EngineClient(engine_id, address, token),
            store,
            broker,
            config.engine_liveness_s,
            config.reconnect_max_s,
            config.queue_timeout_s,
            config.dispatch_timeout_s,
        )
        for engine_id, address in parse_engines(config.engines).items()
    }
    remover = ResultsRemover(storage.configured(), store)
    sweeper = ExpirySweeper(store, remover, config.sweep_interval_s)
    servicer = OperatorServicer(db, links, broker, remove_results=remover.remove)
    server_metrics = metrics.Metrics("operator-service")
    operator_metrics.register(server_metrics, db, links)
    interceptors, credentials = auth.internal_port(token, [OPERATOR_SERVICE])
    running = await start_server(
        config.address,
        [Registration(OPERATOR_SERVICE, operator_pb2_grpc.add_OperatorServiceServicer_to_server, servicer)],
        interceptors=interceptors,
        credentials=credentials,
        server_metrics=server_metrics,
        metrics_address=config.metrics_address,
    )
    for link in links.values():
        await link.start()
    await sweeper.start()

    async def shutdown() -> None:
        await sweeper.close()
        await servicer.close()
        for link in links.values():
            await link.close()
        db.close()

    running.on_stop.append(shutdown)
    return running


def main() -> None:
    config = settings.load(OperatorSettings, "C2D_OPERATOR")
    configure_observability("operator-service")

    async def run() -> None:
        await serve_until_signalled(await start(config), "operator-service")

    asyncio.run(run())


if __name__ == "__main__":
    main()
