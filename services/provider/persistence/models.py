"""Tables of the provider."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BigId = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData()


class Asset(Base):
    __tablename__ = "assets"
    __table_args__ = (Index("ix_assets_type_owner", "asset_type", "owner"),)

    did: Mapped[str] = mapped_column(String(80), primary_key=True)
    owner: Mapped[str] = mapped_column(String(42))
    asset_type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(Text)
    ddo_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Nonce(Base):
    """Per address, the floor: every nonce at or below it is refused."""

    __tablename__ = "nonces"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    nonce: Mapped[int] = mapped_column(BigId)


class UsedNonce(Base):
    """The recent nonces above the floor, so concurrent requests of one
    address may arrive out of order and a replay still fails."""

    __tablename__ = "used_nonces"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    nonce: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)


class Datatoken(Base):
    __tablename__ = "datatokens"
    __table_args__ = (Index("ix_datatokens_asset", "did", "service_id", unique=True),)

    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    did: Mapped[str] = mapped_column(String(80))
    service_id: Mapped[str] = mapped_column(String(128))
    owner: Mapped[str] = mapped_column(String(42))
    symbol: Mapped[str] = mapped_column(String(32))


class Balance(Base):
    __tablename__ = "balances"
    __table_args__ = (CheckConstraint("amount >= 0", name="balance_not_negative"),)

    datatoken: Mapped[str] = mapped_column(String(42), primary_key=True)
    holder: Mapped[str] = mapped_column(String(42), primary_key=True)
    amount: Mapped[int] = mapped_column(BigId)


class Order(Base):
    __tablename__ = "orders"

    order_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    did: Mapped[str] = mapped_column(String(80))
    service_id: Mapped[str] = mapped_column(String(128))
    consumer: Mapped[str] = mapped_column(String(42), index=True)
    datatoken: Mapped[str] = mapped_column(String(42))
    amount: Mapped[int] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Set atomically when a StartCompute claims the order: one job per order.
    claimed_by_request: Mapped[str | None] = mapped_column(String(80), nullable=True)
    used_by_job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # How often a job that never ran its algorithm gave the order back: part of
    # the request key, so the next StartCompute with it starts a new job.
    releases: Mapped[int] = mapped_column(Integer, default=0)
