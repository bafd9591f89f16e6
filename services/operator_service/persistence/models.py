"""Tables of the operator-service.

The schema is created and upgraded by the Alembic revisions in `migrations/`;
these models must match the head revision (a test compares them).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Index, Integer, LargeBinary, MetaData, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BigId = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData()


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_created", "owner", "created_at"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_environment_created", "environment_id", "created_at"),
        Index("ix_jobs_undispatched", "dispatched", "created_at"),
        # Keyset paging of ListJobs orders by (created_at, job_id).
        Index("ix_jobs_created_job", "created_at", "job_id"),
        # The storage-expiry sweeper only ever looks at finished jobs it has not swept.
        Index(
            "ix_jobs_results_unexpired",
            "environment_id",
            "finished_at",
            postgresql_where=text("results_expired_at IS NULL AND finished_at IS NOT NULL"),
            sqlite_where=text("results_expired_at IS NULL AND finished_at IS NOT NULL"),
        ),
    )

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), unique=True)
    owner: Mapped[str] = mapped_column(String(64))
    environment_id: Mapped[str] = mapped_column(String(128))
    engine_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[int] = mapped_column(Integer)
    end_reason: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The serialized c2d.common.v1.Workflow. Its secrets (decrypted file locations,
    # their headers, the results-asset grant) are kept only until the engine takes
    # the job or it ends undispatched: then only what the record shows stays.
    workflow: Mapped[bytes] = mapped_column(LargeBinary)
    dataset_dids: Mapped[list[str]] = mapped_column(JSON)
    algorithm_did: Mapped[str] = mapped_column(String(128))
    viewers: Mapped[list[str]] = mapped_column(JSON, default=list)
    results: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    outcome: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    results_did: Mapped[str] = mapped_column(String(128), default="")
    dispatched: Mapped[bool] = mapped_column(Boolean, default=False)
    # The dispatch round handing the job to its engine, and when it claimed it:
    # set (and committed) before SubmitJobs, cleared once the round settles.
    dispatch_claim: Mapped[str | None] = mapped_column(String(32), nullable=True)
    dispatch_claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When the storage-expiry sweeper removed the job's results (or found none to remove).
    results_expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The service sequence of the job's latest applied change.
    sequence: Mapped[int] = mapped_column(BigId, default=0)


class JobViewer(Base):
    """Addresses a job's owner named as viewers: ListJobs finds their jobs by index."""

    __tablename__ = "job_viewers"

    address: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class ResultPin(Base):
    """The IPFS content the live results of each job name (jobs.results, by
    `storage.pin_key`): content-addressed results of two jobs can be the same
    one pin, removed only once no live job names it. A row lives from the
    change that records the results until they are removed (DeleteJob,
    expiry)."""

    __tablename__ = "result_pins"
    __table_args__ = (Index("ix_result_pins_job", "job_id"),)

    pin_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class JobEvent(Base):
    """The status history: one row per applied transition."""

    __tablename__ = "job_events"

    sequence: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[int] = mapped_column(Integer)
    end_reason: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    engine_id: Mapped[str] = mapped_column(String(128), default="")
    engine_sequence: Mapped[int] = mapped_column(BigId, default=0)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Engine(Base):
    __tablename__ = "engines"

    engine_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    address: Mapped[str] = mapped_column(String(256))
    last_applied_sequence: Mapped[int] = mapped_column(BigId, default=0)
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The environments of the latest heartbeat, as proto JSON.
    environments: Mapped[list] = mapped_column(JSON, default=list)
