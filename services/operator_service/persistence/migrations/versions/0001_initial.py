"""The walking skeleton's schema: jobs, their status history, engines.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False, unique=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("environment_id", sa.String(128), nullable=False),
        sa.Column("engine_id", sa.String(128), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("end_reason", sa.Integer, nullable=False),
        sa.Column("error_code", sa.String(64), nullable=False),
        sa.Column("error_message", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("workflow", sa.LargeBinary, nullable=False),
        sa.Column("dataset_dids", sa.JSON, nullable=False),
        sa.Column("algorithm_did", sa.String(128), nullable=False),
        sa.Column("viewers", sa.JSON, nullable=False),
        sa.Column("results", sa.JSON, nullable=True),
        sa.Column("outcome", sa.JSON, nullable=True),
        sa.Column("results_did", sa.String(128), nullable=False),
        sa.Column("dispatched", sa.Boolean, nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sequence", BigId, nullable=False),
    )
    op.create_index("ix_jobs_owner_created", "jobs", ["owner", "created_at"])
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at"])
    op.create_index("ix_jobs_environment_created", "jobs", ["environment_id", "created_at"])
    op.create_index("ix_jobs_undispatched", "jobs", ["dispatched", "created_at"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])

    op.create_table(
        "job_events",
        sa.Column("sequence", BigId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("end_reason", sa.Integer, nullable=False),
        sa.Column("error_code", sa.String(64), nullable=False),
        sa.Column("error_message", sa.Text, nullable=False),
        sa.Column("engine_id", sa.String(128), nullable=False),
        sa.Column("engine_sequence", BigId, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id"])

    op.create_table(
        "engines",
        sa.Column("engine_id", sa.String(128), primary_key=True),
        sa.Column("address", sa.String(256), nullable=False),
        sa.Column("last_applied_sequence", BigId, nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("environments", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("engines")
    op.drop_table("job_events")
    op.drop_table("jobs")
