"""The IPFS content each job's live results name, in its own table, so the
removal of one job's results never unpins content another job's live results
name too; filled from the jobs' results manifests.

Revision ID: 0006
Revises: 0005
"""

import json

import sqlalchemy as sa
from alembic import op

from plumbing.storage import pin_key

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BATCH = 500

jobs = sa.table(
    "jobs",
    sa.column("job_id", sa.String),
    sa.column("results", sa.JSON),
    sa.column("results_expired_at", sa.DateTime),
    sa.column("deleted_at", sa.DateTime),
)


def upgrade() -> None:
    pins = op.create_table(
        "result_pins",
        sa.Column("pin_key", sa.String(160), primary_key=True),
        sa.Column("job_id", sa.String(64), primary_key=True),
    )
    op.create_index("ix_result_pins_job", "result_pins", ["job_id"])
    connection = op.get_bind()
    after = ""
    while True:  # by job id, a batch at a time: the table can be large
        rows = connection.execute(
            sa.select(jobs.c.job_id, jobs.c.results)
            .where(
                jobs.c.job_id > after,
                jobs.c.results.is_not(None),
                jobs.c.results_expired_at.is_(None),
                jobs.c.deleted_at.is_(None),
            )
            .order_by(jobs.c.job_id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        pairs = []
        for job_id, stored in rows:
            results = json.loads(stored) if isinstance(stored, str) else stored  # noqa: TID251 - our own rows
            keys = {pin_key(f.get("location") or "") for f in (results or {}).get("files", [])}
            pairs.extend({"pin_key": key, "job_id": job_id} for key in keys if key)
        if pairs:
            op.bulk_insert(pins, pairs)
        after = rows[-1].job_id


def downgrade() -> None:
    op.drop_table("result_pins")
