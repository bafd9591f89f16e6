"""Types shared by the storage backends."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable


class StorageError(Exception):
    """A storage operation failed.

    The message names the key, location or file involved and never carries
    credentials. `transient` is True when retrying the same call may succeed
    (connection refused, timeout, server busy or 5xx).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


class ObjectNotFound(StorageError):
    """The location names no object (lets callers answer NOT_FOUND)."""


@dataclass(frozen=True)
class StoredObject:
    # what the results manifest records: "local:<key>", "s3://bucket/key" or "ipfs://<CIDv1 base32>"
    location: str
    size: int
    sha256: str  # hex, computed while the upload streamed


@runtime_checkable
class ObjectStore(Protocol):
    kind: str  # "local" | "s3" | "ipfs"

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> StoredObject: ...

    def read(self, location: str, offset: int = 0, chunk_size: int = 1 << 20) -> Iterator[bytes]: ...

    def size(self, location: str) -> int: ...

    def delete(self, location: str) -> None: ...

    def delete_prefix(self, key_prefix: str) -> int: ...


def _env_bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class StorageConfig:
    kind: str = "local"
    local_root: Path | None = None
    s3_endpoint: str = ""  # host:port, no scheme (the minio SDK form)
    s3_access_key: str = ""
    s3_secret_key: str = field(default="", repr=False)  # kept out of logs and tracebacks
    s3_bucket: str = ""
    s3_secure: bool = False
    s3_region: str = ""
    # where consumers reach the same S3 server (result links are signed for
    # this host): host:port or http(s)://host:port; empty = s3_endpoint
    s3_public_endpoint: str = ""
    ipfs_api: str = ""  # Kubo RPC base URL, e.g. http://127.0.0.1:5001
    ipfs_gateway: str = ""  # HTTP gateway base URL consumers can reach, e.g. https://ipfs.io
    part_size: int = 64 << 20

    ENV_PREFIX = "C2D_STORAGE_"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StorageConfig:
        """Reads C2D_STORAGE_KIND, _LOCAL_ROOT, _S3_ENDPOINT, _S3_ACCESS_KEY,
        _S3_SECRET_KEY, _S3_BUCKET, _S3_SECURE, _S3_REGION, _S3_PUBLIC_ENDPOINT,
        _IPFS_API, _IPFS_GATEWAY, _PART_SIZE."""
        env = os.environ if env is None else env
        p = cls.ENV_PREFIX

        def get(name: str, default: str = "") -> str:
            return env.get(p + name, default)

        root = get("LOCAL_ROOT")
        return cls(
            kind=get("KIND", "local"),
            local_root=Path(root) if root else None,
            s3_endpoint=get("S3_ENDPOINT"),
            s3_access_key=get("S3_ACCESS_KEY"),
            s3_secret_key=get("S3_SECRET_KEY"),
            s3_bucket=get("S3_BUCKET"),
            s3_secure=_env_bool(get("S3_SECURE", "false")),
            s3_region=get("S3_REGION"),
            s3_public_endpoint=get("S3_PUBLIC_ENDPOINT"),
            ipfs_api=get("IPFS_API"),
            ipfs_gateway=get("IPFS_GATEWAY"),
            part_size=int(get("PART_SIZE", str(64 << 20))),
        )


def check_key(key: str) -> str:
    """Validates a relative object key ("a/b/c.txt") and returns it unchanged.

    Refuses absolute keys, `..` segments, empty segments, backslashes and NUL:
    keys are built from job ids and algorithm output paths, so a hostile output
    name must never escape the job's prefix on any backend.
    """
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise StorageError(f"invalid object key {key!r}: must be a relative path")
    segments = key.split("/")
    if any(s in (".", "..") for s in segments):
        raise StorageError(f"invalid object key {key!r}: '.' and '..' segments are refused")
    if any(s == "" for s in segments):
        raise StorageError(f"invalid object key {key!r}: empty path segment")
    return key


def check_prefix(prefix: str) -> str:
    """A delete prefix: same rules as a key, may end with '/', never empty (that would mean everything)."""
    if not prefix:
        raise StorageError("refusing to delete with an empty key prefix")
    check_key(prefix.rstrip("/") or "/")
    return prefix


class HashingReader:
    """File wrapper that hashes and counts what it hands out, so the sha256
    recorded is of the bytes actually uploaded, in the same pass."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.sha256.update(data)
        self.count += len(data)
        return data


class SizedDownload:
    """Writes a stream to `dest` atomically with a byte limit and sha256."""

    def __init__(self, dest: Path, max_bytes: int | None, what: str) -> None:
        self.dest = dest
        self.max_bytes = max_bytes
        self.what = what
        self.sha256 = hashlib.sha256()
        self.count = 0
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}-{id(self):x}")
        self._f: BinaryIO = open(self._tmp, "wb")  # noqa: SIM115 - closed by commit() or discard()

    def check_declared_size(self, size: int) -> None:
        if self.max_bytes is not None and size > self.max_bytes:
            raise StorageError(f"{self.what} is {size} bytes, over the limit of {self.max_bytes} bytes")

    def write(self, data: bytes) -> None:
        self.count += len(data)
        if self.max_bytes is not None and self.count > self.max_bytes:
            raise StorageError(f"{self.what} exceeds the limit of {self.max_bytes} bytes")
        self.sha256.update(data)
        self._f.write(data)

    def commit(self, durable: bool = True) -> tuple[int, str]:
        # durable=False skips the fsync, for scratch files a crash would refetch anyway
        self._f.flush()
        if durable:
            os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.dest)
        return self.count, self.sha256.hexdigest()

    def discard(self) -> None:
        self._f.close()
        self._tmp.unlink(missing_ok=True)


class ChunkStream:
    """Iterator over a response's chunks that always releases the response:
    when exhausted, on error, on close(), or when dropped unread."""

    def __init__(self, chunks: Iterator[bytes], release: Callable[[], None]) -> None:
        self._chunks = chunks
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> ChunkStream:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __del__(self) -> None:
        self.close()
