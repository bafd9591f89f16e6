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
from plumbing.storage.ipfs import IpfsStore, download_ipfs, parse_cid, pin_key, verify_cid
from plumbing.storage.links import Link, ResultLinks
from plumbing.storage.local import PREFIX as LOCAL_PREFIX
from plumbing.storage.local import LocalStore
from plumbing.storage.s3 import PREFIX as S3_PREFIX
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


def held_by_job(location: str, job_id: str, bucket: str = "") -> bool:
    """Whether a local: or s3:// location (in `bucket`) lies under "<job id>/",
    where pod_publish writes every result of that job. A job's record names
    its results, but whoever holds the job's pod token wrote it: serve or
    delete nothing else for that job. IPFS has no prefix: never held."""
    try:
        if location.startswith(LOCAL_PREFIX):
            key = location[len(LOCAL_PREFIX) :]
        elif location.startswith(S3_PREFIX):
            in_bucket, key = parse_s3_location(location)
            if not bucket or in_bucket != bucket:
                return False
        else:
            return False
        check_key(key)  # no ".." out of the job's prefix
    except StorageError:
        return False
    return key.startswith(f"{job_id}/")


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
    "held_by_job",
    "kind_of",
    "open_store",
    "parse_cid",
    "parse_s3_location",
    "pin_key",
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
