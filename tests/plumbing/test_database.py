"""Database: a pooled PostgreSQL connection that the server closed while it
sat idle is replaced before use, with no ping on a busy connection."""

from __future__ import annotations

import psycopg2
import pytest
from sqlalchemy import MetaData, text
from sqlalchemy.exc import OperationalError

from plumbing import database
from plumbing.database import Database
from tests.support.stacks import postgres_url  # noqa: F401 - fixture


def backend_pid(db: Database) -> int:
    return db.transaction(lambda s: s.scalar(text("SELECT pg_backend_pid()")))


def terminate(url: str, pid: int) -> None:
    admin = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()


def test_an_idle_connection_closed_by_the_server_is_replaced(postgres_url, monkeypatch):  # noqa: F811
    db = Database(postgres_url, MetaData(), threads=1)
    try:
        first = backend_pid(db)
        terminate(postgres_url, first)
        monkeypatch.setattr(database, "IDLE_PING_S", 0.0)  # every checkout counts as idle
        second = backend_pid(db)
        assert second != first
    finally:
        db.close()


def test_a_recently_used_connection_is_not_pinged_and_a_lost_one_is_dropped(postgres_url, monkeypatch):  # noqa: F811
    db = Database(postgres_url, MetaData(), threads=1)
    try:
        first = backend_pid(db)
        monkeypatch.setattr(database, "IDLE_PING_S", 3600.0)  # never idle: no ping
        terminate(postgres_url, first)
        # Unpinged, the dead connection fails its transaction once...
        with pytest.raises(OperationalError):
            backend_pid(db)
        # ...and the pool replaces it for the next.
        assert backend_pid(db) != first
    finally:
        db.close()
