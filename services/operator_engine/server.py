"""Wires the Operator-Engine: store, event log, backend, orchestrator, gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from c2d.engine.v1 import engine_pb2, engine_pb2_grpc, job_agent_pb2, job_agent_pb2_grpc
from plumbing import auth, job_files, logs, metrics, settings
from plumbing.database import Database, sqlite_url
from plumbing.server import (
    Registration,
    RunningServer,
    configure_observability,
    serve_until_signalled,
    start_server,
)
from services.operator_engine.api.servicers import EngineServicer, JobAgentServicer
from services.operator_engine.backends.kubernetes.objects import ClusterUnfit
from services.operator_engine.backends.local.backend import LocalBackend
from services.operator_engine.backends.local.pod_launcher import make_launcher
from services.operator_engine.backends.noop import NoopBackend
from services.operator_engine.domain import stages
from services.operator_engine.domain.jobs import EnvironmentSpec
from services.operator_engine.domain.orchestrator import Orchestrator
from services.operator_engine.domain.ports import EventLog as EventLogPort
from services.operator_engine.metrics import EngineMetrics, MeasuredEventLog
from services.operator_engine.persistence.event_log import EventLog
from services.operator_engine.persistence.jobs import JobTable
from services.operator_engine.persistence.models import Base
from services.operator_engine.settings import EngineSettings

if TYPE_CHECKING:
    from services.operator_engine.backends.kubernetes.backend import KubernetesBackend

log = logging.getLogger("c2d.engine")
ENGINE_SERVICE = engine_pb2.DESCRIPTOR.services_by_name["EngineService"].full_name
JOB_AGENT_SERVICE = job_agent_pb2.DESCRIPTOR.services_by_name["JobAgentService"].full_name
# Settings a pod inherits from the engine (storage, staging limits, logging, tracing).
POD_ENV_PREFIXES = (
    "C2D_STORAGE_",
    "C2D_STAGING_",
    "C2D_PROVIDER_ADDRESS",
    "C2D_LOG_",
    "C2D_DATA_DIR",
    "C2D_TLS_",
    "OTEL_",
)


async def start(config: EngineSettings) -> RunningServer:
    logs.bind(component="operator-engine")
    data = settings.data_dir()
    db = Database(config.database_url or sqlite_url(data / "engine.db"), Base.metadata)
    db.create_schema()
    events = EventLog(db)
    await events.start()
    workspaces = os.path.abspath(config.workspaces_dir or str(data / "workspaces"))  # noqa: ASYNC240 - no I/O
    os.makedirs(workspaces, exist_ok=True)
    if config.backend == "local":
        # Its pods run as the jobs' uids: none may enter the data directory (service token,
        # databases, keys) or another job's workspace. Each gets its own as a descriptor.
        for private in (data, Path(workspaces)):
            if private.is_dir():
                private.chmod(0o700)

    backend: NoopBackend | LocalBackend | KubernetesBackend
    cluster: KubernetesBackend | None = None  # the backend, when it is the kubernetes one
    pod_env = {k: v for k, v in os.environ.items() if k.startswith(POD_ENV_PREFIXES)}
    event_log: EventLogPort = events
    if config.backend == "noop":
        backend = NoopBackend()
    elif config.backend == "kubernetes":
        # Imported only here: the kubernetes client costs seconds of start-up (12 s under load),
        # which the local and noop backends need not pay.
        from services.operator_engine.backends.kubernetes.wiring import MirroredEventLog, make_backend

        backend = cluster = make_backend(config, pod_env)
        event_log = MirroredEventLog(events, cluster)
    elif config.backend == "local":
        pod_env.setdefault("C2D_DATA_DIR", str(data))
        backend = LocalBackend(
            config.agent_address, pod_env, use_sandbox=config.sandbox, launcher=make_launcher(config.pod_launcher)
        )
    else:
        raise ValueError(f"C2D_ENGINE_BACKEND={config.backend!r}: expected local, kubernetes or noop")

    environment = EnvironmentSpec(
        id=config.environment_id,
        description="",
        cpu_cores=config.cpu_cores,
        memory_bytes=config.memory_bytes,
        disk_bytes=config.disk_bytes,
        max_jobs=config.max_jobs,
        max_job_duration_s=config.max_job_duration_s,
        storage_expiry_s=config.storage_expiry_s,
        price_per_minute=config.price_per_minute,
        log_max_bytes=config.log_max_bytes,
        gpus=config.gpus,
    )
    server_metrics = metrics.Metrics("operator-engine")
    engine_metrics = EngineMetrics(server_metrics, events)
    jobs = JobTable(db)
    await jobs.forget_secrets_stored_before()
    orchestrator = Orchestrator(
        jobs,
        MeasuredEventLog(event_log, engine_metrics),
        backend,
        environment,
        workspaces=Path(workspaces),
        pipeline=stages.pipeline(config.configure_timeout_s, config.publish_timeout_s),
        queue_timeout_s=config.queue_timeout_s,
    )
    if isinstance(backend, NoopBackend):
        backend.agent = orchestrator
    engine_metrics.watch(orchestrator)
    engine = EngineServicer(orchestrator, events, config.engine_id, config.heartbeat_s)
    log.info("algorithm logs: %s", job_files.describe_reader())  # raises here if the reader cannot drop root
    agent = JobAgentServicer(orchestrator, engine.environments, count_staged_bytes=engine_metrics.staged_bytes.inc)
    # Pods call JobAgentService on this port too: under mutual TLS they
    # present the engine's certificate (they inherit C2D_TLS_*).
    interceptors, credentials = auth.internal_port(auth.service_token(), [ENGINE_SERVICE])
    running = await start_server(
        config.address,
        [
            Registration(ENGINE_SERVICE, engine_pb2_grpc.add_EngineServiceServicer_to_server, engine),
            Registration(JOB_AGENT_SERVICE, job_agent_pb2_grpc.add_JobAgentServiceServicer_to_server, agent),
        ],
        interceptors=interceptors,
        credentials=credentials,
        server_metrics=server_metrics,
        metrics_address=config.metrics_address,
    )
    if isinstance(backend, LocalBackend) and not config.agent_address:
        # Port 0 (tests) is only known now; pods reach the engine on the same host.
        backend.agent_address = f"{config.address.rsplit(':', 1)[0]}:{running.port}"
    if cluster is not None:
        try:  # the cluster is checked, and the pod watch started, before any job resumes
            await cluster.start(config.agent_address or f"{config.address.rsplit(':', 1)[0]}:{running.port}")
        except BaseException:
            await running.stop(0)
            raise
    orchestrator.environment = _described(environment, orchestrator.backend.describe())
    await orchestrator.start()
    if cluster is not None:
        await cluster.sweep_orphans(orchestrator.is_active)

    async def shutdown() -> None:
        if cluster is not None:
            cluster.detach()
        await orchestrator.close()
        await backend.close()
        await events.close()
        db.close()

    running.on_stopping.append(orchestrator.pause)
    running.on_stop.append(shutdown)
    return running


def _described(env: EnvironmentSpec, backend_description: str) -> EnvironmentSpec:
    text = (
        f"{env.cpu_cores:g} CPU, {env.memory_bytes >> 20} MiB RAM, {env.disk_bytes >> 20} MiB disk, "
        f"{env.max_jobs} jobs at once; {backend_description}"
    )
    return dataclasses.replace(env, description=text)


def main() -> None:
    config = settings.load(EngineSettings, "C2D_ENGINE")
    configure_observability("operator-engine")

    async def run() -> None:
        running = await start(config)
        await serve_until_signalled(running, "operator-engine", stop_within_s=config.stop_grace_s)

    try:
        asyncio.run(run())
    except ClusterUnfit as exc:  # a configuration to fix, not a crash: the reason, without a traceback
        log.error("operator-engine refuses to start: %s", exc)
        sys.exit(2)


if __name__ == "__main__":
    main()
