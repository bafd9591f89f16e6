"""Dispatch claims: a round marks the jobs it hands to the engine (and when)
and commits before calling SubmitJobs, so no row lock is held over the call.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("dispatch_claim", sa.String(32), nullable=True))
    op.add_column("jobs", sa.Column("dispatch_claimed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("dispatch_claimed_at")
        batch.drop_column("dispatch_claim")
