"""Assets, nonces and the embedded datatoken ledger.

The ledger functions are the embedded implementation of the datatoken
ledger; an EVM chain could implement the same calls (create, mint, balance,
order, claim) behind the provider's servicers. Balances move with guarded
UPDATEs (`amount >= n`), so concurrent orders can never overdraw.
"""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Update, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.provider.domain import ddos
from services.provider.domain import errors as codes
from services.provider.domain.errors import Refusal
from services.provider.persistence.models import (
    Asset,
    Balance,
    Datatoken,
    Nonce,
    Order,
    UsedNonce,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- nonces -------------------------------------------------------------------


NONCE_WINDOW = 256  # nonces remembered above the floor, per address


def read_nonce(session: Session, address: str) -> int:
    """The highest nonce the address used (0 if none)."""
    used = session.scalar(select(func.max(UsedNonce.nonce)).where(UsedNonce.address == address))
    return max(used or 0, nonce_floor(session, address))


def nonce_floor(session: Session, address: str) -> int:
    return session.scalar(select(Nonce.nonce).where(Nonce.address == address)) or 0


def spend_nonce(session: Session, address: str, nonce: int) -> None:
    """Records `nonce` as used, or raises the Refusal that `spend_nonces` gives."""
    refusal = spend_nonces(session, [(address, nonce)])[0]
    if refusal is not None:
        raise refusal


def spend_nonces(session: Session, spends: Sequence[tuple[str, int]]) -> list[Refusal | None]:
    """Records each (address, nonce) as used; per spend, None or why it is refused.

    Strictly increasing nonces would refuse a client's concurrent requests
    that reach the database out of order; a window of recent nonces keeps
    those while a replay still finds its nonce used (or, once it left the
    window, at or below the floor). A batch costs two or three statements
    whatever its size, run on the connection (the ORM's per-statement work was
    most of a read's database time): the floors, one insert that skips nonces
    already used (by anyone: another provider process too) and says which it
    stored, and, for the addresses that may have grown past twice NONCE_WINDOW
    nonces, their counts; such an address is cut back to NONCE_WINDOW and its
    floor raised."""
    connection = session.connection()
    addresses = sorted({address for address, _ in spends})
    floors = dict(connection.execute(_FLOORS, {"addresses": addresses}).all())
    fresh = list(dict.fromkeys((address, nonce) for address, nonce in spends if nonce > floors.get(address, 0)))
    stored: set[tuple[str, int]] = set()
    if fresh:
        statement = _INSERT_UNUSED[connection.dialect.name]
        stored = set(map(tuple, connection.execute(statement, [{"address": a, "nonce": n} for a, n in fresh])))
    outcomes: list[Refusal | None] = []
    for address, nonce in spends:
        floor = floors.get(address, 0)
        if nonce <= floor:
            outcomes.append(
                Refusal(codes.NONCE_INVALID, f"nonce {nonce} is too old: use a nonce greater than {floor} (GetNonce)")
            )
        elif (address, nonce) in stored:
            stored.discard((address, nonce))  # the same nonce twice in one batch: the second is a replay
            outcomes.append(None)
        else:
            outcomes.append(
                Refusal(codes.NONCE_INVALID, f"nonce {nonce} was already used; sign the request again with a new nonce")
            )
    _cut_back_crowded(session, [address for address, _ in spends], outcomes)
    return outcomes


# Per database, per address: how many more nonces it can take before it may
# hold more than twice NONCE_WINDOW, as of its last count here. Counting an
# address's nonces on every spend cost a quarter of a batch's database time;
# an address is counted again only once it may have filled that room. Nonces
# stored meanwhile by another process only make a cut come later (the floor
# refuses a cut nonce whenever the cut is made).
_room: weakref.WeakKeyDictionary[Engine | Connection, dict[str, int]] = weakref.WeakKeyDictionary()
_ROOM_ADDRESSES = 1 << 16  # forgotten all at once past this: they are counted again


def _cut_back_crowded(session: Session, spenders: Sequence[str], outcomes: Sequence[Refusal | None]) -> None:
    engine = session.get_bind()
    room = _room.get(engine)
    if room is None or len(room) > _ROOM_ADDRESSES:
        room = _room[engine] = {}
    for address, outcome in zip(spenders, outcomes, strict=False):
        if outcome is None:
            room[address] = room.get(address, 0) - 1  # an address not counted yet has no room
    uncounted = sorted(address for address in set(spenders) if room.get(address, -1) < 0)
    if not uncounted:
        return
    connection = session.connection()
    for address, count in connection.execute(_COUNTS, {"addresses": uncounted}).all():
        if count <= 2 * NONCE_WINDOW:
            room[address] = 2 * NONCE_WINDOW - count
            continue
        oldest_kept = session.scalar(
            select(UsedNonce.nonce)
            .where(UsedNonce.address == address)
            .order_by(UsedNonce.nonce.desc())
            .offset(NONCE_WINDOW)
            .limit(1)
        )
        if oldest_kept is None:  # another transaction cut them back since the count: counted again next time
            continue
        session.execute(delete(UsedNonce).where(UsedNonce.address == address, UsedNonce.nonce <= oldest_kept))
        _raise_floor(session, address, oldest_kept)
        room[address] = NONCE_WINDOW


_FLOORS = select(Nonce.address, Nonce.nonce).where(Nonce.address.in_(bindparam("addresses", expanding=True)))
_COUNTS = (
    select(UsedNonce.address, func.count())
    .where(UsedNonce.address.in_(bindparam("addresses", expanding=True)))
    .group_by(UsedNonce.address)
)
# ON CONFLICT DO NOTHING: a nonce already stored (or stored meanwhile by another
# transaction) is skipped, not an error; RETURNING names the rows it stored.
_INSERT_UNUSED = {
    name: dialect.insert(UsedNonce).on_conflict_do_nothing().returning(UsedNonce.address, UsedNonce.nonce)
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}


def _raise_floor(session: Session, address: str, floor: int) -> None:
    raised = _matched_rows(
        session, update(Nonce).where(Nonce.address == address, Nonce.nonce < floor).values(nonce=floor)
    )
    if raised == 0 and session.get(Nonce, address) is None:
        try:
            with session.begin_nested():
                session.add(Nonce(address=address, nonce=floor))
        except IntegrityError:
            _raise_floor(session, address, floor)


# -- assets -------------------------------------------------------------------


def create_asset(session: Session, asset: Asset) -> None:
    if session.get(Asset, asset.did) is not None:
        raise Refusal(codes.DDO_INVALID, f"asset {asset.did} already exists; use another salt or UpdateAsset")
    session.add(asset)


def read_asset(session: Session, did: str) -> Asset | None:
    return session.get(Asset, did)


def list_assets(session: Session, asset_type: str, owner: str, page_size: int, after_did: str) -> list[Asset]:
    """Datasets and algorithms, by DID. Never results assets: those are their
    job's, and nothing about a job is public (domain/results_assets.py)."""
    query = select(Asset)
    if asset_type:
        query = query.where(Asset.asset_type == asset_type)
    else:
        query = query.where(Asset.asset_type.in_(ddos.ASSET_TYPES))
    if owner:
        query = query.where(Asset.owner == owner)
    if after_did:
        query = query.where(Asset.did > after_did)
    return list(session.scalars(query.order_by(Asset.did).limit(page_size + 1)))


# -- ledger ---------------------------------------------------------------------


def create_datatoken(session: Session, did: str, service_id: str, owner: str, symbol: str) -> str:
    existing = session.scalar(select(Datatoken).where(Datatoken.did == did, Datatoken.service_id == service_id))
    if existing is not None:
        return existing.address
    address = ddos.datatoken_address(did, service_id)
    session.add(Datatoken(address=address, did=did, service_id=service_id, owner=owner, symbol=symbol))
    return address


def read_datatoken(session: Session, address: str) -> Datatoken | None:
    return session.get(Datatoken, address)


def datatoken_for(session: Session, did: str, service_id: str) -> Datatoken | None:
    return session.scalar(select(Datatoken).where(Datatoken.did == did, Datatoken.service_id == service_id))


def _matched_rows(session: Session, statement: Update) -> int:
    """Runs an UPDATE and returns how many rows it matched. (Its result is a
    CursorResult; SQLAlchemy types Session.execute's as a plain Result.)"""
    result = session.execute(statement)
    assert isinstance(result, CursorResult)
    return result.rowcount


def balance(session: Session, datatoken: str, holder: str) -> int:
    return session.scalar(select(Balance.amount).where(Balance.datatoken == datatoken, Balance.holder == holder)) or 0


def credit(session: Session, datatoken: str, holder: str, amount: int) -> int:
    updated = _matched_rows(
        session,
        update(Balance)
        .where(Balance.datatoken == datatoken, Balance.holder == holder)
        .values(amount=Balance.amount + amount),
    )
    if updated == 0:
        try:
            with session.begin_nested():
                session.execute(insert(Balance).values(datatoken=datatoken, holder=holder, amount=amount))
        except IntegrityError:
            return credit(session, datatoken, holder, amount)
    return balance(session, datatoken, holder)


def debit(session: Session, datatoken: str, holder: str, amount: int) -> None:
    """Takes `amount` from the holder or refuses; never goes below zero."""
    updated = _matched_rows(
        session,
        update(Balance)
        .where(Balance.datatoken == datatoken, Balance.holder == holder, Balance.amount >= amount)
        .values(amount=Balance.amount - amount),
    )
    if updated != 1:
        raise Refusal(
            codes.INSUFFICIENT_BALANCE,
            f"{holder} holds {balance(session, datatoken, holder)} of datatoken {datatoken}, needs {amount}",
        )


def create_order(
    session: Session, datatoken: Datatoken, consumer: str, fee_address: str, amount: int, valid_s: int
) -> Order:
    debit(session, datatoken.address, consumer, amount)
    credit(session, datatoken.address, fee_address, amount)
    now = utcnow()
    order = Order(
        order_id="0x" + secrets.token_hex(32),
        did=datatoken.did,
        service_id=datatoken.service_id,
        consumer=consumer,
        datatoken=datatoken.address,
        amount=amount,
        created_at=now,
        # A service timeout of 0 means the order never expires (Ocean's rule).
        expires_at=now + timedelta(seconds=valid_s) if valid_s > 0 else now + timedelta(days=365 * 100),
    )
    session.add(order)
    return order


def read_order(session: Session, order_id: str) -> Order | None:
    return session.get(Order, order_id)


def check_order(
    order: Order | None, order_id: str, consumer: str, did: str, service_id: str, request_key: str
) -> Order:
    if order is None:
        raise Refusal(
            codes.ORDER_INVALID, f"order {order_id or '(none)'} does not exist; order {did} first (StartOrder)"
        )
    if order.consumer != consumer or order.did != did or order.service_id != service_id:
        raise Refusal(
            codes.ORDER_INVALID,
            f"order {order_id} is not this consumer's order for {did} service {service_id}",
        )
    if _aware(order.expires_at) <= utcnow():
        raise Refusal(codes.ORDER_EXPIRED, f"order {order_id} expired at {order.expires_at.isoformat()}; order again")
    if order.claimed_by_request not in (None, request_key):
        raise Refusal(codes.ORDER_USED, f"order {order_id} was already used by another job; order again")
    return order


def claim_orders(session: Session, order_ids: Sequence[str], request_key: str) -> None:
    """Marks the orders as used by this request, all or none.

    The guarded UPDATE is what makes 50 racing requests on one order start one
    job: only one request's claim can succeed."""
    for order_id in order_ids:
        claimed = _matched_rows(
            session,
            update(Order)
            .where(Order.order_id == order_id)
            .where((Order.claimed_by_request.is_(None)) | (Order.claimed_by_request == request_key))
            .values(claimed_by_request=request_key),
        )
        if claimed != 1:
            raise Refusal(codes.ORDER_USED, f"order {order_id} was already used by another job; order again")


def release_orders(session: Session, order_ids: Sequence[str], request_key: str) -> None:
    session.execute(
        update(Order)
        .where(Order.order_id.in_(order_ids), Order.claimed_by_request == request_key, Order.used_by_job_id.is_(None))
        .values(claimed_by_request=None)
    )


def record_job(session: Session, order_ids: Sequence[str], job_id: str) -> None:
    session.execute(update(Order).where(Order.order_id.in_(order_ids)).values(used_by_job_id=job_id))


def read_orders(session: Session, order_ids: Sequence[str]) -> list[Order]:
    return list(session.scalars(select(Order).where(Order.order_id.in_(order_ids))))


def release_spent_orders(session: Session, job_id: str) -> None:
    """Gives back the orders a job that released them had used (see
    plumbing.statuses.releases_orders). Guarded by the job: of racing retries,
    one releases them, once."""
    session.execute(
        update(Order)
        .where(Order.used_by_job_id == job_id)
        .values(claimed_by_request=None, used_by_job_id=None, releases=Order.releases + 1)
    )


def read_jobs_of_claimed_orders(session: Session, request_key: str) -> list[str | None]:
    """The job each order claimed under `request_key` started (None: not recorded yet)."""
    return list(session.scalars(select(Order.used_by_job_id).where(Order.claimed_by_request == request_key)))


def valid_order_for(session: Session, consumer: str, did: str, service_id: str) -> Order | None:
    return session.scalar(
        select(Order)
        .where(
            Order.consumer == consumer,
            Order.did == did,
            Order.service_id == service_id,
            Order.claimed_by_request.is_(None),
            Order.expires_at > utcnow(),
        )
        .order_by(Order.created_at)
        .limit(1)
    )
