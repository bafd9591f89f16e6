"""Provider settings, from C2D_PROVIDER_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass

from plumbing.settings import setting


@dataclass(frozen=True)
class ProviderSettings:
    address: str = setting("127.0.0.1:50051", "host:port the provider listens on")
    metrics_address: str = setting(
        "127.0.0.1:9551", "host:port of the provider's Prometheus /metrics (empty: no metrics, RPCs not measured)"
    )
    database_url: str = setting("", "SQLAlchemy URL (default: SQLite in the data dir)")
    operator_address: str = setting("127.0.0.1:50052", "the operator-service")
    keys_file: str = setting("", "the provider's key file (default: <data dir>/provider-keys.json, created if missing)")
    order_timeout_s: int = setting(0, "overrides every service's order validity in seconds (0 = the DDO's timeout)")
    signature_worker: bool = setting(
        True, "check signatures and spend nonces in a worker process (false: in a thread of the provider's)"
    )
    algorithm_check_max_bytes: int = setting(
        64 << 20,
        "largest total size of a trusted algorithm's files the provider fetches to check their filesChecksum"
        " at InitializeCompute (fetched as pod_config fetches, C2D_STAGING_* settings)",
    )
    algorithm_check_cache_s: float = setting(
        60.0, "how long a trusted algorithm's checked filesChecksum is remembered (per algorithm and sealed files)"
    )
    result_link_ttl_s: int = setting(
        300, "how long a result link (GetComputeResultLink: an S3 presigned GET) works, in seconds (1 to 604800)"
    )
