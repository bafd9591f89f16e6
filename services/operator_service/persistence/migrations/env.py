"""Alembic environment: runs on the connection `migrations.upgrade` passes in,
inside its transaction (no alembic.ini, no URL of its own)."""

from alembic import context

from services.operator_service.persistence.migrations import VERSION_TABLE
from services.operator_service.persistence.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=Base.metadata, render_as_batch=True, version_table=VERSION_TABLE
)
with context.begin_transaction():
    context.run_migrations()
