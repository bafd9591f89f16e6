"""Database: a pooled PostgreSQL connection that the server closed while it
sat idle is replaced before use, with no ping on a busy connection."""

from __future__ import annotations

import psycopg2
import pytest
from sqlalchemy import Column, Index, Integer, MetaData, String, Table, inspect, text
from sqlalchemy.exc import OperationalError

from plumbing import database
from plumbing.database import Database


def backend_pid(db: Database) -> int:
    return db.transaction(lambda s: s.scalar(text("SELECT pg_backend_pid()")))


def terminate(url: str, pid: int) -> None:
    admin = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()


def test_an_idle_connection_closed_by_the_server_is_replaced(postgres_url, monkeypatch):
    db = Database(postgres_url, MetaData(), threads=1)
    try:
        first = backend_pid(db)
        terminate(postgres_url, first)
        monkeypatch.setattr(database, "IDLE_PING_S", 0.0)  # every checkout counts as idle
        second = backend_pid(db)
        assert second != first
    finally:
        db.close()


def test_a_recently_used_connection_is_not_pinged_and_a_lost_one_is_dropped(postgres_url, monkeypatch):
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


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return request.getfixturevalue("postgres_url")


def test_a_database_of_an_earlier_release_gets_the_columns_and_indexes_added_since(any_url):
    earlier = MetaData()
    Table("orders", earlier, Column("id", String(40), primary_key=True))
    old = Database(any_url, earlier, threads=1)
    old.create_schema()
    old.transaction(lambda s: s.execute(text("INSERT INTO orders (id) VALUES ('kept')")))
    old.close()

    now = MetaData()
    Table(
        "orders",
        now,
        Column("id", String(40), primary_key=True),
        Column("releases", Integer, default=0, nullable=False),
        Column("used_by_job_id", String(64), nullable=True),
        Index("ix_orders_used_by_job_id", "used_by_job_id"),
    )
    upgraded = Database(any_url, now, threads=1)
    upgraded.create_schema()
    upgraded.create_schema()  # again: nothing left to add
    rows = upgraded.transaction(lambda s: s.execute(text("SELECT id, releases, used_by_job_id FROM orders")).all())
    upgraded.transaction(lambda s: s.execute(text("INSERT INTO orders (id, releases) VALUES ('new', 2)")))
    indexes = {index["name"] for index in inspect(upgraded.engine).get_indexes("orders")}
    upgraded.close()
    assert [tuple(row) for row in rows] == [("kept", 0, None)]
    assert "ix_orders_used_by_job_id" in indexes
