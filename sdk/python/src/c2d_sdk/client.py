"""AsyncClient: every step of a job, for one account talking to one provider.

Each method is one step (publish, order, start, watch, download...), signed
when the provider needs to know who asks. A failed call raises
``errors.Unreachable`` (no answer) or ``errors.Refused`` (the provider's
status, ErrorInfo reason and field); ``client.Client`` is the same, blocking.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import asset_pb2, asset_pb2_grpc, ledger_pb2, ledger_pb2_grpc, provider_pb2, provider_pb2_grpc

from . import assets, errors, links, results
from .signing import Signer

T = TypeVar("T")
ProgressCallback = Callable[[int, int], None]  # (bytes so far, total bytes)
PAGE_SIZE = 100


@dataclass(frozen=True)
class Asset:
    """A published asset: its DDO (file locations sealed) and its publisher."""

    did: str
    owner: str
    ddo: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.ddo.get("metadata", {}).get("type", ""))

    @property
    def name(self) -> str:
        return str(self.ddo.get("metadata", {}).get("name", ""))

    @property
    def service_ids(self) -> list[str]:
        return [str(s.get("id")) for s in self.ddo.get("services", [])]


@dataclass(frozen=True)
class PublishedAsset:
    """What publishing gave: the DID, the service consumers order, its datatoken, and for an
    algorithm the checksums a dataset's trusted-algorithm entry pins."""

    did: str
    type: str
    service_id: str
    datatoken: str
    files_checksum: str = ""
    container_checksum: str = ""


@dataclass(frozen=True)
class DownloadedFile:
    """A result file saved and checked against the provider-signed manifest."""

    index: int
    path: str  # its path among the job's results, e.g. "result.json" or "logs/algorithm.log"
    saved_to: Path
    size: int
    sha256: str
    kind: str


@dataclass
class ComputeRequest:
    """What to run: datasets, the algorithm, and how."""

    datasets: Sequence[str]
    algorithm: str
    environment_id: str = ""  # "" = the first available environment
    parameters: Mapping[str, Any] = field(default_factory=dict)  # the algorithm's consumer parameters
    max_duration_seconds: int = 0
    viewers: Sequence[str] = ()


def connect(target: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    """A channel to a provider at host:port (plaintext unless credentials are given)."""
    if credentials is None:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(target, credentials)


class AsyncClient:
    """One account (``signer``; None for the calls that need none) talking to one provider.

    ``target`` is host:port (the client opens and closes its channel) or an open grpc.aio.Channel.
    ``raw_errors``: raise grpc's own errors instead of Unreachable and Refused (for a caller that
    reads the gRPC status and trailers itself).
    """

    def __init__(
        self,
        target: str | grpc.aio.Channel,
        signer: Signer | str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        raw_errors: bool = False,
    ) -> None:
        self._raw_errors = raw_errors
        self.target = target if isinstance(target, str) else "the provider"
        self._own_channel = isinstance(target, str)
        self.channel = connect(target, credentials) if isinstance(target, str) else target
        self.signer = Signer(signer) if isinstance(signer, str) else signer
        self.compute = provider_pb2_grpc.ProviderServiceStub(self.channel)
        self.assets = asset_pb2_grpc.AssetServiceStub(self.channel)
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(self.channel)
        # GetComputeResult with a deserializer that leaves the data in the received buffer
        self._result_stream = self.channel.unary_stream(
            "/c2d.provider.v1.ProviderService/GetComputeResult",
            request_serializer=provider_pb2.GetComputeResultRequest.SerializeToString,
            response_deserializer=results.split_result_chunk,
        )
        self._provider_info: provider_pb2.GetProviderInfoResponse | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_channel:
            await self.channel.close()

    @property
    def address(self) -> str:
        """The account's address."""
        return self._signer().address

    def _signer(self) -> Signer:
        if self.signer is None:
            raise errors.C2DError("this call is signed: give the client a signer (an account's key)")
        return self.signer

    def signed(self, method: str, request: T) -> T:
        """The request with its signature filled in (method: the RPC's name)."""
        return self._signer().sign(method, request)  # type: ignore[type-var]

    async def _call(self, rpc: Callable[..., Any], request: Any, timeout: float | None = None) -> Any:
        try:
            return await rpc(request, timeout=timeout)
        except grpc.RpcError as exc:
            if self._raw_errors:
                raise
            raise errors.from_rpc_error(exc, f"the provider at {self.target}") from None

    async def _stream(self, rpc: Callable[..., Any], request: Any) -> AsyncIterator[Any]:
        call = rpc(request)
        try:
            async for message in call:
                yield message
        except grpc.RpcError as exc:
            if self._raw_errors:
                raise
            raise errors.from_rpc_error(exc, f"the provider at {self.target}") from None
        finally:
            call.cancel()

    # -- the provider --------------------------------------------------------------------

    async def provider_info(self) -> provider_pb2.GetProviderInfoResponse:
        """The provider's fee address and public keys (cached: they do not change while it runs)."""
        if self._provider_info is None:
            self._provider_info = await self._call(self.compute.GetProviderInfo, provider_pb2.GetProviderInfoRequest())
        return self._provider_info

    async def nonce(self, address: str | None = None) -> int:
        """The last nonce the provider accepted from ``address`` (default: this account)."""
        request = provider_pb2.GetNonceRequest(address=address or self.address)
        return int((await self._call(self.compute.GetNonce, request)).nonce)

    async def environments(self, timeout: float | None = None) -> list[common_pb2.Environment]:
        """The compute environments, with their limits, price and availability."""
        request = provider_pb2.ListComputeEnvironmentsRequest()
        return list((await self._call(self.compute.ListComputeEnvironments, request, timeout)).environments)

    # -- assets --------------------------------------------------------------------------

    def did_for(self, salt: str) -> str:
        """The DID this account's asset published with ``salt`` gets."""
        return assets.derive_did(self.address, salt)

    async def encrypt(self, files: Sequence[common_pb2.FileLocation]) -> str:
        """File locations sealed by the provider itself (publish_asset seals them here instead)."""
        return (await self._call(self.assets.EncryptFiles, asset_pb2.EncryptFilesRequest(files=files))).encrypted_files

    async def publish(self, ddo: Mapping[str, Any], salt: str) -> str:
        """Publishes a complete DDO (files already sealed); returns its DID."""
        request = asset_pb2.PublishAssetRequest(ddo_json=json.dumps(ddo), salt=salt)
        return str((await self._call(self.assets.PublishAsset, self.signed("PublishAsset", request))).did)

    async def publish_asset(
        self,
        description: Mapping[str, Any],
        base_dir: Path = Path("."),
        salt: str | None = None,
        files_checksums: Mapping[str, str] | None = None,
    ) -> PublishedAsset:
        """Publishes a described dataset or algorithm (see ``assets``) and creates its datatoken.

        A dataset's trusted algorithms need each algorithm's files checksum: given in the
        description, or in ``files_checksums`` (DID -> checksum, e.g. what publishing them returned);
        their container checksums are read from their DDOs."""
        info = await self.provider_info()
        trusted = []
        for entry in assets.trusted_algorithm_entries(description):
            did = str(entry.get("did", ""))
            checksum = entry.get("files_checksum") or (files_checksums or {}).get(did)
            if not checksum:
                raise errors.InvalidDescription(
                    f"trusted algorithm {did}: give its files_checksum (publishing the algorithm returned it)",
                    "compute.trusted_algorithms",
                )
            container = entry.get("container_checksum")
            if not container:
                algorithm = (await self.get_asset(did)).ddo.get("metadata", {}).get("algorithm", {})
                container = assets.container_checksum(algorithm.get("container", {}))
            trusted.append({"did": did, "files_checksum": str(checksum), "container_checksum": str(container)})
        prepared = assets.prepare_asset(
            description,
            self.address,
            salt or f"{time.time_ns()}-{os.getpid()}",
            info.encryption_public_key,
            service_endpoint=self.target,
            base_dir=base_dir,
            trusted_algorithms=trusted,
        )
        did = await self.publish(prepared.ddo, prepared.salt)
        datatoken = await self.create_datatoken(did, prepared.service_id)
        return PublishedAsset(
            did,
            str(description["type"]),
            prepared.service_id,
            datatoken,
            prepared.files_checksum,
            prepared.container_checksum,
        )

    async def get_asset(self, did: str) -> Asset:
        """An asset's DDO (file locations sealed) and publisher."""
        response = await self._call(self.assets.GetAsset, asset_pb2.GetAssetRequest(did=did))
        return Asset(did, response.owner, json.loads(response.ddo_json))

    async def list_assets(self, type: str = "", owner: str = "") -> list[asset_pb2.AssetSummary]:
        """Every published asset (optionally of one type or owner), oldest first."""
        found: list[asset_pb2.AssetSummary] = []
        token = ""
        while True:
            request = asset_pb2.ListAssetsRequest(type=type, owner=owner, page_size=PAGE_SIZE, page_token=token)
            page = await self._call(self.assets.ListAssets, request)
            found.extend(page.assets)
            token = page.next_page_token
            if not token:
                return found

    # -- the ledger ----------------------------------------------------------------------

    async def create_datatoken(self, did: str, service_id: str) -> str:
        """Creates the datatoken of this account's asset's service; returns its address."""
        request = ledger_pb2.CreateDatatokenRequest(did=did, service_id=service_id, symbol="DT")
        response = await self._call(self.ledger.CreateDatatoken, self.signed("CreateDatatoken", request))
        return str(response.datatoken_address)

    async def mint(self, datatoken: str, to: str, amount: int) -> int:
        """Mints datatokens of this account's asset to ``to``; returns their new balance."""
        request = ledger_pb2.MintRequest(datatoken_address=datatoken, to_address=to, amount=amount)
        return int((await self._call(self.ledger.Mint, self.signed("Mint", request))).balance)

    async def balance(self, datatoken: str, address: str | None = None) -> int:
        """How many of a datatoken ``address`` (default: this account) holds."""
        request = ledger_pb2.GetBalanceRequest(datatoken_address=datatoken, address=address or self.address)
        return int((await self._call(self.ledger.GetBalance, request)).balance)

    async def order(self, did: str, service_id: str) -> str:
        """Spends one datatoken on an order for an asset's service; returns the order id."""
        request = ledger_pb2.StartOrderRequest(did=did, service_id=service_id)
        response = await self._call(self.ledger.StartOrder, self.signed("StartOrder", request))
        return str(response.order.order_id)

    # -- compute -------------------------------------------------------------------------

    async def compute_spec(self, request: ComputeRequest) -> provider_pb2.ComputeSpec:
        """The spec of a compute request, without orders: each asset's service read from its DDO."""

        async def asset_order(did: str, wanted: str) -> provider_pb2.AssetOrder:
            asset = await self.get_asset(did)
            services = asset.service_ids
            service_id = wanted if wanted in services else services[0] if services else wanted
            return provider_pb2.AssetOrder(did=did, service_id=service_id)

        if not request.datasets:
            raise errors.C2DError("a job needs at least one dataset")
        datasets = [await asset_order(did, "compute") for did in request.datasets]
        environment_id = request.environment_id
        if not environment_id:
            available = [e for e in await self.environments() if e.available]
            if not available:
                raise errors.C2DError("no compute environment is available yet: try again in a few seconds")
            environment_id = available[0].id
        return provider_pb2.ComputeSpec(
            dataset=datasets[0],
            additional_datasets=datasets[1:],
            algorithm_asset=await asset_order(request.algorithm, "access"),
            environment_id=environment_id,
            algorithm_parameters_json=json.dumps(dict(request.parameters)) if request.parameters else "",
            max_duration_seconds=request.max_duration_seconds,
            viewers=list(request.viewers),
        )

    async def initialize(self, spec: provider_pb2.ComputeSpec) -> list[provider_pb2.OrderRequirement]:
        """What the job needs ordered, each with this account's valid order if it has one."""
        request = provider_pb2.InitializeComputeRequest(spec=spec)
        return list(
            (await self._call(self.compute.InitializeCompute, self.signed("InitializeCompute", request))).orders
        )

    async def start(self, spec: provider_pb2.ComputeSpec) -> provider_pb2.StartComputeResponse:
        """Starts a job whose spec carries its orders."""
        request = provider_pb2.StartComputeRequest(spec=spec)
        return await self._call(self.compute.StartCompute, self.signed("StartCompute", request))

    async def start_compute(self, request: ComputeRequest) -> provider_pb2.StartComputeResponse:
        """Starts a job, ordering each asset that has no valid order of this account's."""
        spec = await self.compute_spec(request)
        orders = {}
        for needed in await self.initialize(spec):
            orders[(needed.did, needed.service_id)] = needed.valid_order_id or await self.order(
                needed.did, needed.service_id
            )
        for asset_order in [spec.dataset, *spec.additional_datasets, spec.algorithm_asset]:
            asset_order.order_id = orders.get((asset_order.did, asset_order.service_id), "")
        return await self.start(spec)

    async def details(self, job_id: str) -> provider_pb2.GetJobDetailsResponse:
        """A job and, once it has results, their manifest signed by the provider."""
        request = provider_pb2.GetJobDetailsRequest(job_id=job_id)
        return await self._call(self.compute.GetJobDetails, self.signed("GetJobDetails", request))

    async def job(self, job_id: str) -> common_pb2.Job:
        """A job's status, reasons, timings and results manifest."""
        return (await self.details(job_id)).job

    async def watch(self, job_id: str) -> AsyncIterator[common_pb2.Job]:
        """The job at each change until it ends (the stream ends with it)."""
        request = self.signed("WatchJob", provider_pb2.WatchJobRequest(job_id=job_id))
        async for update in self._stream(self.compute.WatchJob, request):
            yield update.job

    async def logs(self, job_id: str, follow: bool = False, offset: int = 0) -> AsyncIterator[bytes]:
        """The algorithm's log from ``offset``; with ``follow``, until the job ends."""
        request = provider_pb2.StreamJobLogsRequest(job_id=job_id, follow=follow, offset=offset)
        async for chunk in self._stream(self.compute.StreamJobLogs, self.signed("StreamJobLogs", request)):
            yield chunk.data

    async def list_jobs(self, statuses: Sequence[int] = ()) -> list[common_pb2.Job]:
        """This account's jobs (and those it may view), optionally only those in ``statuses``."""
        found: list[common_pb2.Job] = []
        token = ""
        while True:
            request = provider_pb2.ListJobsRequest(statuses=list(statuses), page_size=PAGE_SIZE, page_token=token)
            page = await self._call(self.compute.ListJobs, self.signed("ListJobs", request))
            found.extend(page.jobs)
            token = page.next_page_token
            if not token:
                return found

    async def stop(self, job_id: str) -> common_pb2.Job:
        """Asks the job to stop (it ends with end reason STOPPED)."""
        request = provider_pb2.StopComputeRequest(job_id=job_id)
        return (await self._call(self.compute.StopCompute, self.signed("StopCompute", request))).job

    async def delete(self, job_id: str) -> None:
        """Deletes an ended job and its results."""
        request = provider_pb2.DeleteComputeRequest(job_id=job_id)
        await self._call(self.compute.DeleteCompute, self.signed("DeleteCompute", request))

    # -- results -------------------------------------------------------------------------

    async def result_chunks(
        self, job_id: str, index: int, offset: int = 0
    ) -> AsyncIterator[tuple[common_pb2.ResultFile | None, int, memoryview]]:
        """Streams a result file from ``offset``: (its entry on the first chunk, else None; offset; data).

        data is a read-only view into the received message (write it or join it; bytes(data) copies it).
        """
        request = provider_pb2.GetComputeResultRequest(job_id=job_id, index=index, offset=offset)
        async for chunk, data in self._stream(self._result_stream, self.signed("GetComputeResult", request)):
            yield (chunk.file if chunk.HasField("file") else None), chunk.offset, data

    async def result(self, job_id: str, index: int, offset: int = 0) -> tuple[common_pb2.ResultFile, bytes]:
        """A whole result file in memory (unchecked: download_results checks against the signed manifest)."""
        entry, chunks = common_pb2.ResultFile(), []
        async for file, _, data in self.result_chunks(job_id, index, offset):
            if file is not None:
                entry = file
            chunks.append(data)
        return entry, b"".join(chunks)

    async def signed_manifest(self, job_id: str) -> list[results.SignedFile]:
        """The job's result files as the provider signed them (its signature checked)."""
        details = await self.details(job_id)
        info = await self.provider_info()
        return results.verified_manifest(details.signed_results, info.signing_public_key)

    async def result_link(self, job_id: str, index: int) -> provider_pb2.GetComputeResultLinkResponse:
        """A short-lived link that reads a result file straight from its storage (``url`` empty when the
        storage offers none), with the file's entry and the provider-signed results statement."""
        request = provider_pb2.GetComputeResultLinkRequest(job_id=job_id, index=index)
        return await self._call(self.compute.GetComputeResultLink, self.signed("GetComputeResultLink", request))

    async def _link_url(self, job_id: str, index: int) -> str:
        """The file's link, or "" when there is none (local storage; a provider without the RPC)."""
        try:
            return (await self.result_link(job_id, index)).url
        except grpc.RpcError as exc:  # a raw_errors client
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # type: ignore[attr-defined]
                return ""
            raise
        except errors.Refused as exc:
            if exc.code == grpc.StatusCode.UNIMPLEMENTED.name:
                return ""
            raise

    async def verified_chunks(
        self, job_id: str, entry: results.SignedFile, direct: bool = True
    ) -> AsyncIterator[memoryview]:
        """A result file's bytes: through its link when the provider offers one (and ``direct``) and
        its storage answers, else streamed through the provider. Each chunk is valid until the next
        is asked for. Ends with an IntegrityError, before the last chunk is taken as complete, unless
        the bytes are exactly the size and sha256 of ``entry`` (from ``signed_manifest``)."""
        url = await self._link_url(job_id, entry.index) if direct else ""
        link: links.LinkBytes | None = None
        if url:
            try:
                link = await links.open_link(url, entry.size, entry.path)  # hashed on its own thread
            except errors.Unreachable:
                url = ""  # e.g. a storage endpoint only the cluster reaches: the provider still can
        chunks: AsyncIterator[memoryview] = (
            aiter(link) if link is not None else (data async for _, _, data in self.result_chunks(job_id, entry.index))
        )
        route = "read through its link" if url else "streamed through the provider"
        digest, count = hashlib.sha256(), 0  # the provider's stream: hashed here
        async for data in chunks:
            count += len(data)
            if count > entry.size:
                raise errors.IntegrityError(f"{entry.path}: more than the {entry.size} bytes the provider signed")
            if link is None:
                digest.update(data)
            yield data
        actual = link.sha256() if link is not None else digest.hexdigest()
        if count != entry.size or actual != entry.sha256:
            raise errors.IntegrityError(
                f"{entry.path} ({route}): its sha256 {actual} is not the signed {entry.sha256} "
                f"({count} bytes, {entry.size} signed): the stored file was altered; nothing saved"
            )

    async def download_results(
        self,
        job_id: str,
        out_dir: Path,
        progress: ProgressCallback | None = None,
        kinds: Sequence[str] = ("RESULT_KIND_OUTPUT", "RESULT_KIND_ALGORITHM_LOG"),
        direct: bool = True,
    ) -> list[DownloadedFile]:
        """Saves the job's result files under ``out_dir`` (their result paths kept), each checked
        against the size and sha256 of the provider-signed manifest; raises IntegrityError on a
        mismatch, and nothing of that file is saved. Each file is read through its link when the
        provider offers one (``direct``), else streamed through the provider."""
        manifest = [f for f in await self.signed_manifest(job_id) if f.kind in kinds]
        total = sum(f.size for f in manifest)
        done = 0
        saved = []
        for entry in manifest:
            target = _inside(out_dir, entry.path)
            partial = target.with_name(target.name + ".part")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with partial.open("wb") as sink:
                    async for data in self.verified_chunks(job_id, entry, direct):
                        sink.write(data)
                        done += len(data)
                        if progress is not None:
                            progress(done, total)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            partial.replace(target)
            saved.append(DownloadedFile(entry.index, entry.path, target, entry.size, entry.sha256, entry.kind))
        return saved


def _inside(out_dir: Path, result_path: str) -> Path:
    """Where a result path is saved: under out_dir, never outside it."""
    root = out_dir.resolve()
    target = (root / result_path).resolve()
    if root != target and root not in target.parents:
        raise errors.IntegrityError(f"result path {result_path!r} leaves the download directory")
    return target
