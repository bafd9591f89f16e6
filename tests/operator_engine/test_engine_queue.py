"""Per-environment max_jobs with a FIFO queue, and the load the engine reports
in ListEnvironments and in the stream's heartbeats."""

from __future__ import annotations

import asyncio
import time

from plumbing.statuses import EndReason
from tests.operator_engine.engine_harness import WAIT_S, engine_running, gate, release, workflow


async def heartbeat_load(engine) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    call = engine.changes()
    try:
        async for event in call:
            if event.HasField("heartbeat"):
                env = event.heartbeat.environments[0]
                return env.running_jobs, env.queued_jobs
    finally:
        call.cancel()
    raise AssertionError("the stream ended without a heartbeat")


async def until_load(engine, expected: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    # a job's slot frees just after its last change is logged
    deadline = time.monotonic() + WAIT_S
    while (load := await engine.load()) != expected:
        assert time.monotonic() < deadline, load
        await asyncio.sleep(0.05)


async def test_max_jobs_one_starts_jobs_in_submit_order(data_dir, postgres_url, tmp_path):
    async with engine_running(postgres_url, tmp_path / "ws", max_jobs=1) as engine:
        first = await engine.submit(workflow(gate() + "print('first done')\n"))
        await engine.reached(first, 40)
        queued = [await engine.submit(workflow("print('quick')\n")) for _ in range(4)]

        env = await engine.environment()
        assert (env.max_jobs, env.running_jobs, env.queued_jobs) == (1, 1, 4)
        assert await heartbeat_load(engine) == (1, 4)

        release(engine.data(first))
        for job_id in queued:
            assert (await engine.ended(job_id)).status == 70
        started = [c.job_id for c in await engine.logged_so_far() if c.status == 10]
        assert started == [first, *queued]
        await until_load(engine, (0, 0))


async def test_jobs_beyond_max_jobs_wait_until_a_slot_frees(data_dir, postgres_url, tmp_path):
    async with engine_running(postgres_url, tmp_path / "ws", max_jobs=2) as engine:
        held = [await engine.submit(workflow(gate())) for _ in range(2)]
        for job_id in held:
            await engine.reached(job_id, 40)
        waiting = await engine.submit(workflow("print(1)\n"))
        env = await engine.environment()
        assert (env.running_jobs, env.queued_jobs) == (2, 1)
        assert waiting not in {c.job_id for c in await engine.logged_so_far()}  # not even started

        # A queued job stopped leaves the queue at once and never starts.
        dropped = await engine.submit(workflow("print(1)\n"))
        assert (await engine.stop(dropped)).status == 1
        history = await engine.history(dropped)
        assert [(c.status, c.end_reason, c.error_code) for c in history] == [(70, EndReason.STOPPED, "stopped")]
        assert (await engine.load()) == (2, 1)

        release(engine.data(held[0]))
        assert (await engine.ended(waiting)).status == 70
        release(engine.data(held[1]))
        assert (await engine.ended(held[1])).status == 70
