"""Signed requests checked in batches, in a database thread or in the worker
process: each request keeps its own verdict, a batch's nonces are spent in one
transaction, a spent nonce stays spent across a restart, and a worker that
dies is replaced."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from c2d.provider.v1 import auth_pb2, provider_pb2
from plumbing.database import Database
from plumbing.ethereum import Account
from services.provider.api.authentication import authenticate
from services.provider.domain import errors as codes
from services.provider.domain import identity
from services.provider.domain.errors import Refusal
from services.provider.domain.identity import signed_fields
from services.provider.domain.signed_requests import RequestVerifier
from services.provider.persistence import request_settling, store
from services.provider.persistence.models import Base
from testkit.servers import alive

KEYS = ["0x" + f"{i + 1:064x}" for i in range(8)]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/provider.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=["thread", "worker"])
def where(request) -> str:
    return request.param


@dataclass
class Provider:
    """A provider's database and its verifier, as server.py wires them."""

    db: Database
    verifier: RequestVerifier

    async def close(self) -> None:
        await self.verifier.close()
        self.db.close()


def open_provider(url: str, where: str = "thread") -> Provider:
    db = Database(url, Base.metadata)
    db.create_schema()
    settler = request_settling.WorkerSettler(url) if where == "worker" else request_settling.ThreadSettler(db)
    return Provider(db, RequestVerifier(settler))


def signed(key: str, nonce: int, job_id: str = "job-1") -> provider_pb2.GetJobDetailsRequest:
    request = provider_pb2.GetJobDetailsRequest(job_id=job_id)
    request.signature.CopyFrom(auth_pb2.ConsumerSignature(address=Account.from_key(key).address, nonce=nonce))
    request.signature.signature = identity.sign_request(key, "GetJobDetails", signed_fields(request), nonce)
    return request


async def outcomes(provider: Provider, requests: list[provider_pb2.GetJobDetailsRequest]) -> list[str | None]:
    """Each request's error code (None: accepted), all sent at once."""
    answers = await asyncio.gather(
        *(authenticate(provider.verifier, "GetJobDetails", r) for r in requests), return_exceptions=True
    )
    return [answer.code if isinstance(answer, Refusal) else None for answer in answers]


def counting_spends(monkeypatch) -> list[int]:
    """The size of each batch of nonces spent (one transaction each)."""
    sizes: list[int] = []
    spend_nonces = store.spend_nonces

    def counted(session, spends):  # type: ignore[no-untyped-def]
        sizes.append(len(spends))
        return spend_nonces(session, spends)

    monkeypatch.setattr(store, "spend_nonces", counted)
    return sizes


async def test_concurrent_requests_share_one_transaction_and_a_replay_among_them_is_refused(database_url, monkeypatch):
    provider = open_provider(database_url)
    try:
        sizes = counting_spends(monkeypatch)
        requests = [signed(key, 100) for key in KEYS]
        replay = provider_pb2.GetJobDetailsRequest()
        replay.CopyFrom(requests[3])
        assert await outcomes(provider, [*requests, replay]) == [None] * len(KEYS) + [codes.NONCE_INVALID]
        assert sizes == [len(KEYS) + 1]  # one group commit for all of them
        # And once committed, the same request is refused on its own.
        assert await outcomes(provider, [requests[0]]) == [codes.NONCE_INVALID]
    finally:
        await provider.close()


async def test_a_bad_signature_in_a_batch_is_refused_alone_and_spends_no_nonce(database_url, where):
    provider = open_provider(database_url, where)
    try:
        good = signed(KEYS[0], 7)
        tampered = signed(KEYS[1], 7)
        tampered.job_id = "someone-elses-job"  # the signature no longer covers the fields
        assert await outcomes(provider, [good, tampered]) == [None, codes.SIGNATURE_INVALID]
        # The tampered request's nonce is still free for its real owner.
        assert await outcomes(provider, [signed(KEYS[1], 7)]) == [None]
    finally:
        await provider.close()


async def test_a_spent_nonce_is_refused_after_a_restart(database_url, where):
    request = signed(KEYS[0], 42)
    before = open_provider(database_url, where)
    try:
        assert await outcomes(before, [request]) == [None]
    finally:
        await before.close()
    after = open_provider(database_url, where)  # a new provider process on the same database
    try:
        assert await outcomes(after, [request]) == [codes.NONCE_INVALID]
    finally:
        await after.close()


async def test_a_replay_racing_its_original_is_refused_in_the_worker_too(database_url):
    provider = open_provider(database_url, "worker")
    try:
        request = signed(KEYS[2], 5)
        assert sorted(await outcomes(provider, [request] * 6), key=str) == [None] + [codes.NONCE_INVALID] * 5
    finally:
        await provider.close()


async def test_a_worker_that_dies_is_replaced(tmp_path):
    provider = open_provider(f"sqlite:///{tmp_path}/provider.db", "worker")
    try:
        assert await outcomes(provider, [signed(KEYS[0], 1)]) == [None]
        worker = provider.verifier.settler._worker
        assert worker is not None
        for process in list(worker._processes.values()):  # the worker process itself
            process.kill()
            process.join()
        # The batch that finds it dead fails; the next runs in a new worker.
        answers = await asyncio.gather(
            authenticate(provider.verifier, "GetJobDetails", signed(KEYS[0], 2)), return_exceptions=True
        )
        assert isinstance(answers[0], Exception)
        assert await outcomes(provider, [signed(KEYS[0], 3)]) == [None]
    finally:
        await provider.close()


LEAVES_ABRUPTLY = """
import os, sys
from plumbing.database import Database
from services.provider.persistence.models import Base
from services.provider.persistence.request_settling import WorkerSettler
Database(sys.argv[1], Base.metadata).create_schema()
worker = WorkerSettler(sys.argv[1])._worker
worker.submit(int).result()  # it runs
print(*(process.pid for process in worker._processes.values()), flush=True)
os._exit(0)  # no shutdown, as a killed provider would leave
"""


def test_the_worker_does_not_outlive_its_provider(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", LEAVES_ABRUPTLY, f"sqlite:///{tmp_path}/provider.db"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (pid,) = map(int, done.stdout.split())
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
