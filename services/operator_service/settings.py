"""Operator-Service settings, from C2D_OPERATOR_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass

from plumbing.settings import setting


@dataclass(frozen=True)
class OperatorSettings:
    address: str = setting("127.0.0.1:50052", "host:port the operator-service listens on")
    metrics_address: str = setting(
        "127.0.0.1:9552",
        "host:port of the operator-service's Prometheus /metrics (empty: no metrics, RPCs not measured)",
    )
    database_url: str = setting("", "SQLAlchemy URL (default: SQLite in the data dir); PostgreSQL in production")
    engines: tuple[str, ...] = setting(("local=127.0.0.1:50053",), "engines as id=host:port, comma separated")
    engine_liveness_s: float = setting(
        10.0, "an engine not heard from for this long makes its environments unavailable"
    )
    reconnect_max_s: float = setting(5.0, "longest back-off between reconnects to an engine")
    sweep_interval_s: float = setting(60.0, "how often expired results are removed")
    dispatch_timeout_s: float = setting(
        30.0, "longest a SubmitJobs call may take; a dispatch claim twice as old is retried by any replica"
    )
    queue_timeout_s: float = setting(
        3600.0, "a job waiting longer than this for its engine to come back ends 'expired in queue'"
    )
