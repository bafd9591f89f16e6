"""Client: AsyncClient's methods, blocking, for scripts and notebooks.

It runs an AsyncClient on an event loop of its own, in a daemon thread, so it
also works where a loop is already running (Jupyter). Streams come back as
ordinary iterators.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import asset_pb2, provider_pb2

from . import results
from .client import Asset, AsyncClient, ComputeRequest, DownloadedFile, ProgressCallback, PublishedAsset
from .signing import Signer

T = TypeVar("T")


class Client:
    """One account talking to one provider, blocking; see AsyncClient for each method."""

    def __init__(
        self, target: str, signer: Signer | str | None = None, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="c2d-sdk", daemon=True)
        self._thread.start()

        async def make() -> AsyncClient:  # the channel belongs to the loop it is made on
            return AsyncClient(target, signer, credentials)

        self._client = self._run(make())
        self.signer = self._client.signer

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _iterate(self, stream: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(stream.aclose())  # type: ignore[attr-defined]

    @property
    def address(self) -> str:
        return self._client.address

    def signed(self, method: str, request: T) -> T:
        return self._client.signed(method, request)

    def provider_info(self) -> provider_pb2.GetProviderInfoResponse:
        return self._run(self._client.provider_info())

    def nonce(self, address: str | None = None) -> int:
        return self._run(self._client.nonce(address))

    def environments(self) -> list[common_pb2.Environment]:
        return self._run(self._client.environments())

    def publish(self, ddo: Mapping[str, Any], salt: str) -> str:
        return self._run(self._client.publish(ddo, salt))

    def publish_asset(
        self,
        description: Mapping[str, Any],
        base_dir: Path = Path("."),
        salt: str | None = None,
        files_checksums: Mapping[str, str] | None = None,
    ) -> PublishedAsset:
        return self._run(self._client.publish_asset(description, base_dir, salt, files_checksums))

    def get_asset(self, did: str) -> Asset:
        return self._run(self._client.get_asset(did))

    def list_assets(self, type: str = "", owner: str = "") -> list[asset_pb2.AssetSummary]:
        return self._run(self._client.list_assets(type, owner))

    def create_datatoken(self, did: str, service_id: str) -> str:
        return self._run(self._client.create_datatoken(did, service_id))

    def mint(self, datatoken: str, to: str, amount: int) -> int:
        return self._run(self._client.mint(datatoken, to, amount))

    def balance(self, datatoken: str, address: str | None = None) -> int:
        return self._run(self._client.balance(datatoken, address))

    def order(self, did: str, service_id: str) -> str:
        return self._run(self._client.order(did, service_id))

    def initialize(self, spec: provider_pb2.ComputeSpec) -> list[provider_pb2.OrderRequirement]:
        return self._run(self._client.initialize(spec))

    def start(self, spec: provider_pb2.ComputeSpec) -> provider_pb2.StartComputeResponse:
        return self._run(self._client.start(spec))

    def start_compute(self, request: ComputeRequest) -> provider_pb2.StartComputeResponse:
        return self._run(self._client.start_compute(request))

    def details(self, job_id: str) -> provider_pb2.GetJobDetailsResponse:
        return self._run(self._client.details(job_id))

    def job(self, job_id: str) -> common_pb2.Job:
        return self._run(self._client.job(job_id))

    def watch(self, job_id: str) -> Iterator[common_pb2.Job]:
        return self._iterate(self._client.watch(job_id))

    def logs(self, job_id: str, follow: bool = False, offset: int = 0) -> Iterator[bytes]:
        return self._iterate(self._client.logs(job_id, follow, offset))

    def list_jobs(self, statuses: Sequence[int] = ()) -> list[common_pb2.Job]:
        return self._run(self._client.list_jobs(statuses))

    def stop(self, job_id: str) -> common_pb2.Job:
        return self._run(self._client.stop(job_id))

    def delete(self, job_id: str) -> None:
        self._run(self._client.delete(job_id))

    def signed_manifest(self, job_id: str) -> list[results.SignedFile]:
        return self._run(self._client.signed_manifest(job_id))

    def result_link(self, job_id: str, index: int) -> provider_pb2.GetComputeResultLinkResponse:
        return self._run(self._client.result_link(job_id, index))

    def download_results(
        self, job_id: str, out_dir: Path, progress: ProgressCallback | None = None, direct: bool = True
    ) -> list[DownloadedFile]:
        return self._run(self._client.download_results(job_id, out_dir, progress, direct=direct))
