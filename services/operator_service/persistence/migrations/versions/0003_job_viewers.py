"""Job viewers in their own table, so ListJobs for an address finds the jobs
it owns or may view by index; filled from the jobs' viewers column.

Revision ID: 0003
Revises: 0002
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    viewers = op.create_table(
        "job_viewers",
        sa.Column("address", sa.String(128), primary_key=True),
        sa.Column("job_id", sa.String(64), primary_key=True),
    )
    rows = op.get_bind().execute(sa.text("SELECT job_id, viewers FROM jobs"))
    pairs = []
    for job_id, stored in rows:
        addresses = json.loads(stored) if isinstance(stored, str) else stored  # noqa: TID251 - our own rows
        pairs.extend({"address": address, "job_id": job_id} for address in set(addresses or []))
    if pairs:
        op.bulk_insert(viewers, pairs)


def downgrade() -> None:
    op.drop_table("job_viewers")
