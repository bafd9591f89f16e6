"""Alembic migrations of the operator-service's schema, run at start-up.

`upgrade(engine)` brings any database to the head revision: an empty one, one
at an older revision, and one the walking skeleton created with
`create_all` (no version table: it is the initial revision, so it is stamped
as such first). On PostgreSQL the upgrade holds an advisory lock, so replicas
starting together migrate once; the DDL is transactional there, so a failed
upgrade leaves the database at its previous revision.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

# Its own version table: the services may share one database (the embedded
# stack and the tests do), and each migrates its own tables.
VERSION_TABLE = "operator_alembic_version"
INITIAL = "0001"
HEAD = "0006"
# Any constant both replicas agree on: "c2d-op" as an integer.
ADVISORY_LOCK = 0x6332642D6F70


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = connection
    return config


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
        config = _config(connection)
        tables = set(inspect(connection).get_table_names())
        if "jobs" in tables and VERSION_TABLE not in tables:
            command.stamp(config, INITIAL)
        command.upgrade(config, revision)


def stamp(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        command.stamp(_config(connection), revision)
