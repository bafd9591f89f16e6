"""Removal of stored results: the storage-expiry sweeper (local storage, a
real SeaweedFS S3 and a real IPFS node) and DeleteJob, which share one remover."""

from __future__ import annotations

import dataclasses
import random
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from c2d.operator.v1 import operator_pb2
from cli.stack import start_stack
from plumbing import errors, storage
from plumbing.database import Database
from plumbing.statuses import EndReason, Status
from plumbing.storage import IpfsStore, LocalStore, ObjectNotFound, open_store, parse_cid
from plumbing.storage.ipfs import KuboError
from services.operator_service.api.servicer import OperatorServicer
from services.operator_service.domain.expiry import ExpirySweeper, ResultsRemover
from services.operator_service.domain.ports import IncomingChange
from services.operator_service.domain.watching import Broker
from services.operator_service.persistence import jobs as store
from services.operator_service.persistence import migrations
from services.operator_service.persistence.models import Base, Engine, Job
from services.operator_service.persistence.store import Store
from testkit.control_plane import Operator, control_plane, eventually, query, wait_finished
from testkit.jobs import job_bench
from testkit.stacks import settings_for
from tests.storage.conftest import s3_config

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOUR = 3600


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    url = (
        f"sqlite:///{tmp_path / 'operator.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    database = Database(url, Base.metadata)
    migrations.upgrade(database.engine)
    database.transaction(
        lambda s: s.add(
            Engine(
                engine_id="local",
                address="127.0.0.1:1",
                last_applied_sequence=0,
                environments=[
                    {"id": "cpu", "storage_expiry_seconds": str(HOUR)},
                    {"id": "forever"},  # proto JSON leaves out 0: keep results forever
                ],
            )
        )
    )
    yield database
    database.close()


def _publish(
    target: storage.ObjectStore, tmp_path: Path, job_id: str, names: tuple[str, ...] = ("out.txt", "algorithm.log")
) -> dict:
    files = []
    for index, name in enumerate(names):
        source = tmp_path / f"{job_id}-{index}"
        source.write_text(f"{job_id} {name}")
        stored = target.put_file(f"{job_id}/{name}", source)
        files.append({"index": index, "path": name, "location": stored.location, "size": str(stored.size)})
    return {"files": files, "storage": target.kind}


def _new_job(environment_id: str, finished_at: datetime) -> Job:
    job_id = str(uuid.uuid4())
    return Job(
        job_id=job_id,
        request_id=job_id,
        owner="0xowner",
        environment_id=environment_id,
        engine_id="local",
        status=1,
        created_at=finished_at - timedelta(minutes=5),
        workflow=b"",
        dataset_dids=["did:op:1"],
        algorithm_did="",
        viewers=[],
        dispatched=True,
    )


def _finished_job(db: Database, environment_id: str, finished_at: datetime, results: dict | None) -> str:
    row = _new_job(environment_id, finished_at)
    job_id = row.job_id

    def finish(session) -> None:  # type: ignore[no-untyped-def]
        job, _ = store.create_jobs(session, [row])[0]
        job.results = results
        store.end_job(session, job, store.EndReason.COMPLETED, "", "")
        job.finished_at = finished_at

    db.transaction(finish)
    return job_id


def _job(db: Database, job_id: str) -> Job:
    job = db.transaction(lambda s: s.get(Job, job_id))
    assert job is not None
    return job


def _exists(target: storage.ObjectStore, location: str) -> bool:
    try:
        target.size(location)
        return True
    except ObjectNotFound:
        return False


async def test_the_sweeper_removes_only_results_past_their_environments_expiry(db, tmp_path):
    local = LocalStore(tmp_path / "results")
    sweeper = ExpirySweeper(
        Store(db), ResultsRemover(storage.StorageConfig(kind="local", local_root=tmp_path / "results"), Store(db)), 60
    )
    due = _finished_job(db, "cpu", NOW - timedelta(seconds=HOUR + 1), None)
    db.transaction(lambda s: setattr(s.get(Job, due), "results", _publish(local, tmp_path, due)))
    recent = _finished_job(db, "cpu", NOW - timedelta(seconds=HOUR - 60), _publish(local, tmp_path, "recent"))
    kept = _finished_job(db, "forever", NOW - timedelta(days=365), _publish(local, tmp_path, "kept"))
    failed = _finished_job(db, "cpu", NOW - timedelta(days=2), None)  # a failed job: nothing stored

    assert await sweeper.sweep_once(NOW) == 2

    expired = _job(db, due)
    assert expired.results["expired"] is True and expired.results_expired_at is not None
    assert not any(_exists(local, f["location"]) for f in expired.results["files"])
    assert not (tmp_path / "results" / due).exists()
    for job_id in (recent, kept):
        job = _job(db, job_id)
        assert "expired" not in job.results and job.results_expired_at is None
        assert all(_exists(local, f["location"]) for f in job.results["files"])
    assert _job(db, failed).results is None and _job(db, failed).results_expired_at is not None
    # Swept jobs are not looked at again; the next one comes due in its time.
    assert await sweeper.sweep_once(NOW) == 0
    assert await sweeper.sweep_once(NOW + timedelta(minutes=2)) == 1
    assert _job(db, recent).results["expired"] is True


async def test_the_sweeper_removes_results_from_real_s3(postgres_url, seaweedfs, tmp_path):
    db = Database(postgres_url, Base.metadata)
    migrations.upgrade(db.engine)
    db.transaction(
        lambda s: s.add(
            Engine(
                engine_id="local",
                address="a:1",
                last_applied_sequence=0,
                environments=[{"id": "cpu", "storage_expiry_seconds": "60"}],
            )
        )
    )
    config = s3_config(seaweedfs, seaweedfs.make_bucket("expiry"))
    bucket = open_store(config)
    try:
        job_id = _finished_job(db, "cpu", NOW - timedelta(minutes=2), None)
        results = _publish(bucket, tmp_path, job_id, ("a.csv", "nested/b.bin", "algorithm.log"))
        db.transaction(lambda s: setattr(s.get(Job, job_id), "results", results))
        assert all(_exists(bucket, f["location"]) for f in results["files"])

        assert await ExpirySweeper(Store(db), ResultsRemover(config, Store(db)), 60).sweep_once(NOW) == 1

        assert not any(_exists(bucket, f["location"]) for f in results["files"])
        assert _job(db, job_id).results["expired"] is True
    finally:
        db.close()


async def test_results_the_service_cannot_reach_stay_and_are_retried(db, tmp_path):
    local = LocalStore(tmp_path / "results")
    elsewhere = _finished_job(db, "cpu", NOW - timedelta(days=1), {"files": [{"location": "s3://bucket/x/out.txt"}]})
    here = _finished_job(db, "cpu", NOW - timedelta(days=1), _publish(local, tmp_path, "here"))
    sweeper = ExpirySweeper(
        Store(db), ResultsRemover(storage.StorageConfig(kind="local", local_root=tmp_path / "results"), Store(db)), 60
    )

    assert await sweeper.sweep_once(NOW) == 1

    assert _job(db, here).results["expired"] is True
    assert _job(db, elsewhere).results_expired_at is None and "expired" not in _job(db, elsewhere).results
    with pytest.raises(errors.Unavailable, match="configured for local"):
        await ResultsRemover(storage.StorageConfig(kind="local", local_root=tmp_path / "results"), Store(db)).remove(
            _job(db, elsewhere)
        )


async def test_a_record_naming_another_jobs_results_removes_none_of_them(db, tmp_path):
    """A job's record names its results, but its pod wrote it: deleting the job
    (or expiring its results) removes only what lies under its own prefix."""
    local = LocalStore(tmp_path / "results")
    victim = _finished_job(db, "cpu", NOW - timedelta(days=1), None)
    victims = _publish(local, tmp_path, victim)
    attacker = _finished_job(db, "cpu", NOW - timedelta(days=1), victims)
    remover = ResultsRemover(storage.StorageConfig(kind="local", local_root=tmp_path / "results"), Store(db))

    await remover.remove(_job(db, attacker))

    assert [local.size(f["location"]) for f in victims["files"]] == [
        len(f"{victim} out.txt"),
        len(f"{victim} algorithm.log"),
    ]


# -- IPFS: results of two jobs can be the same pinned object -------------------------------


def _recorded_job(db: Database, finished_at: datetime, results: dict, environment_id: str = "cpu") -> str:
    """A job whose results are recorded as its engine reports them (apply_changes)."""
    row = _new_job(environment_id, finished_at)
    db.transaction(lambda s: store.create_jobs(s, [row]))

    def report(session) -> None:  # type: ignore[no-untyped-def]
        sequence = session.get(Engine, "local").last_applied_sequence + 1
        change = IncomingChange(
            sequence, row.job_id, int(Status.FINISHED), int(EndReason.COMPLETED), "", "", finished_at, results, None, ""
        )
        store.apply_changes(session, "local", [change])

    db.transaction(report)
    return row.job_id


def _ipfs_results(target: IpfsStore, tmp_path: Path, contents: dict[str, bytes]) -> dict:
    files = []
    for index, (name, data) in enumerate(contents.items()):
        source = tmp_path / f"{uuid.uuid4()}-{name}"
        source.write_bytes(data)
        stored = target.put_file(f"job/{name}", source)
        files.append({"index": index, "path": name, "location": stored.location, "size": str(stored.size)})
    return {"files": files, "storage": "ipfs"}


def _same_result() -> dict[str, bytes]:
    """What the same algorithm on the same data writes twice (fresh per test: the node is the session's)."""
    mean = random.randrange(1 << 30)
    return {"result.json": b'{"mean": %d}\n' % mean, "algorithm.log": b"mean %d\n" % mean}


def _pinned(target: IpfsStore, location: str) -> bool:
    try:
        target.client.json("pin/ls", {"arg": str(parse_cid(location)), "type": "recursive"})
        return True
    except KuboError as e:
        assert "not pinned" in e.message, e.message
        return False


def _read(target: IpfsStore, location: str) -> bytes:
    return b"".join(target.read(location))


async def test_the_sweeper_keeps_a_cid_another_live_jobs_results_name(db, ipfs_rpc, tmp_path):
    config = storage.StorageConfig(kind="ipfs", ipfs_api=ipfs_rpc)
    ipfs = IpfsStore(config)
    contents = _same_result()
    due = _recorded_job(db, NOW - timedelta(seconds=HOUR + 1), _ipfs_results(ipfs, tmp_path, contents))
    recent = _recorded_job(db, NOW - timedelta(minutes=10), _ipfs_results(ipfs, tmp_path, contents))
    locations = [f["location"] for f in _job(db, recent).results["files"]]
    assert [f["location"] for f in _job(db, due).results["files"]] == locations  # one CID per file for both
    sweeper = ExpirySweeper(Store(db), ResultsRemover(config, Store(db)), 60)

    assert await sweeper.sweep_once(NOW) == 1

    assert _job(db, due).results["expired"] is True
    assert all(_pinned(ipfs, location) for location in locations)
    assert [_read(ipfs, location) for location in locations] == list(contents.values())
    # Once the last job naming them expires, the CIDs are unpinned.
    assert await sweeper.sweep_once(NOW + timedelta(seconds=HOUR)) == 1
    assert _job(db, recent).results["expired"] is True
    assert not any(_pinned(ipfs, location) for location in locations)


async def test_a_forged_record_naming_another_live_jobs_cid_leaves_it_pinned(db, ipfs_rpc, tmp_path):
    """The attacker's record names the victim's CIDs (once as recorded, once as
    the CIDv0 of the same content) beside a file of its own; DeleteJob of the
    attacker's job unpins only that file."""
    config = storage.StorageConfig(kind="ipfs", ipfs_api=ipfs_rpc)
    ipfs = IpfsStore(config)
    contents = _same_result()
    victim = _recorded_job(db, NOW - timedelta(minutes=5), _ipfs_results(ipfs, tmp_path, contents))
    victims = [f["location"] for f in _job(db, victim).results["files"]]
    forged = _ipfs_results(ipfs, tmp_path, {"own.txt": random.randbytes(32)})
    own = forged["files"][0]["location"]
    as_v0 = "ipfs://" + str(parse_cid(victims[1]).set(version=0, base="base58btc"))
    forged["files"] += [
        {"index": 1, "path": "result.json", "location": victims[0], "size": "1"},
        {"index": 2, "path": "algorithm.log", "location": as_v0, "size": "1"},
    ]
    attacker = _recorded_job(db, NOW - timedelta(minutes=5), forged)
    servicer = OperatorServicer(db, {}, Broker(), remove_results=ResultsRemover(config, Store(db)).remove)
    try:
        await servicer.DeleteJob(operator_pb2.DeleteJobRequest(job_id=attacker), None)  # type: ignore[arg-type]
    finally:
        await servicer.close()

    assert _job(db, attacker).deleted_at is not None
    assert not _pinned(ipfs, own)
    assert all(_pinned(ipfs, location) for location in victims)
    assert [_read(ipfs, location) for location in victims] == list(contents.values())


async def test_two_jobs_released_at_once_unpin_their_shared_cid_exactly_once(postgres_url):
    """Two replicas remove the results of the two jobs naming one CID at the
    same moment: the second waits for the first, and of the two exactly one
    finds the CID no longer named (without the rows' locks both kept it)."""
    db = Database(postgres_url, Base.metadata)
    migrations.upgrade(db.engine)
    db.transaction(lambda s: s.add(Engine(engine_id="local", address="a:1", last_applied_sequence=0, environments=[])))
    location = "ipfs://bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    first, second = (_recorded_job(db, NOW, {"files": [{"location": location}]}) for _ in range(2))
    answers: dict[str, list[str]] = {}

    def release_second() -> None:
        answers[second] = db.transaction(lambda s: store.release_results(s, second, [location]))

    async def second_waits_or_is_done() -> bool:
        waiting = "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%result_pins%'"
        return second in answers or bool(query(postgres_url, waiting))

    other = threading.Thread(target=release_second)
    try:
        with Session(db.engine) as session, session.begin():
            answers[first] = store.release_results(session, first, [location])
            other.start()
            await eventually(second_waits_or_is_done, "the second release to wait or finish")
        other.join(60)
        assert answers == {first: [], second: [location]}
    finally:
        db.close()


async def test_delete_job_keeps_the_results_of_a_job_with_the_same_result_on_ipfs(
    data_dir, postgres_url, ipfs_rpc, monkeypatch
):
    """The same algorithm on the same data, twice, on a real stack with IPFS
    storage: both results hold the same CIDs. Deleting one job leaves the
    other's results pinned and readable; deleting the other unpins them."""
    monkeypatch.setenv("C2D_STORAGE_KIND", "ipfs")
    monkeypatch.setenv("C2D_STORAGE_IPFS_API", ipfs_rpc)
    ipfs = IpfsStore(storage.StorageConfig(kind="ipfs", ipfs_api=ipfs_rpc))
    mean = random.randrange(1 << 30)
    code = (
        "import json, os\n"
        f"json.dump({{'mean': {mean}}}, open(os.environ['OUTPUTS'] + '/result.json', 'w'))\n"
        f"print('mean', {mean})\n"
    )
    async with job_bench(postgres_url) as bench:
        jobs = [await bench.run(code), await bench.run(code)]
        assert all(job.status == Status.FINISHED for job in jobs), [job.error_message for job in jobs]
        first, second = ([f.location for f in job.results.files] for job in jobs)
        assert first == second
        expected = {"result.json": b'{"mean": %d}' % mean, "algorithm.log": b"mean %d\n" % mean}
        files = jobs[1].results.files
        assert {f.path: (await bench.consumer.result(jobs[1].job_id, f.index))[1] for f in files} == expected

        await bench.consumer.delete(jobs[0].job_id)

        assert all(_pinned(ipfs, location) for location in second)
        assert {f.path: _read(ipfs, f.location) for f in files} == expected
        assert {f.path: (await bench.consumer.result(jobs[1].job_id, f.index))[1] for f in files} == expected

        await bench.consumer.delete(jobs[1].job_id)

        assert not any(_pinned(ipfs, location) for location in second)


async def test_delete_job_removes_its_stored_results(data_dir, postgres_url, tmp_path):
    async with control_plane(postgres_url) as plane:
        job = await plane.operator.create()
        await wait_finished(plane.operator, [job.job_id])
        # The no-op backend stores nothing: give the job real files in the configured (local) storage.
        local = LocalStore(storage.configured().local_root)  # type: ignore[arg-type]
        results = _publish(local, tmp_path, job.job_id)
        db = Database(postgres_url, Base.metadata)
        try:
            db.transaction(lambda s: setattr(s.get(Job, job.job_id), "results", results))
        finally:
            db.close()

        await plane.operator.stub.DeleteJob(
            operator_pb2.DeleteJobRequest(job_id=job.job_id), metadata=plane.operator.metadata
        )

        assert not any(_exists(local, f["location"]) for f in results["files"])
        [(expired,)] = query(postgres_url, "SELECT results_expired_at FROM jobs WHERE job_id = :j", j=job.job_id)
        assert expired is not None


async def test_a_real_jobs_results_expire_end_to_end(data_dir, tmp_path):
    from cli import demo

    provider, operator, engine = settings_for("")
    stack = await start_stack(
        provider, dataclasses.replace(operator, sweep_interval_s=0.5), dataclasses.replace(engine, storage_expiry_s=8)
    )
    client = Operator(stack.operator.port)
    try:
        await eventually(lambda: _available(client), "the environment", timeout=60)
        outcome = await demo.run_demo(stack.provider_address, tmp_path / "out", say=lambda *_: None)
        assert outcome["ok"] and outcome["result"] == demo.EXPECTED, outcome
        job = await client.get(outcome["job_id"])
        locations = [f.location for f in job.results.files]
        local = LocalStore(Path(data_dir) / "results")
        assert locations and all(_exists(local, location) for location in locations)

        async def expired() -> bool:
            return (await client.get(job.job_id)).results.expired

        await eventually(expired, "the results to expire", timeout=90, every=0.2)
        assert not any(_exists(local, location) for location in locations)
    finally:
        await client.close()
        await stack.stop()


async def _available(client: Operator) -> bool:
    return any(env.available for env in await client.environments())
