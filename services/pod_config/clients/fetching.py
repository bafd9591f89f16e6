"""pod_config's fetchers: plumbing/fetching.py's, shared with the provider (which
checks a trusted algorithm's files with them)."""

from __future__ import annotations

from plumbing.fetching import (
    CHUNK_BYTES,
    FetchError,
    HttpFetcher,
    RawFetcher,
    StorageFetcher,
    address_refusal,
    default_fetchers,
    vet_host,
)

__all__ = [
    "CHUNK_BYTES",
    "FetchError",
    "HttpFetcher",
    "RawFetcher",
    "StorageFetcher",
    "address_refusal",
    "default_fetchers",
    "vet_host",
]
