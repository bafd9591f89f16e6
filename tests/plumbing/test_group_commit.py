"""GroupCommit: concurrent writes share transactions, each caller gets its own
result or its own failure, and a write whose caller gave up still stands."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from plumbing import errors
from plumbing.database import Database, GroupCommit, sqlite_url

metadata = MetaData()
rows = Table("rows", metadata, Column("id", Integer, primary_key=True, autoincrement=False), Column("name", String(16)))


@pytest.fixture
def db(tmp_path):  # type: ignore[no-untyped-def]
    database = Database(sqlite_url(tmp_path / "group.db"), metadata)
    database.create_schema()
    yield database
    database.close()


def count(db: Database) -> int:
    return db.transaction(lambda s: s.scalar(select(func.count()).select_from(rows)))


async def test_concurrent_writes_share_transactions_and_get_their_own_results(db):
    transactions: list[int] = []

    def write(session, items):  # type: ignore[no-untyped-def]
        transactions.append(len(items))
        session.execute(insert(rows), [{"id": i, "name": f"n{i}"} for i in items])
        return [i * 10 for i in items]

    batcher = GroupCommit(db, write)
    try:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(200)))
    finally:
        await batcher.close()
    assert results == [i * 10 for i in range(200)]
    assert count(db) == 200
    assert sum(transactions) == 200 and len(transactions) < 20  # grouped, not one transaction each


async def test_a_bad_item_fails_only_its_caller(db):
    def write(session, items):  # type: ignore[no-untyped-def]
        if any(i == 13 for i in items):
            raise errors.InvalidArgument("13 is unlucky", "unlucky")
        session.execute(insert(rows), [{"id": i, "name": ""} for i in items])
        return items

    batcher = GroupCommit(db, write)
    try:
        outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(30)), return_exceptions=True)
    finally:
        await batcher.close()
    failed = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, Exception)]
    assert failed == [13]
    assert isinstance(outcomes[13], errors.InvalidArgument)
    assert count(db) == 29


async def test_a_write_stands_when_its_caller_is_cancelled(db):
    committed: list[list[int]] = []

    def write(session, items):  # type: ignore[no-untyped-def]
        session.execute(insert(rows), [{"id": i, "name": ""} for i in items])
        return items

    batcher = GroupCommit(db, write, committed=lambda results: committed.append(list(results)))
    try:
        caller = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0)  # queued
        caller.cancel()
        assert await batcher.submit(2) == 2
    finally:
        await batcher.close()
    assert count(db) == 2
    assert sorted(i for batch in committed for i in batch) == [1, 2]
