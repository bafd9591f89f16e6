"""The operator-service survives what production does to it: a kill -9 while
an engine streams, two replicas on one database, an engine that goes away."""

from __future__ import annotations

import asyncio
import collections

import grpc
import pytest

from c2d.engine.v1 import engine_pb2
from c2d.operator.v1 import operator_pb2
from plumbing.grpc_errors import error_code
from services.operator_engine import server as engine_server
from services.operator_service import server as operator_server
from tests.operator_service.helpers import (
    NOOP_PATH,
    Operator,
    OperatorProcess,
    engine_settings,
    eventually,
    operator_settings,
    query,
    wait_available,
    wait_finished,
)

CHANGES_PER_JOB = len(NOOP_PATH) - 1  # the engine emits every status after 1


def _applied(database_url: str) -> int:
    rows = query(database_url, "SELECT last_applied_sequence FROM engines WHERE engine_id = 'local'")
    return rows[0][0] if rows else 0


def _histories(database_url: str) -> dict[str, list[int]]:
    histories: dict[str, list[int]] = collections.defaultdict(list)
    for job_id, status in query(database_url, "SELECT job_id, status FROM job_events ORDER BY sequence"):
        histories[job_id].append(status)
    return histories


@pytest.mark.timeout(900)  # generous: the machine is shared
async def test_a_service_killed_mid_stream_resumes_with_no_gap_and_no_duplicate(data_dir, postgres_url, tmp_path):
    jobs = 167  # 1002 changes
    # A few jobs at a time keep the engine emitting long enough to kill the service mid-stream.
    engine = await engine_server.start(engine_settings(postgres_url, max_jobs=4))
    service = OperatorProcess(postgres_url, engine.port, tmp_path / "operator.log")
    try:
        operator = Operator(await service.start())
        await wait_available(operator)
        created = await asyncio.gather(*(operator.create() for _ in range(jobs)))
        await operator.close()

        async def a_third_applied() -> bool:
            return _applied(postgres_url) >= jobs * CHANGES_PER_JOB // 3

        await eventually(a_third_applied, "a third of the changes to be applied", timeout=240, every=0.02)
        service.kill()
        applied_at_kill = _applied(postgres_url)
        assert applied_at_kill < jobs * CHANGES_PER_JOB, "the stream ended before the kill"

        operator = Operator(await service.start())
        await wait_finished(operator, [job.job_id for job in created], timeout=400)
        await operator.close()
    finally:
        service.stop()
        await engine.stop(1)

    emitted = [
        (sequence, job_id, change["status"])
        for sequence, job_id, change in query(
            postgres_url, "SELECT sequence, job_id, change FROM engine_events ORDER BY sequence"
        )
    ]
    assert len(emitted) == jobs * CHANGES_PER_JOB
    # In the order applied (the service's own sequence), the stored history is the emitted one.
    stored = query(
        postgres_url,
        "SELECT engine_sequence, job_id, status FROM job_events WHERE engine_id = 'local' ORDER BY sequence",
    )
    assert stored == emitted
    assert _applied(postgres_url) == emitted[-1][0]
    assert all(history == NOOP_PATH for history in _histories(postgres_url).values())


class CountingProxy:
    """A real gRPC hop in front of the engine that counts submissions per job."""

    STREAMS = ("StreamStateChanges", "StreamJobLogs")

    def __init__(self, target: str, stall_first_stream: bool = False) -> None:
        self.submits: collections.Counter[str] = collections.Counter()
        self.streams = 0
        # The first state stream forwards its first message, then goes silent
        # for good with the connection open: a hung peer, not a closed one.
        self.stall_first_stream = stall_first_stream
        self._channel = grpc.aio.insecure_channel(target)
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers([self._Handler(self)])
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    class _Handler(grpc.GenericRpcHandler):
        def __init__(self, proxy: CountingProxy) -> None:
            self.proxy = proxy

        def service(self, details):  # type: ignore[no-untyped-def]
            method = details.method
            if method.rsplit("/", 1)[-1] in CountingProxy.STREAMS:
                return grpc.unary_stream_rpc_method_handler(self.proxy._stream(method))
            return grpc.unary_unary_rpc_method_handler(self.proxy._unary(method))

    def _forwarded(self, context) -> tuple:  # type: ignore[no-untyped-def]
        return tuple((k, v) for k, v in context.invocation_metadata() if k == "authorization")

    def _unary(self, method: str):  # type: ignore[no-untyped-def]
        async def forward(request: bytes, context):  # type: ignore[no-untyped-def]
            if method.endswith("/SubmitJob"):
                self.submits[engine_pb2.SubmitJobRequest.FromString(request).job_id] += 1
            if method.endswith("/SubmitJobs"):
                self.submits.update(job.job_id for job in engine_pb2.SubmitJobsRequest.FromString(request).jobs)
            try:
                return await self._channel.unary_unary(method)(request, metadata=self._forwarded(context), timeout=30)
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details())

        return forward

    def _stream(self, method: str):  # type: ignore[no-untyped-def]
        async def forward(request: bytes, context):  # type: ignore[no-untyped-def]
            call = self._channel.unary_stream(method)(request, metadata=self._forwarded(context))
            stall = method.endswith("/StreamStateChanges") and self.stall_first_stream and self.streams == 0
            self.streams += method.endswith("/StreamStateChanges")
            try:
                async for response in call:
                    yield response
                    if stall:
                        await asyncio.Event().wait()
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details())
            finally:
                call.cancel()

        return forward

    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop(0)
        await self._channel.close()


@pytest.mark.timeout(900)
async def test_two_replicas_dispatch_each_of_200_jobs_exactly_once(data_dir, postgres_url):
    engine = await engine_server.start(engine_settings(postgres_url))
    proxy = CountingProxy(f"127.0.0.1:{engine.port}")
    await proxy.start()
    replicas = [await operator_server.start(operator_settings(postgres_url, proxy.port)) for _ in range(2)]
    clients = [Operator(replica.port) for replica in replicas]
    try:
        for client in clients:
            await wait_available(client)
        created = await asyncio.gather(*(clients[i % 2].create() for i in range(200)))
        job_ids = [job.job_id for job in created]
        await wait_finished(clients[1], job_ids, timeout=400)
    finally:
        for client in clients:
            await client.close()
        for replica in replicas:
            await replica.stop(1)
        await proxy.stop()
        await engine.stop(1)

    assert len(set(job_ids)) == 200
    assert proxy.submits == collections.Counter({job_id: 1 for job_id in job_ids})
    assert query(postgres_url, "SELECT count(*) FROM engine_jobs") == [(200,)]
    histories = _histories(postgres_url)
    assert {job_id: histories[job_id] for job_id in job_ids} == {job_id: NOOP_PATH for job_id in job_ids}
    emitted = query(postgres_url, "SELECT count(*) FROM engine_events")[0][0]
    assert query(postgres_url, "SELECT count(*) FROM job_events WHERE engine_id = 'local'") == [(emitted,)]


async def test_jobs_wait_for_an_engine_that_disappears_and_run_when_it_returns(data_dir, postgres_url):
    engine = await engine_server.start(engine_settings(postgres_url))
    port = engine.port
    service = await operator_server.start(operator_settings(postgres_url, port, engine_liveness_s=10.0))
    operator = Operator(service.port)
    try:
        await wait_available(operator)
        await engine.stop(0)
        # Seen moments ago, the engine is still presumed live: these jobs are accepted and wait.
        waiting = [await operator.create() for _ in range(3)]

        async def unavailable() -> bool:
            return not any(env.available for env in await operator.environments())

        await eventually(unavailable, "the environment to become unavailable", timeout=60)
        try:
            await operator.create()
            raise AssertionError("CreateJob succeeded for an unavailable environment")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "environment local-cpu is unavailable" in exc.details()
            assert error_code(exc) == "ENVIRONMENT_UNAVAILABLE"
        for job in waiting:
            assert (await operator.get(job.job_id)).status == 1
        assert query(postgres_url, "SELECT count(*) FROM jobs WHERE dispatched") == [(0,)]

        engine = await engine_server.start(engine_settings(postgres_url, address=f"127.0.0.1:{port}"))
        await wait_available(operator)
        await wait_finished(operator, [job.job_id for job in waiting])
        listed = await operator.stub.ListJobs(operator_pb2.ListJobsRequest(statuses=[70]), metadata=operator.metadata)
        assert sorted(j.job_id for j in listed.jobs) == sorted(j.job_id for j in waiting)
    finally:
        await operator.close()
        await service.stop(1)
        await engine.stop(1)

    histories = _histories(postgres_url)
    assert [histories[job.job_id] for job in waiting] == [NOOP_PATH] * 3


async def test_replicas_starting_together_on_an_empty_database_both_serve(data_dir, postgres_url):
    engine = await engine_server.start(engine_settings(postgres_url))
    replicas = await asyncio.gather(
        *(operator_server.start(operator_settings(postgres_url, engine.port)) for _ in range(3))
    )
    clients = [Operator(replica.port) for replica in replicas]
    try:
        for client in clients:
            await wait_available(client)
        created = [await client.create() for client in clients]
        await wait_finished(clients[0], [job.job_id for job in created])
    finally:
        for client in clients:
            await client.close()
        for replica in replicas:
            await replica.stop(1)
        await engine.stop(1)
    assert query(postgres_url, "SELECT engine_id, last_applied_sequence FROM engines") == [
        ("local", 3 * CHANGES_PER_JOB)
    ]


async def test_a_state_stream_that_goes_silent_is_abandoned_and_resumed(data_dir, postgres_url):
    engine = await engine_server.start(engine_settings(postgres_url))
    proxy = CountingProxy(f"127.0.0.1:{engine.port}", stall_first_stream=True)
    await proxy.start()
    service = await operator_server.start(operator_settings(postgres_url, proxy.port, engine_liveness_s=2.0))
    operator = Operator(service.port)
    try:
        await wait_available(operator)  # the first stream's first message is a heartbeat
        job = await operator.create()
        await wait_finished(operator, [job.job_id], timeout=60)
    finally:
        await operator.close()
        await service.stop(1)
        await proxy.stop()
        await engine.stop(1)
    assert proxy.streams >= 2
    assert _histories(postgres_url)[job.job_id] == NOOP_PATH


async def test_jobs_waiting_too_long_for_a_dead_engine_expire_in_queue(data_dir, postgres_url):
    engine = await engine_server.start(engine_settings(postgres_url))
    service = await operator_server.start(
        operator_settings(postgres_url, engine.port, engine_liveness_s=1.0, queue_timeout_s=2.0)
    )
    operator = Operator(service.port)
    try:
        await wait_available(operator)
        await engine.stop(0)
        waiting = await operator.create()  # the engine still counts as live for a moment
        ended = (await operator.watch([waiting.job_id]))[-1]
    finally:
        await operator.close()
        await service.stop(1)
    assert ended.status == 70 and ended.end_reason == 5  # EXPIRED_IN_QUEUE
    assert ended.error_code == "expired_in_queue"
    assert "waited more than 2 s for its engine local to come back" in ended.error_message
    assert _histories(postgres_url)[waiting.job_id] == [1, 70]


async def test_the_service_stops_promptly_while_following_its_engine(data_dir, tmp_path):
    # Stopping cancels the state stream's read; before the service closed the
    # stream's channel first, about one stop in five waited for ever on it.
    url = f"sqlite:///{tmp_path}/stops.db"
    engine = await engine_server.start(engine_settings(url))
    try:
        for _ in range(20):
            operator = await operator_server.start(operator_settings(url, engine.port))
            client = Operator(operator.port)
            try:
                await wait_available(client)
                for _ in range(3):
                    await client.create()  # and stop while their changes stream in
            finally:
                await client.close()
            await asyncio.wait_for(operator.stop(1), 15)
    finally:
        await engine.stop(1)
