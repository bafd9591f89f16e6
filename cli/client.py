"""A signed client for the provider, used by the CLI, the demo and tests."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import (
    asset_pb2,
    asset_pb2_grpc,
    auth_pb2,
    ledger_pb2,
    ledger_pb2_grpc,
    provider_pb2,
    provider_pb2_grpc,
)
from plumbing.ethereum import Account
from plumbing.server import reuse_freed_memory
from services.provider.domain import ddos, identity


def connect(address: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    """The channel a consumer (the CLI, the demo, an SDK user) talks to a provider on.

    Also keeps freed heap for reuse in this process (plumbing.server's
    reuse_freed_memory): each received result chunk is a few buffers of up to 4 MiB,
    and with glibc's default thresholds they are returned to the kernel and
    page-faulted in again for every chunk, which cost more CPU than the rest of
    the download (1.2 CPU-s/GiB received, 0.45 with it). gRPC's channel
    options (HTTP/2 frame size, windows, TCP read sizes) made no measurable
    difference, so it has none.
    """
    reuse_freed_memory()
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, credentials)


def load_or_create_key(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Account.create().key.hex())
        path.chmod(0o600)
    return path.read_text().strip()


class Client:
    """One Ethereum identity talking to one provider."""

    def __init__(self, channel: grpc.aio.Channel, private_key: str) -> None:
        self.account = Account.from_key(private_key)
        self.address: str = self.account.address
        self._key = private_key
        self.compute = provider_pb2_grpc.ProviderServiceStub(channel)
        # GetComputeResult with a deserializer that leaves the data in the received buffer
        self._result_stream = channel.unary_stream(
            "/c2d.provider.v1.ProviderService/GetComputeResult",
            request_serializer=provider_pb2.GetComputeResultRequest.SerializeToString,
            response_deserializer=split_result_chunk,
        )
        self.assets = asset_pb2_grpc.AssetServiceStub(channel)
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        # Microseconds since the epoch: strictly increasing across restarts.
        self._nonces = itertools.count(time.time_ns() // 1000)

    def signed(self, method: str, request: Any) -> Any:
        nonce = max(next(self._nonces), time.time_ns() // 1000)
        self._nonces = itertools.count(nonce + 1)
        request.signature.CopyFrom(auth_pb2.ConsumerSignature(address=self.address, nonce=nonce))
        fields = identity.signed_fields(request)
        request.signature.signature = identity.sign_request(self._key, method, fields, nonce)
        return request

    # -- publishing ------------------------------------------------------------------

    async def publish(self, ddo: dict[str, Any], salt: str) -> str:
        request = asset_pb2.PublishAssetRequest(ddo_json=json.dumps(ddo), salt=salt)
        response = await self.assets.PublishAsset(self.signed("PublishAsset", request))
        return response.did

    def did_for(self, salt: str) -> str:
        return ddos.derive_did(self.address, salt)

    async def encrypt(self, files: list[common_pb2.FileLocation]) -> str:
        return (await self.assets.EncryptFiles(asset_pb2.EncryptFilesRequest(files=files))).encrypted_files

    async def create_datatoken(self, did: str, service_id: str) -> str:
        request = ledger_pb2.CreateDatatokenRequest(did=did, service_id=service_id, symbol="DT")
        return (await self.ledger.CreateDatatoken(self.signed("CreateDatatoken", request))).datatoken_address

    async def mint(self, datatoken: str, to: str, amount: int) -> int:
        request = ledger_pb2.MintRequest(datatoken_address=datatoken, to_address=to, amount=amount)
        return (await self.ledger.Mint(self.signed("Mint", request))).balance

    # -- consuming -----------------------------------------------------------------------

    async def order(self, did: str, service_id: str) -> str:
        request = ledger_pb2.StartOrderRequest(did=did, service_id=service_id)
        return (await self.ledger.StartOrder(self.signed("StartOrder", request))).order.order_id

    async def start(self, spec: provider_pb2.ComputeSpec) -> provider_pb2.StartComputeResponse:
        return await self.compute.StartCompute(self.signed("StartCompute", provider_pb2.StartComputeRequest(spec=spec)))

    async def details(self, job_id: str) -> provider_pb2.GetJobDetailsResponse:
        return await self.compute.GetJobDetails(
            self.signed("GetJobDetails", provider_pb2.GetJobDetailsRequest(job_id=job_id))
        )

    async def watch(self, job_id: str) -> AsyncIterator[common_pb2.Job]:
        call = self.compute.WatchJob(self.signed("WatchJob", provider_pb2.WatchJobRequest(job_id=job_id)))
        async for update in call:
            yield update.job

    async def result_chunks(
        self, job_id: str, index: int, offset: int = 0
    ) -> AsyncIterator[tuple[common_pb2.ResultFile | None, int, memoryview]]:
        """Streams a result file from `offset`: (its entry on the first chunk, else None; offset; data).

        data is a read-only view into the received message (write it to a file
        or join it; bytes(data) copies it).
        """
        request = self.signed(
            "GetComputeResult", provider_pb2.GetComputeResultRequest(job_id=job_id, index=index, offset=offset)
        )
        async for chunk, data in self._result_stream(request):
            yield (chunk.file if chunk.HasField("file") else None), chunk.offset, data

    async def result(self, job_id: str, index: int, offset: int = 0) -> tuple[common_pb2.ResultFile, bytes]:
        entry, chunks = common_pb2.ResultFile(), []
        async for file, _, data in self.result_chunks(job_id, index, offset):
            if file is not None:
                entry = file
            chunks.append(data)
        return entry, b"".join(chunks)


_DATA_KEY = (2 << 3) | 2  # GetComputeResultResponse.data: field 2, length-delimited


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(raw):
            raise DecodeError("truncated varint")
        byte = raw[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if byte < 0x80:
            return value, i


def split_result_chunk(raw: bytes) -> tuple[provider_pb2.GetComputeResultResponse, memoryview]:
    """Parses a GetComputeResultResponse, returning its data as a view into `raw`.

    Protobuf's parse and its .data accessor would each copy the chunk: only the
    other (small) fields go through protobuf here.
    """
    view, rest, data, i = memoryview(raw), [], memoryview(b""), 0
    while i < len(raw):
        start = i
        key, i = _varint(raw, i)
        wire = key & 7
        if wire == 0:
            _, i = _varint(raw, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = _varint(raw, i)
            if key == _DATA_KEY and i + size <= len(raw):
                data, i = view[i : i + size], i + size  # the last occurrence wins, as in protobuf
                continue
            i += size
        else:  # groups (wire types 3, 4) are not in this message: protobuf rejects or skips them
            message = provider_pb2.GetComputeResultResponse.FromString(raw)
            return message, memoryview(message.data)
        rest.append(view[start:i])
    if i > len(raw):
        raise DecodeError("truncated GetComputeResultResponse")
    return provider_pb2.GetComputeResultResponse.FromString(b"".join(rest)), data
