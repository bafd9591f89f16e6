"""Secrets at rest: publishers' secrets left in the databases for anyone who reads them later.

The attack (issue 13, item 5): the workflow holds the decrypted file
locations, their request headers and the results-asset grant; it was stored
as Job.workflow in the operator-service's database and EngineJob.workflow in
the engine's and never cleared (DeleteJob keeps the row), so a database
dump, a backup or a later SQL bug handed them out.

The guarantee: they are at rest only while needed. A real job through the
provider, on PostgreSQL, whose dataset is a URL with a secret path and query, fetched with a secret bearer header, and whose results
become an asset (so its workflow carries the provider's grant). The engine is
restarted while the job stages. Once the job has ended, no column of any
table of the database the three services share holds the URL, the header's
value or the grant: read raw, with SQL, every row of every table as text;
nor does any log line or file the services keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.server
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import grpc
import psycopg2

from c2d.common.v1 import common_pb2
from cli.client import Client
from cli.stack import start_stack
from plumbing import settings
from plumbing.statuses import Status
from services.operator_engine import server as engine_server
from testkit.jobs import CONSUMER_KEY, JOB_WAIT_S, OTHER_KEY, PUBLISHER_KEY, Bench, environment_ready
from testkit.raw_rows import public_tables, tables_holding
from testkit.servers import free_ports
from testkit.stacks import settings_for

DATASET = b"city,temp\nOslo,4.5\n"
COPY_INPUT = """\
import json, os, shutil
did = json.loads(os.environ["DIDS"])[0]
shutil.copy(f"{os.environ['INPUTS']}/{did}/0", f"{os.environ['OUTPUTS']}/copy.csv")
"""


class _Guarded(http.server.BaseHTTPRequestHandler):
    """Serves the dataset only at its secret path and query, to its secret
    bearer; holds the first good request until `release` (the job is then
    mid-staging, for as long as the test wants)."""

    path_query: ClassVar[str] = ""
    authorization: ClassVar[str] = ""
    arrived: ClassVar[threading.Event]
    release: ClassVar[threading.Event]
    requested: ClassVar[list[str]]

    def do_GET(self) -> None:
        if self.path != self.path_query or self.headers.get("Authorization") != self.authorization:
            self.send_error(403)
            return
        first = not self.arrived.is_set()
        self.requested.append(self.path)
        self.arrived.set()
        if first:
            self.release.wait(JOB_WAIT_S)
        with contextlib.suppress(OSError):  # a held request's pod was killed with the engine
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATASET)))
            self.end_headers()
            self.wfile.write(DATASET)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def guarded_files(path_query: str, authorization: str) -> Iterator[tuple[type[_Guarded], str]]:
    handler = type(
        "Guarded",
        (_Guarded,),
        {
            "path_query": path_query,
            "authorization": authorization,
            "arrived": threading.Event(),
            "release": threading.Event(),
            "requested": [],
        },
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        handler.release.set()
        server.shutdown()


async def test_no_location_header_or_grant_at_rest_after_a_job_restarted_mid_staging(data_dir, postgres_url, caplog):
    caplog.set_level(logging.INFO)  # what the three servers log, in this process
    marker = uuid.uuid4().hex
    secrets = {
        "url path": f"vault-{marker[:12]}",
        "url query": f"sig-{marker[12:24]}",
        "header value": f"bearer-{marker[24:]}",
    }
    path_query = f"/{secrets['url path']}/data.csv?token={secrets['url query']}"
    provider, operator, engine = settings_for(postgres_url)
    # A fixed port: the operator-service finds the restarted engine where it was.
    engine = dataclasses.replace(engine, address=f"127.0.0.1:{free_ports(1)[0]}")
    with guarded_files(path_query, f"Bearer {secrets['header value']}") as (files, base):
        stack = await start_stack(provider, operator, engine)
        try:
            async with grpc.aio.insecure_channel(stack.provider_address) as channel:
                publisher, consumer, other = (Client(channel, key) for key in (PUBLISHER_KEY, CONSUMER_KEY, OTHER_KEY))
                bench = Bench(stack, channel, publisher, consumer, other, base)
                await environment_ready(bench.consumer)
                location = common_pb2.FileLocation(
                    type="url", url=base + path_query, headers={"Authorization": f"Bearer {secrets['header value']}"}
                )
                did = await bench.dataset(location=location)
                order = await bench.consumer.order(did, "compute")
                job_id = await bench.start_on(did, order, COPY_INPUT, publish_results_as_asset=True)
                assert await asyncio.to_thread(files.arrived.wait, JOB_WAIT_S), "pod_config never fetched the file"

                # Mid-staging the engine holds what pod_config needs (which also shows the
                # scan below finds these values when they are there), and the grant.
                staging = await asyncio.to_thread(tables_holding, postgres_url, secrets)
                assert all("engine_jobs" in tables for tables in staging.values()), staging
                grant = await asyncio.to_thread(grant_of, postgres_url, job_id)
                assert grant.startswith("c2dgrant1.")

                await stack.engine.stop(1)  # its pod_config dies with it, mid-fetch
                stack.engine = await engine_server.start(engine)
                files.release.set()

                job = await bench.finished(job_id)
                assert job.status == Status.FINISHED and job.end_reason == common_pb2.END_REASON_COMPLETED, job
                assert job.results_did, "the grant registered no results asset"
                copy = next(f for f in job.results.files if f.path == "copy.csv")
                assert (await bench.consumer.result(job_id, copy.index))[1] == DATASET
                assert len(files.requested) >= 2, "the restarted engine did not stage the job again"
                answered = job.SerializeToString() + (await bench.consumer.details(job_id)).SerializeToString()
                assert not [name for name, value in secrets.items() if value.encode() in answered]
        finally:
            await stack.stop()

    # The operator-service's, the engine's and the provider's tables all live in this database.
    assert {"jobs", "job_events", "engine_jobs", "engine_events"} <= await asyncio.to_thread(
        public_tables, postgres_url
    )
    left = await asyncio.to_thread(tables_holding, postgres_url, {**secrets, "grant": grant})
    assert left == {name: set() for name in left}, f"secrets still at rest after the job ended: {left}"
    for name, value in {**secrets, "grant": grant}.items():
        assert value not in caplog.text, f"{name} in the servers' log"
    assert "resuming after an engine restart" in caplog.text  # the log was captured
    # Nor in any file the services keep (logs, the job's admin logs, the engine's workspace).
    for path in settings.data_dir().rglob("*"):
        if path.is_file() and not path.is_symlink():
            text = path.read_bytes()
            for name, value in {**secrets, "grant": grant}.items():
                assert value.encode() not in text, f"{name} in {path}"


def grant_of(database_url: str, job_id: str) -> str:
    dsn = database_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT workflow FROM engine_jobs WHERE job_id = %s", (job_id,))
        (raw,) = cur.fetchone()
    return common_pb2.Workflow.FromString(bytes(raw)).results_asset_grant
