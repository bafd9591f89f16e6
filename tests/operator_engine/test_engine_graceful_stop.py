"""SIGTERM the engine (a real `python -m services.operator_engine` process) in
each stage: it starts no new work while it stops, exits within its grace
period, leaves algorithms running under their monitors, and after a restart
every job resumes where it was, with no status change in between and nothing
blamed on the data."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from plumbing.statuses import EndReason, Status
from tests.operator_engine.engine_harness import (
    EngineClient,
    EngineProcess,
    StallingServer,
    engine_process,
    gate,
    processes_mentioning,
    release,
    wait_for_file_text,
    wait_until,
    workflow,
)
from tests.operator_engine.test_engine_restart import (
    COPY_INPUT,
    assert_stopped_and_gone,
    killed_while_the_algorithm_waits,
    nothing_running,
    publish_reran,
    restarted,
    stalled_in,
)
from tests.operator_engine.test_engine_stop import stalled_dataset

GRACE_S = 3.0
# The engine logs how long its stop took (at INFO, whatever the run's level).
STOPPING = {"C2D_ENGINE_STOP_GRACE_S": str(GRACE_S), "C2D_LOG_LEVEL": "INFO"}
EXITING = re.compile(r"operator-engine exiting ([0-9.]+) s after the signal")


async def sigterm(proc: EngineProcess, log: Path) -> None:
    """Sends SIGTERM and checks the engine exits cleanly within its grace period (this
    loop keeps serving the test's servers meanwhile). The time is the engine's own,
    from its signal handler to its exit hook: what this test process waits for its turn
    on a loaded machine is not the engine's."""
    process = proc.process
    assert process is not None
    said_before = len(EXITING.findall(log.read_text()))
    process.send_signal(signal.SIGTERM)
    await wait_until(lambda: process.poll() is not None, 60, "the engine exited after SIGTERM")
    assert process.returncode == 0, log.read_text()
    said = EXITING.findall(log.read_text())
    assert len(said) == said_before + 1, log.read_text()
    assert float(said[-1]) < GRACE_S, said[-1]


async def sigterm_while_stalled(
    proc: EngineProcess, log: Path, engine: EngineClient, stall: StallingServer, pod: str
) -> None:
    """SIGTERMs the engine while the pod holds its connection: the pod stops with it."""
    await engine.close()
    await sigterm(proc, log)
    await wait_until(lambda: stall.open_connections == 0, what=f"{pod} stopped with the engine")


async def test_sigterm_during_configure_keeps_the_queue_queued_and_resumes_both(data_dir, postgres_url, tmp_path):
    log = tmp_path / "engine.log"
    async with StallingServer() as stall:
        with engine_process(postgres_url, tmp_path, C2D_ENGINE_MAX_JOBS="1", **STOPPING) as proc:
            engine = await proc.start(log)
            configuring = await engine.submit(workflow(COPY_INPUT, dataset=stalled_dataset(stall)))
            queued = await engine.submit(workflow("print('queued job ran')\n"))
            before = await stalled_in(engine, stall, Status.CONFIGURING_VOLUMES, "pod_config")
            await sigterm_while_stalled(proc, log, engine, stall, "pod_config")

            stall.stalling = False
            engine, after = await restarted(proc, log, before, {configuring, queued})
            # Nothing was logged while it stopped: the configure stage runs again, the
            # queued job starts only now, and neither ended in 31.
            assert [c.status for c in after if c.job_id == configuring] == [30, 40, 60, 70]
            assert [c.status for c in after if c.job_id == queued] == [10, 20, 30, 40, 60, 70]
            assert after[-1].end_reason == EndReason.COMPLETED
            assert (engine.data(configuring) / "outputs" / "copy").read_text() == "the dataset\n"
            assert nothing_running(postgres_url) == []
            await engine.close()


async def test_sigterm_during_publish_reruns_publish(data_dir, postgres_url, tmp_path):
    log = tmp_path / "engine.log"
    async with StallingServer() as stall:
        with engine_process(postgres_url, tmp_path, **STOPPING) as proc:
            engine = await proc.start(log, C2D_STORAGE_KIND="ipfs", C2D_STORAGE_IPFS_API=stall.url)
            job_id = await engine.submit(workflow("open('/data/outputs/result.txt', 'w').write('42')\n"))
            before = await stalled_in(engine, stall, Status.PUBLISHING_RESULTS, "pod_publish")
            await sigterm_while_stalled(proc, log, engine, stall, "pod_publish")

            engine, _ = await publish_reran(proc, log, before, job_id)
            await engine.close()


async def test_sigterm_during_algorithm_leaves_it_running_and_the_restarted_engine_reattaches(
    data_dir, postgres_url, tmp_path
):
    log = tmp_path / "engine.log"
    with engine_process(postgres_url, tmp_path, **STOPPING) as proc:
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

        engine, after = await restarted(proc, log, before, {job_id})
        assert [c.status for c in after] == [60, 70]
        assert after[0].algorithm_outcome.exit_code == 0 and not after[0].algorithm_outcome.stopped
        await engine.close()


async def test_a_reattached_algorithm_can_be_stopped(data_dir, postgres_url, tmp_path):
    log = tmp_path / "engine.log"
    with engine_process(postgres_url, tmp_path) as proc:
        job_id = await killed_while_the_algorithm_waits(proc, log)
        engine = await proc.start(log)
        assert (await engine.stop(job_id)).status == Status.RUNNING_ALGORITHM
        end = await assert_stopped_and_gone(engine, job_id)
        assert end.algorithm_outcome.stopped
        await engine.close()
