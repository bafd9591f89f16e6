"""Tables of the engine's store."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Integer, LargeBinary, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    metadata = MetaData()


class EngineJob(Base):
    __tablename__ = "engine_jobs"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    environment_id: Mapped[str] = mapped_column(String(128))
    # The serialized c2d.common.v1.Workflow handed to pods, holding only the secrets
    # a stage still to run reads (stages.secrets_needed): the locations and headers
    # until configure is over, the grant until publish is. spec["workflow_sha256"]
    # is the digest of the workflow as submitted.
    workflow: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[int] = mapped_column(Integer, default=1)
    # queued, configure, algorithm, publish, done: where recovery resumes.
    stage: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    results: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    results_did: Mapped[str] = mapped_column(String(128), default="")
    # The JobSpec fields the engine needs to resume the job after a restart.
    spec: Mapped[dict] = mapped_column(JSON)


class EngineEvent(Base):
    """The engine's event log: appended before it is streamed."""

    __tablename__ = "engine_events"

    sequence: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    change: Mapped[dict] = mapped_column(JSON)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
