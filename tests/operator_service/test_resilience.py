"""The operator-service survives what production does to it: a kill -9 while
an engine streams or while a dispatch is in flight, two replicas on one
database, an engine that goes away or hangs on a dispatch."""

from __future__ import annotations

import asyncio
import collections

import grpc
import pytest

from c2d.engine.v1 import engine_pb2
from c2d.operator.v1 import operator_pb2
from plumbing.grpc_errors import error_code
from plumbing.server import RunningServer
from services.operator_engine import server as engine_server
from services.operator_service import server as operator_server
from testkit.control_plane import (
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
from testkit.pg_proxy import commit_reply_cutter

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

    def __init__(self, target: str, stall_first_stream: bool = False, hold_submits: str = "") -> None:
        self.submits: collections.Counter[str] = collections.Counter()
        self.streams = 0
        # The first state stream forwards its first message, then goes silent
        # for good with the connection open: a hung peer, not a closed one.
        self.stall_first_stream = stall_first_stream
        # SubmitJobs calls hang until release() (or their caller gives up):
        # "request" before the engine sees them, "answer" once the engine took them.
        self.hold_submits = hold_submits
        self.holding = 0  # calls hanging now
        self.held = asyncio.Event()  # set once a call hangs
        self._released = asyncio.Event()
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
            submit = method.endswith("/SubmitJobs")
            if submit:
                self.submits.update(job.job_id for job in engine_pb2.SubmitJobsRequest.FromString(request).jobs)
            if submit and self.hold_submits == "request":
                await self._hang()
            try:
                response = await self._channel.unary_unary(method)(
                    request, metadata=self._forwarded(context), timeout=30
                )
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details())
            if submit and self.hold_submits == "answer":
                await self._hang()
            return response

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

    async def _hang(self) -> None:
        self.holding += 1
        self.held.set()
        try:
            await self._released.wait()
        finally:
            self.holding -= 1

    def release(self) -> None:
        self._released.set()

    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop(0)
        await self._channel.close()


async def _shut_down(
    clients: list[Operator], replicas: list[RunningServer], proxy: CountingProxy, engine: RunningServer
) -> None:
    for client in clients:
        await client.close()
    for replica in replicas:
        await replica.stop(1)
    await proxy.stop()
    await engine.stop(1)


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
        await _shut_down(clients, replicas, proxy, engine)

    assert len(set(job_ids)) == 200
    assert proxy.submits == collections.Counter({job_id: 1 for job_id in job_ids})
    assert query(postgres_url, "SELECT count(*) FROM engine_jobs") == [(200,)]
    histories = _histories(postgres_url)
    assert {job_id: histories[job_id] for job_id in job_ids} == {job_id: NOOP_PATH for job_id in job_ids}
    emitted = query(postgres_url, "SELECT count(*) FROM engine_events")[0][0]
    assert query(postgres_url, "SELECT count(*) FROM job_events WHERE engine_id = 'local'") == [(emitted,)]


def _claimed(database_url: str) -> list[str]:
    """Jobs a dispatch round holds (claimed, not settled)."""
    return sorted(
        job_id for (job_id,) in query(database_url, "SELECT job_id FROM jobs WHERE dispatch_claim IS NOT NULL")
    )


@pytest.mark.timeout(600)
async def test_a_dispatch_call_that_hangs_holds_no_lock_over_another_replicas_work(data_dir, postgres_url):
    engine = await engine_server.start(engine_settings(postgres_url))
    proxy = CountingProxy(f"127.0.0.1:{engine.port}", hold_submits="answer")
    await proxy.start()
    # This replica reaches the engine through the proxy: the engine takes its
    # jobs and runs them, but the answer to its SubmitJobs never comes.
    replicas = [await operator_server.start(operator_settings(postgres_url, proxy.port, dispatch_timeout_s=300))]
    clients = [Operator(replicas[0].port)]
    try:
        await wait_available(clients[0])
        mine = await asyncio.gather(*(clients[0].create() for _ in range(3)))
        await asyncio.wait_for(proxy.held.wait(), 60)
        stuck = sorted(proxy.submits)  # the hanging round's jobs; any others are left to the other replica
        replicas.append(await operator_server.start(operator_settings(postgres_url, engine.port)))
        clients.append(Operator(replicas[1].port))
        await wait_available(clients[1])
        theirs = await asyncio.gather(*(clients[1].create() for _ in range(3)))

        # The other replica dispatches its own jobs, and every change of all six
        # is applied, while the first replica's call still waits for its answer.
        everyone = [job.job_id for job in mine + theirs]
        await wait_finished(clients[1], everyone, timeout=120)
        assert proxy.holding == 1
        assert stuck and _claimed(postgres_url) == stuck

        proxy.release()

        async def settled() -> bool:
            return _claimed(postgres_url) == []

        await eventually(settled, "the hanging round to settle", timeout=60)
    finally:
        await _shut_down(clients, replicas, proxy, engine)

    assert proxy.submits == collections.Counter(dict.fromkeys(stuck, 1))
    assert query(postgres_url, "SELECT count(*) FROM engine_jobs") == [(6,)]
    assert query(postgres_url, "SELECT count(*) FROM jobs WHERE dispatched") == [(6,)]
    histories = _histories(postgres_url)
    assert [histories[job_id] for job_id in everyone] == [NOOP_PATH] * 6


@pytest.mark.timeout(600)
async def test_jobs_claimed_by_a_replica_killed_before_it_settled_are_dispatched_by_another(
    data_dir, postgres_url, tmp_path
):
    dispatch_timeout_s = 3  # a claim is stale, and taken over, after twice this
    engine = await engine_server.start(engine_settings(postgres_url))
    proxy = CountingProxy(f"127.0.0.1:{engine.port}", hold_submits="request")
    await proxy.start()
    doomed = OperatorProcess(
        postgres_url, proxy.port, tmp_path / "operator.log", C2D_OPERATOR_DISPATCH_TIMEOUT_S=str(dispatch_timeout_s)
    )
    survivor = None
    try:
        operator = Operator(await doomed.start())
        await wait_available(operator)
        created = sorted(job.job_id for job in await asyncio.gather(*(operator.create() for _ in range(3))))
        await operator.close()
        await asyncio.wait_for(proxy.held.wait(), 60)
        doomed.kill()  # claimed and committed; SubmitJobs under way; never settled
        in_flight = sorted(proxy.submits)  # the round's jobs; any others still wait unclaimed

        async def call_abandoned() -> bool:
            return proxy.holding == 0

        await eventually(call_abandoned, "the killed replica's call to be cancelled", timeout=60)
        assert in_flight and _claimed(postgres_url) == in_flight
        assert query(postgres_url, "SELECT count(*) FROM engine_jobs") == [(0,)]  # lost, were it not for the claim
        [(claimed_at,)] = query(postgres_url, "SELECT max(dispatch_claimed_at) FROM jobs")

        survivor = await operator_server.start(
            operator_settings(postgres_url, engine.port, dispatch_timeout_s=dispatch_timeout_s)
        )
        operator = Operator(survivor.port)
        await wait_finished(operator, created, timeout=120)
        await operator.close()
    finally:
        doomed.stop()
        if survivor is not None:
            await survivor.stop(1)
        await proxy.stop()
        await engine.stop(1)

    assert _claimed(postgres_url) == []
    assert query(postgres_url, "SELECT count(*) FROM engine_jobs") == [(3,)]
    histories = _histories(postgres_url)
    assert [histories[job_id] for job_id in created] == [NOOP_PATH] * 3
    # Not taken over while the killed replica's call could still have been running.
    started = dict(query(postgres_url, "SELECT job_id, time FROM job_events WHERE status = 10"))
    assert min((started[job_id] - claimed_at).total_seconds() for job_id in in_flight) >= 2 * dispatch_timeout_s


async def test_a_job_stopped_while_its_dispatch_is_in_flight_is_withdrawn_from_the_engine(data_dir, postgres_url):
    engine = await engine_server.start(engine_settings(postgres_url))
    proxy = CountingProxy(f"127.0.0.1:{engine.port}", hold_submits="request")
    await proxy.start()
    service = await operator_server.start(operator_settings(postgres_url, proxy.port, dispatch_timeout_s=60))
    operator = Operator(service.port)
    try:
        await wait_available(operator)
        job = await operator.create()
        await asyncio.wait_for(proxy.held.wait(), 60)

        stopped = await operator.stub.StopJob(
            operator_pb2.StopJobRequest(job_id=job.job_id), metadata=operator.metadata
        )
        assert (stopped.job.status, stopped.job.end_reason) == (70, 2)  # STOPPED, here: the engine has not got it
        proxy.release()  # now the engine takes it, and the settling round takes it back

        async def withdrawn() -> bool:
            return query(postgres_url, "SELECT deleted FROM engine_jobs WHERE job_id = :j", j=job.job_id) == [(True,)]

        await eventually(withdrawn, "the engine's copy to be deleted", timeout=60)
        assert (await operator.get(job.job_id)).status == 70
    finally:
        await _shut_down([operator], [service], proxy, engine)

    assert _histories(postgres_url)[job.job_id] == [1, 70]
    assert query(postgres_url, "SELECT dispatched, dispatch_claim FROM jobs WHERE job_id = :j", j=job.job_id) == [
        (False, None)
    ]


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
        await _shut_down([operator], [service], proxy, engine)
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


async def test_a_claim_whose_commit_reply_was_lost_is_handed_back_not_left_to_go_stale(data_dir, postgres_url):
    # PostgreSQL commits a round's claim of a job, but the service never hears so. The job must not
    # wait for the claim to go stale (here 20 minutes): the round hands it back and a later one runs it.
    engine = await engine_server.start(engine_settings(postgres_url))
    with commit_reply_cutter(postgres_url) as cutter:
        service = await operator_server.start(
            operator_settings(cutter.url(postgres_url), engine.port, dispatch_timeout_s=600)
        )
        operator = Operator(service.port)
        try:
            await wait_available(operator)
            cutter.arm(after=b"SET dispatch_claim='")  # a claim that took a job (not a release: NULL)
            job = await operator.create()
            await wait_finished(operator, [job.job_id], timeout=120)
        finally:
            await operator.close()
            await service.stop(1)
            await engine.stop(1)
        assert cutter.cut == 1 and "SET dispatch_claim=" in cutter.cut_after[0]
    assert _histories(postgres_url)[job.job_id] == NOOP_PATH
