"""Alembic migrations of the operator-service, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session

from c2d.common.v1 import common_pb2
from plumbing import storage
from services.operator_service.persistence import jobs as store
from services.operator_service.persistence import migrations
from services.operator_service.persistence.models import Base


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'operator.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = sqlalchemy.create_engine(url)
    yield engine
    engine.dispose()


def _tables(engine) -> set[str]:
    return set(sqlalchemy.inspect(engine).get_table_names())


def _indexes(engine) -> set[str]:
    return {index["name"] for index in sqlalchemy.inspect(engine).get_indexes("jobs")}


def _differences(engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": migrations.VERSION_TABLE})
        return compare_metadata(context, Base.metadata)


def test_an_empty_database_upgrades_to_head_matching_the_models(database):
    migrations.upgrade(database)

    assert migrations.current_revision(database) == migrations.HEAD
    assert {"jobs", "job_events", "engines", migrations.VERSION_TABLE} <= _tables(database)
    assert {"ix_jobs_results_unexpired", "ix_jobs_created_job"} <= _indexes(database)
    assert _differences(database) == []


def test_upgrading_twice_changes_nothing(database):
    migrations.upgrade(database)
    migrations.upgrade(database)

    assert migrations.current_revision(database) == migrations.HEAD
    assert _differences(database) == []


JOB = {
    "job_id": "11111111-2222-3333-4444-555555555555",
    "request_id": "req-1",
    "owner": "0xowner",
    "environment_id": "local-cpu",
    "engine_id": "local",
    "status": 70,
    "end_reason": 1,
    "error_code": "",
    "error_message": "",
    "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    "finished_at": datetime(2026, 1, 1, 0, 5, tzinfo=UTC),
    "workflow": b"\x0a\x00",
    "dataset_dids": '["did:op:1"]',
    "algorithm_did": "",
    "viewers": '["0xviewer"]',
    "results": '{"files": [{"location": "local:j/out.txt"}], "storage": "local"}',
    "results_did": "",
    "dispatched": True,
    "sequence": 2,
}


def test_a_database_at_the_previous_revision_upgrades_with_its_data(database):
    migrations.upgrade(database, migrations.INITIAL)
    assert "ix_jobs_results_unexpired" not in _indexes(database)
    columns = ", ".join(JOB)
    values = ", ".join(f":{name}" for name in JOB)
    with database.begin() as connection:
        connection.execute(sqlalchemy.text(f"INSERT INTO jobs ({columns}) VALUES ({values})"), JOB)
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO job_events (job_id, status, end_reason, error_code, error_message, engine_id, engine_sequence, time) "
                "VALUES (:j, 70, 1, '', '', 'local', 6, :t)"
            ),
            {"j": JOB["job_id"], "t": JOB["finished_at"]},
        )
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO engines (engine_id, address, last_applied_sequence, environments) "
                "VALUES ('local', '127.0.0.1:1', 6, '[]')"
            )
        )

    migrations.upgrade(database)

    assert migrations.current_revision(database) == migrations.HEAD
    assert _differences(database) == []
    with Session(database) as session:
        job = store.read_job(session, JOB["job_id"])
        assert job is not None
        assert (job.status, job.request_id, job.results["files"][0]["location"]) == (70, "req-1", "local:j/out.txt")
        assert job.results_expired_at is None
        assert [e.status for e in store.read_events(session, [job.job_id], 0)] == [70]
        assert session.get(store.Engine, "local").last_applied_sequence == 6
        # The sweeper's query runs on the upgraded table and finds the old job.
        due = store.results_to_expire(session, "local", "local-cpu", datetime(2027, 1, 1, tzinfo=UTC), 10)
        assert [j.job_id for j in due] == [JOB["job_id"]]
        # Its viewer was carried into job_viewers: ListJobs finds the job for it.
        listed, _ = store.list_jobs(session, store.JobFilter(owner="0xviewer"), 10, "")
        assert [j.job_id for j in listed] == [JOB["job_id"]]


def _workflow(url: str) -> bytes:
    return common_pb2.Workflow(
        datasets=[
            common_pb2.WorkflowAsset(
                did="did:op:1",
                files=[common_pb2.FileLocation(type="url", url=url, headers={"Authorization": "Bearer t0ken"})],
            )
        ],
        raw_algorithm="print(1)",
        results_asset_grant="c2dgrant1.secret.grant",
    ).SerializeToString(deterministic=True)


def test_the_secrets_of_jobs_stored_before_leave_them_unless_still_waiting_for_their_engine(database):
    migrations.upgrade(database, "0004")
    rows = {
        "ended": {"status": 70, "dispatched": True},
        "running": {"status": 40, "dispatched": True},
        "expired-undispatched": {"status": 70, "dispatched": False},
        "waiting": {"status": 1, "dispatched": False},
    }
    columns = ", ".join(JOB)
    values = ", ".join(f":{name}" for name in JOB)
    with database.begin() as connection:
        for name, fields in rows.items():
            job = {**JOB, **fields, "job_id": name, "request_id": name, "workflow": _workflow(f"https://x/{name}")}
            connection.execute(sqlalchemy.text(f"INSERT INTO jobs ({columns}) VALUES ({values})"), job)

    migrations.upgrade(database)

    with database.connect() as connection:
        stored = dict(connection.execute(sqlalchemy.text("SELECT job_id, workflow FROM jobs")).all())
    # A job still waiting for its engine keeps what its engine will need.
    assert bytes(stored.pop("waiting")) == _workflow("https://x/waiting")
    for name, raw in stored.items():
        kept = common_pb2.Workflow.FromString(bytes(raw))
        for secret in (b"https://x/", b"t0ken", b"c2dgrant1"):
            assert secret not in bytes(raw), (name, secret)
        assert [d.did for d in kept.datasets] == ["did:op:1"] and kept.raw_algorithm == "print(1)"
        assert kept.datasets[0].files[0].type == "url"


def test_the_ipfs_content_of_live_results_stored_before_is_claimed_by_its_jobs(database):
    """Revision 0006 fills result_pins from the stored manifests: a job stored
    before it still keeps its CIDs from being unpinned by another job's removal."""
    migrations.upgrade(database, "0005")
    v1 = "ipfs://bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    v0 = "ipfs://QmWfVY9y3xjsixTgbd9AorQxH7VtMpzfx2HaWtsoUYecaX"
    rows = {
        "live": {"results": json.dumps({"files": [{"location": v1}, {"location": v0}, {"location": "local:live/x"}]})},
        "expired": {"results": json.dumps({"files": [{"location": v1}]}), "results_expired_at": JOB["finished_at"]},
        "deleted": {"results": json.dumps({"files": [{"location": v1}]}), "deleted_at": JOB["finished_at"]},
        "no-results": {"results": None},
    }
    with database.begin() as connection:
        for name, fields in rows.items():
            job = {**JOB, "job_id": name, "request_id": name, **fields}
            columns = ", ".join(job)
            values = ", ".join(f":{column}" for column in job)
            connection.execute(sqlalchemy.text(f"INSERT INTO jobs ({columns}) VALUES ({values})"), job)

    migrations.upgrade(database)

    keys = {storage.pin_key(v1), storage.pin_key(v0)}
    assert None not in keys
    with Session(database) as session, session.begin():
        assert set(session.execute(sqlalchemy.text("SELECT pin_key, job_id FROM result_pins")).all()) == {
            (key, "live") for key in keys
        }
        # Another job naming the same content finds it still claimed by the old one.
        assert store.release_results(session, "another", [v1, v0]) == []
        assert store.release_results(session, "live", [v1, v0]) == [v1, v0]


def test_a_skeleton_database_without_version_table_is_adopted(database):
    # The walking skeleton created its tables with create_all (the initial revision's schema).
    migrations.upgrade(database, migrations.INITIAL)
    with database.begin() as connection:
        connection.execute(sqlalchemy.text(f"DROP TABLE {migrations.VERSION_TABLE}"))
    assert migrations.current_revision(database) is None

    migrations.upgrade(database)

    assert migrations.current_revision(database) == migrations.HEAD
    assert _differences(database) == []


def test_replicas_migrating_at_once_both_succeed(postgres_url):
    import concurrent.futures

    engines = [sqlalchemy.create_engine(postgres_url) for _ in range(3)]
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            list(pool.map(migrations.upgrade, engines))
        assert migrations.current_revision(engines[0]) == migrations.HEAD
    finally:
        for engine in engines:
            engine.dispose()
