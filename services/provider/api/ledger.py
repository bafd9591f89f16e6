"""LedgerService: the embedded datatoken ledger."""

from __future__ import annotations

from sqlalchemy.orm import Session

from c2d.provider.v1 import ledger_pb2, ledger_pb2_grpc
from plumbing import errors
from plumbing.database import Database
from plumbing.rpc_types import UnaryContext
from services.provider.api.authentication import authenticate
from services.provider.domain import errors as codes
from services.provider.domain import identity
from services.provider.domain.errors import Refusal
from services.provider.domain.signed_requests import RequestVerifier
from services.provider.persistence import store
from services.provider.persistence.catalog import AssetCatalog
from services.provider.persistence.models import Order

ORDER_AMOUNT = 1  # one datatoken buys one job's use of a service


def order_message(order: Order) -> ledger_pb2.Order:
    message = ledger_pb2.Order(
        order_id=order.order_id,
        did=order.did,
        service_id=order.service_id,
        consumer=order.consumer,
        datatoken_address=order.datatoken,
        amount=order.amount,
        used_by_job_id=order.used_by_job_id or "",
    )
    message.expires_at.FromDatetime(order.expires_at)
    return message


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    def __init__(
        self, db: Database, verifier: RequestVerifier, assets: AssetCatalog, fee_address: str, order_timeout_s: int
    ) -> None:
        self._db = db
        self._verifier = verifier
        self._assets = assets
        self._fee_address = fee_address
        self._order_timeout_s = order_timeout_s

    async def CreateDatatoken(
        self,
        request: ledger_pb2.CreateDatatokenRequest,
        context: UnaryContext[ledger_pb2.CreateDatatokenRequest, ledger_pb2.CreateDatatokenResponse],
    ) -> ledger_pb2.CreateDatatokenResponse:
        caller = await authenticate(self._verifier, "CreateDatatoken", request)
        asset = await self._assets.resolve(request.did)
        if asset.owner != caller:
            raise Refusal(codes.NOT_OWNER, f"only the owner {asset.owner} may create datatokens for {request.did}")
        if asset.ddo.service(request.service_id) is None:
            raise Refusal(codes.SERVICE_NOT_FOUND, f"{request.did} has no service {request.service_id!r}")
        symbol = request.symbol or "DT"
        address = await self._db.run(
            lambda s: store.create_datatoken(s, request.did, request.service_id, caller, symbol)
        )
        return ledger_pb2.CreateDatatokenResponse(datatoken_address=address)

    async def Mint(
        self, request: ledger_pb2.MintRequest, context: UnaryContext[ledger_pb2.MintRequest, ledger_pb2.MintResponse]
    ) -> ledger_pb2.MintResponse:
        caller = await authenticate(self._verifier, "Mint", request)
        receiver = identity.normalize_address(request.to_address)
        if request.amount <= 0:
            raise errors.InvalidArgument("amount must be at least 1", "amount_invalid", field="amount")

        def mint(session: Session) -> int:
            token = store.read_datatoken(session, request.datatoken_address)
            if token is None:
                raise errors.NotFound(f"datatoken {request.datatoken_address} does not exist", "datatoken_not_found")
            if token.owner != caller:
                raise Refusal(codes.NOT_OWNER, f"only the datatoken's owner {token.owner} may mint it")
            return store.credit(session, token.address, receiver, request.amount)

        return ledger_pb2.MintResponse(balance=await self._db.run(mint))

    async def GetBalance(
        self,
        request: ledger_pb2.GetBalanceRequest,
        context: UnaryContext[ledger_pb2.GetBalanceRequest, ledger_pb2.GetBalanceResponse],
    ) -> ledger_pb2.GetBalanceResponse:
        holder = identity.normalize_address(request.address)
        amount = await self._db.run(lambda s: store.balance(s, request.datatoken_address, holder))
        return ledger_pb2.GetBalanceResponse(balance=amount)

    async def StartOrder(
        self,
        request: ledger_pb2.StartOrderRequest,
        context: UnaryContext[ledger_pb2.StartOrderRequest, ledger_pb2.StartOrderResponse],
    ) -> ledger_pb2.StartOrderResponse:
        consumer = await authenticate(self._verifier, "StartOrder", request)
        service = (await self._assets.resolve(request.did)).ddo.service(request.service_id)
        if service is None:
            raise Refusal(codes.SERVICE_NOT_FOUND, f"{request.did} has no service {request.service_id!r}")
        valid_s = self._order_timeout_s or service.timeout

        def order(session: Session) -> Order:
            token = store.datatoken_for(session, request.did, request.service_id)
            if token is None:
                raise Refusal(
                    codes.ORDER_INVALID,
                    f"{request.did} service {request.service_id} has no datatoken yet; its owner must create one",
                )
            return store.create_order(session, token, consumer, self._fee_address, ORDER_AMOUNT, valid_s)

        return ledger_pb2.StartOrderResponse(order=order_message(await self._db.run(order)))

    async def GetOrder(
        self,
        request: ledger_pb2.GetOrderRequest,
        context: UnaryContext[ledger_pb2.GetOrderRequest, ledger_pb2.GetOrderResponse],
    ) -> ledger_pb2.GetOrderResponse:
        order = await self._db.run(lambda s: store.read_order(s, request.order_id))
        if order is None:
            raise errors.NotFound(f"order {request.order_id} does not exist", "order_not_found")
        return ledger_pb2.GetOrderResponse(order=order_message(order))
