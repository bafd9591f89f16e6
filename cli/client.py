"""A signed client for the provider, used by the CLI, the demo and tests."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator

import grpc
from eth_account import Account

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import (
    asset_pb2, asset_pb2_grpc, auth_pb2, ledger_pb2, ledger_pb2_grpc, provider_pb2, provider_pb2_grpc,
)
from services.provider.api.signatures import signed_fields
from services.provider.domain import ddos, identity


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
        self.assets = asset_pb2_grpc.AssetServiceStub(channel)
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        # Microseconds since the epoch: strictly increasing across restarts.
        self._nonces = itertools.count(time.time_ns() // 1000)

    def signed(self, method: str, request: Any) -> Any:
        nonce = max(next(self._nonces), time.time_ns() // 1000)
        self._nonces = itertools.count(nonce + 1)
        request.signature.CopyFrom(auth_pb2.ConsumerSignature(address=self.address, nonce=nonce))
        fields = signed_fields(request)
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
        return await self.compute.GetJobDetails(self.signed("GetJobDetails", provider_pb2.GetJobDetailsRequest(job_id=job_id)))

    async def watch(self, job_id: str) -> AsyncIterator[common_pb2.Job]:
        call = self.compute.WatchJob(self.signed("WatchJob", provider_pb2.WatchJobRequest(job_id=job_id)))
        async for update in call:
            yield update.job

    async def result(self, job_id: str, index: int, offset: int = 0) -> tuple[common_pb2.ResultFile, bytes]:
        request = self.signed(
            "GetComputeResult", provider_pb2.GetComputeResultRequest(job_id=job_id, index=index, offset=offset)
        )
        entry, chunks = common_pb2.ResultFile(), []
        async for chunk in self.compute.GetComputeResult(request):
            if chunk.HasField("file"):
                entry = chunk.file
            chunks.append(chunk.data)
        return entry, b"".join(chunks)
