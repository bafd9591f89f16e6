"""Results storage: local directory, S3 (minio SDK) or IPFS (Kubo RPC).

Used by pod_publish (upload), pod_config (dataset downloads from s3:// and
IPFS), the provider (stream a result from an offset) and the
operator-service (delete on expiry). Synchronous: callers use threads.
"""

from __future__ import annotations

from plumbing.storage.base import (
    ObjectNotFound,
    ObjectStore,
    StorageConfig,
    StorageError,
    StoredObject,
    check_key,
)
from plumbing.storage.ipfs import IpfsStore, download_ipfs, parse_cid, verify_cid
from plumbing.storage.links import Link, ResultLinks
from plumbing.storage.local import LocalStore
from plumbing.storage.s3 import S3Store, download_s3, parse_s3_location

KINDS = ("local", "s3", "ipfs")


def open_store(config: StorageConfig) -> ObjectStore:
    if config.kind == "local":
        if config.local_root is None:
            raise StorageError("local storage needs local_root")
        return LocalStore(config.local_root)
    if config.kind == "s3":
        return S3Store(config)
    if config.kind == "ipfs":
        return IpfsStore(config)
    raise StorageError(f"unknown storage kind {config.kind!r}; expected one of {', '.join(KINDS)}")


def kind_of(location: str) -> str:
    """The backend a manifest location belongs to ("local", "s3" or "ipfs")."""
    for prefix, kind in (("local:", "local"), ("s3://", "s3"), ("ipfs://", "ipfs")):
        if location.startswith(prefix):
            return kind
    raise StorageError(f"unrecognised storage location {location!r}")


__all__ = [
    "KINDS",
    "IpfsStore",
    "Link",
    "LocalStore",
    "ObjectNotFound",
    "ObjectStore",
    "ResultLinks",
    "S3Store",
    "StorageConfig",
    "StorageError",
    "StoredObject",
    "check_key",
    "download_ipfs",
    "download_s3",
    "kind_of",
    "open_store",
    "parse_cid",
    "parse_s3_location",
    "verify_cid",
]


def configured() -> StorageConfig:
    """The storage the C2D_STORAGE_* variables name; local results under the
    data directory when none is set (the embedded default)."""
    import dataclasses

    from plumbing import settings

    config = StorageConfig.from_env()
    if config.kind == "local" and config.local_root is None:
        config = dataclasses.replace(config, local_root=settings.data_dir() / "results")
    return config
