"""Reads a PostgreSQL database raw, for tests that look for what must not be stored."""

from __future__ import annotations

import contextlib

import psycopg2


def _connect(database_url: str) -> psycopg2.extensions.connection:
    return psycopg2.connect(database_url.replace("postgresql+psycopg2://", "postgresql://", 1))


def public_tables(database_url: str) -> set[str]:
    with contextlib.closing(_connect(database_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        return {table for (table,) in cur.fetchall()}


def tables_holding(database_url: str, needles: dict[str, str]) -> dict[str, set[str]]:
    """For each needle, the tables with a row that holds it in any column: as
    text, or (in a bytea column, which PostgreSQL prints as hex) as its UTF-8
    bytes. Every table of the public schema, every row, read as text by SQL."""
    found: dict[str, set[str]] = {name: set() for name in needles}
    tables = public_tables(database_url)
    with contextlib.closing(_connect(database_url)) as conn, conn.cursor() as cur:
        for table in sorted(tables):
            cur.execute(f'SELECT CAST(t AS text) FROM "{table}" AS t')  # the whole row, every column
            for (row,) in cur.fetchall():
                for name, needle in needles.items():
                    if needle in row or needle.encode().hex() in row:
                        found[name].add(table)
    return found
