"""The provider client the demo, the tests and the benchmarks use: the SDK's AsyncClient.

Kept under this name for the code written before the SDK (c2d_sdk); new code imports c2d_sdk.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from c2d_sdk import AsyncClient, Signer
from c2d_sdk import connect as _connect
from c2d_sdk.results import split_result_chunk
from plumbing.server import reuse_freed_memory

__all__ = ["Client", "connect", "load_or_create_key", "split_result_chunk"]


class Client(AsyncClient):
    """An AsyncClient that raises grpc's own errors: its callers assert on gRPC statuses."""

    def __init__(self, channel: grpc.aio.Channel, private_key: str) -> None:
        super().__init__(channel, private_key, raw_errors=True)


def connect(address: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    """A channel to a provider, in a process that keeps freed heap for reuse.

    Each received result chunk is a few buffers of up to 4 MiB; with glibc's
    default thresholds they are returned to the kernel and page-faulted in
    again for every chunk, which cost more CPU than the rest of the download
    (1.2 CPU-s/GiB received, 0.45 with plumbing.server's reuse_freed_memory).
    """
    reuse_freed_memory()
    return _connect(address, credentials)


def load_or_create_key(path: Path) -> str:
    """The account key kept in ``path`` (created, mode 0600, if missing)."""
    return Signer.load_or_create(path).private_key
