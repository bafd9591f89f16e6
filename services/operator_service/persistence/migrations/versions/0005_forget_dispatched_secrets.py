"""Publishers' secrets leave the jobs table: the workflow of a job its engine
took, or that ended, keeps no decrypted file location, header or
results-asset grant (new jobs lose them when their engine takes them; this
clears the rows stored before). No column changes.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from plumbing.statuses import TERMINAL
from plumbing.workflows import redacted

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BATCH = 500

jobs = sa.table(
    "jobs",
    sa.column("job_id", sa.String),
    sa.column("workflow", sa.LargeBinary),
    sa.column("dispatched", sa.Boolean),
    sa.column("status", sa.Integer),
)


def upgrade() -> None:
    connection = op.get_bind()
    after = ""
    while True:  # by job id, a batch at a time: the table can be large
        rows = connection.execute(
            sa.select(jobs.c.job_id, jobs.c.workflow)
            .where(
                jobs.c.job_id > after,
                sa.or_(jobs.c.dispatched.is_(True), jobs.c.status.in_([int(s) for s in TERMINAL])),
            )
            .order_by(jobs.c.job_id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        changed = [
            {"target": job_id, "kept": kept}
            for job_id, workflow in rows
            if (kept := redacted(bytes(workflow), frozenset())) != bytes(workflow)
        ]
        if changed:
            connection.execute(
                jobs.update().where(jobs.c.job_id == sa.bindparam("target")).values(workflow=sa.bindparam("kept")),
                changed,
            )
        after = rows[-1].job_id


def downgrade() -> None:
    pass  # what was forgotten cannot come back, and the schema did not change
