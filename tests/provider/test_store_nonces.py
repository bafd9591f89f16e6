"""Nonces: a window of recent nonces above a floor, on SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures

import pytest

from plumbing.database import Database
from services.provider.domain import errors as codes
from services.provider.domain.errors import Refusal
from services.provider.persistence import store
from services.provider.persistence.models import Base

ADDRESS = "0x" + "ab" * 20


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    url = f"sqlite:///{tmp_path}/provider.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    database = Database(url, Base.metadata)
    database.create_schema()
    yield database
    database.close()


def spend(db: Database, nonce: int) -> None:
    db.transaction(lambda s: store.spend_nonce(s, ADDRESS, nonce))


def test_nonces_may_arrive_out_of_order_but_never_twice(db):
    for nonce in (10, 12, 11):
        spend(db, nonce)
    with pytest.raises(Refusal) as replay:
        spend(db, 11)
    assert replay.value.code == codes.NONCE_INVALID
    assert db.transaction(lambda s: store.read_nonce(s, ADDRESS)) == 12


def test_a_nonce_that_left_the_window_is_refused_by_the_floor(db):
    window = store.NONCE_WINDOW
    for nonce in range(1, 2 * window + 2):
        spend(db, nonce)
    # Past twice the window, the address is cut back to the newest `window`.
    assert db.transaction(lambda s: store.nonce_floor(s, ADDRESS)) == window + 1
    for old in (1, window + 1, window + 2):  # below the floor, at it, still remembered
        with pytest.raises(Refusal) as refused:
            spend(db, old)
        assert refused.value.code == codes.NONCE_INVALID
    spend(db, 3 * window)  # a new, higher one passes


def test_a_batch_refuses_its_own_duplicates_and_used_nonces_alone(db):
    spend(db, 5)
    outcomes = db.transaction(lambda s: store.spend_nonces(s, [(ADDRESS, 7), (ADDRESS, 5), (ADDRESS, 7), (ADDRESS, 6)]))
    assert [o.code if o else None for o in outcomes] == [None, codes.NONCE_INVALID, codes.NONCE_INVALID, None]
    assert db.transaction(lambda s: store.read_nonce(s, ADDRESS)) == 7


def test_two_providers_racing_on_one_nonce_accept_it_once(db):
    other = Database(db.url, Base.metadata)  # a second provider process on the same database
    try:

        def spend_in(database: Database) -> bool:
            outcome = database.transaction(lambda s: store.spend_nonces(s, [(ADDRESS, 9)]))[0]
            return outcome is None

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            accepted = [f.result() for f in [pool.submit(spend_in, d) for d in (db, other) for _ in range(4)]]
        assert accepted.count(True) == 1
    finally:
        other.close()
