"""Storage expiry: when a job's results were removed, and the sweeper's index;
ListJobs' keyset index on (created_at, job_id) replaces the one on created_at.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UNEXPIRED = "results_expired_at IS NULL AND finished_at IS NOT NULL"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("results_expired_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_jobs_results_unexpired",
        "jobs",
        ["environment_id", "finished_at"],
        postgresql_where=sa.text(UNEXPIRED),
        sqlite_where=sa.text(UNEXPIRED),
    )
    op.create_index("ix_jobs_created_job", "jobs", ["created_at", "job_id"])
    op.drop_index("ix_jobs_created_at", "jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.drop_index("ix_jobs_created_job", "jobs")
    op.drop_index("ix_jobs_results_unexpired", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("results_expired_at")
