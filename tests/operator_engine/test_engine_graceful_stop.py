"""SIGTERM the engine (a real `python -m services.operator_engine` process) in
each stage: it starts no new work while it stops, exits within its grace
period, leaves algorithms running under their monitors, and after a restart
every job resumes where it was, with no status change in between and nothing
blamed on the data."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from plumbing.statuses import EndReason, Status
from testkit.servers import free_ports
from tests.operator_engine.engine_harness import (
    EngineProcess,
    StallingServer,
    gate,
    processes_mentioning,
    release,
    wait_for_file_text,
    wait_until,
    workflow,
)
from tests.operator_engine.test_engine_adversarial import no_cgroup_left
from tests.operator_engine.test_engine_restart import (
    COPY_INPUT,
    assert_no_gap_and_legal,
    changes_after,
    killed_while_the_algorithm_waits,
    nothing_running,
)
from tests.operator_engine.test_engine_stop import stalled_dataset

GRACE_S = 3.0


async def sigterm(proc: EngineProcess, log: Path) -> None:
    """Sends SIGTERM and checks the engine exits cleanly within its grace period (this
    loop keeps serving the test's servers meanwhile)."""
    process = proc.process
    assert process is not None
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    await wait_until(lambda: process.poll() is not None, 60, "the engine exited after SIGTERM")
    took = time.monotonic() - started
    assert process.returncode == 0, log.read_text()
    assert took < GRACE_S + 2.0, took


async def test_sigterm_during_configure_keeps_the_queue_queued_and_resumes_both(data_dir, postgres_url, tmp_path):
    log = tmp_path / "engine.log"
    async with StallingServer() as stall:
        proc = EngineProcess(
            free_ports(1)[0],
            postgres_url,
            tmp_path / "ws",
            C2D_ENGINE_MAX_JOBS="1",
            C2D_ENGINE_STOP_GRACE_S=str(GRACE_S),
        )
        try:
            engine = await proc.start(log)
            configuring = await engine.submit(workflow(COPY_INPUT, dataset=stalled_dataset(stall)))
            queued = await engine.submit(workflow("print('queued job ran')\n"))
            await wait_until(lambda: stall.open_connections >= 1, what="pod_config connected")
            before = await engine.logged_so_far()
            assert before[-1].status == Status.CONFIGURING_VOLUMES
            await engine.close()
            await sigterm(proc, log)
            await wait_until(lambda: stall.open_connections == 0, what="pod_config stopped with the engine")

            stall.stalling = False
            engine = await proc.start(log)
            after = await changes_after(engine, before[-1].sequence, {configuring, queued})
            assert_no_gap_and_legal(before, after)
            # Nothing was logged while it stopped: the configure stage runs again, the
            # queued job starts only now, and neither ended in 31.
            assert [c.status for c in after if c.job_id == configuring] == [30, 40, 60, 70]
            assert [c.status for c in after if c.job_id == queued] == [10, 20, 30, 40, 60, 70]
            assert after[-1].end_reason == EndReason.COMPLETED
            assert (engine.data(configuring) / "outputs" / "copy").read_text() == "the dataset\n"
            assert nothing_running(postgres_url) == []
            await engine.close()
        finally:
            proc.terminate()


async def test_sigterm_during_publish_reruns_publish(data_dir, postgres_url, tmp_path):
    log = tmp_path / "engine.log"
    async with StallingServer() as stall:
        proc = EngineProcess(free_ports(1)[0], postgres_url, tmp_path / "ws", C2D_ENGINE_STOP_GRACE_S=str(GRACE_S))
        try:
            engine = await proc.start(log, C2D_STORAGE_KIND="ipfs", C2D_STORAGE_IPFS_API=stall.url)
            job_id = await engine.submit(workflow("open('/data/outputs/result.txt', 'w').write('42')\n"))
            await wait_until(lambda: stall.open_connections >= 1, what="pod_publish connected")
            before = await engine.logged_so_far()
            assert before[-1].status == Status.PUBLISHING_RESULTS
            await engine.close()
            await sigterm(proc, log)
            await wait_until(lambda: stall.open_connections == 0, what="pod_publish stopped with the engine")

            engine = await proc.start(log, C2D_STORAGE_KIND="local")
            after = await changes_after(engine, before[-1].sequence, {job_id})
            assert_no_gap_and_legal(before, after)
            assert [c.status for c in after] == [70]
            assert "result.txt" in {f.path for f in after[-1].results.files}
            await engine.close()
        finally:
            proc.terminate()


async def test_sigterm_during_algorithm_leaves_it_running_and_the_restarted_engine_reattaches(
    data_dir, postgres_url, tmp_path
):
    log = tmp_path / "engine.log"
    proc = EngineProcess(free_ports(1)[0], postgres_url, tmp_path / "ws", C2D_ENGINE_STOP_GRACE_S=str(GRACE_S))
    try:
        engine = await proc.start(log)
        code = "print('started', flush=True)\n" + gate() + "print('released', flush=True)\n"
        job_id = await engine.submit(workflow(code))
        algorithm_log = engine.algorithm_log(job_id)
        await wait_for_file_text(algorithm_log, "started")
        before = await engine.logged_so_far()
        # An operator-service's state stream stays open: it must not hold the stop up.
        stream = engine.changes(after=before[-1].sequence)
        await stream.read()
        await sigterm(proc, log)
        stream.cancel()
        await engine.close()
        assert processes_mentioning(engine.data(job_id))  # the algorithm goes on
        release(engine.data(job_id))
        await wait_for_file_text(algorithm_log, "released")

        engine = await proc.start(log)
        after = await changes_after(engine, before[-1].sequence, {job_id})
        assert_no_gap_and_legal(before, after)
        assert [c.status for c in after] == [60, 70]
        assert after[0].algorithm_outcome.exit_code == 0 and not after[0].algorithm_outcome.stopped
        await engine.close()
    finally:
        proc.terminate()


async def test_a_reattached_algorithm_can_be_stopped(data_dir, postgres_url, tmp_path):
    log = tmp_path / "engine.log"
    proc = EngineProcess(free_ports(1)[0], postgres_url, tmp_path / "ws")
    try:
        job_id = await killed_while_the_algorithm_waits(proc, log)
        engine = await proc.start(log)
        assert (await engine.stop(job_id)).status == Status.RUNNING_ALGORITHM
        end = await engine.ended(job_id)
        assert (end.status, end.end_reason) == (Status.FINISHED, EndReason.STOPPED)
        assert end.algorithm_outcome.stopped
        await wait_until(lambda: not processes_mentioning(engine.data(job_id)), what="the sandbox was killed")
        assert no_cgroup_left(job_id)
        await engine.close()
    finally:
        proc.terminate()
