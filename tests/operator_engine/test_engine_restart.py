"""kill -9 the engine (a real `python -m services.operator_engine` process) in
each stage and start it again: every job ends or resumes, none stays in a
running state, the pods died with the engine while the algorithm goes on
under its monitor (and the restarted engine re-attaches to it), and the state
stream resumes after the last sequence a client saw, with no gap."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy

from plumbing.statuses import EndReason, Status, can_transition, is_terminal
from testkit.raw_rows import tables_holding
from tests.operator_engine.engine_harness import (
    WAIT_S,
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
from tests.operator_engine.test_engine_adversarial import no_cgroup_left
from tests.operator_engine.test_engine_stop import stalled_dataset

COPY_INPUT = """\
import json, os, shutil
did = json.loads(os.environ["DIDS"])[0]
shutil.copy(f"{os.environ['INPUTS']}/{did}/0", f"{os.environ['OUTPUTS']}/copy")
"""


async def changes_after(engine: EngineClient, sequence: int, until_ended: set[str]) -> list:  # type: ignore[type-arg]
    """The stream from `sequence` on, until every job of `until_ended` has ended."""
    changes, waiting = [], set(until_ended)

    async def follow() -> None:
        call = engine.changes(after=sequence)
        try:
            async for event in call:
                for change in event.changes.changes:
                    changes.append(change)
                    if is_terminal(change.status):
                        waiting.discard(change.job_id)
                if not waiting:
                    return
        finally:
            call.cancel()

    await asyncio.wait_for(follow(), WAIT_S)
    return changes


def assert_no_gap_and_legal(before: list, after: list) -> None:  # type: ignore[type-arg]
    everything = before + after
    assert [c.sequence for c in everything] == list(range(1, len(everything) + 1))
    status: dict[str, int] = {}
    for change in everything:
        current = status.get(change.job_id, Status.WARMING_UP)
        assert can_transition(current, change.status), (change.job_id, current, change.status)
        status[change.job_id] = change.status


async def restarted(
    proc: EngineProcess,
    log: Path,
    before: list,
    until_ended: set[str],
    **env: str,  # type: ignore[type-arg]
) -> tuple[EngineClient, list]:  # type: ignore[type-arg]
    """The engine started again, and its stream after `before` until every job of
    `until_ended` has ended: no gap with `before`, every transition legal."""
    engine = await proc.start(log, **env)
    after = await changes_after(engine, before[-1].sequence, until_ended)
    assert_no_gap_and_legal(before, after)
    return engine, after


async def stalled_in(engine: EngineClient, stall: StallingServer, stage: Status, pod: str) -> list:  # type: ignore[type-arg]
    """The log so far, once the stage's pod holds a connection to the stalling server."""
    await wait_until(lambda: stall.open_connections >= 1, what=f"{pod} connected")
    before = await engine.logged_so_far()
    assert before[-1].status == stage
    return before


async def assert_stopped_and_gone(engine: EngineClient, job_id: str) -> Any:
    """The job ends as stopped, its sandbox's processes and cgroups gone. Its last change."""
    end = await engine.ended(job_id)
    assert (end.status, end.end_reason) == (Status.FINISHED, EndReason.STOPPED)
    await wait_until(lambda: not processes_mentioning(engine.data(job_id)), what="the algorithm was stopped")
    assert no_cgroup_left(job_id)
    return end


def nothing_running(database_url: str) -> list:  # type: ignore[type-arg]
    engine = sqlalchemy.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text("SELECT job_id, status, stage FROM engine_jobs WHERE stage <> 'done'"))
        left = list(rows)
    engine.dispose()
    return left


async def killed_while_the_algorithm_waits(proc: EngineProcess, log) -> str:  # type: ignore[no-untyped-def]
    """Starts the engine and a job whose algorithm waits on its gate; kill -9s the engine
    once the algorithm runs. The job's id."""
    engine = await proc.start(log)
    job_id = await engine.submit(workflow("print('started', flush=True)\n" + gate()))
    await wait_for_file_text(engine.algorithm_log(job_id), "started")
    proc.kill9()
    await engine.close()
    return job_id


async def test_kill_during_configure_reruns_configure(data_dir, postgres_url, tmp_path):
    log = tmp_path / "engine.log"
    async with StallingServer() as stall:
        with engine_process(postgres_url, tmp_path) as proc:
            engine = await proc.start(log)
            # The location and its header are secrets: kept while configure may (re)run, not after.
            secrets = {"query": f"sig-{uuid.uuid4().hex}", "header": f"t0ken-{uuid.uuid4().hex}"}
            location = stalled_dataset(stall)
            location.url += f"?sig={secrets['query']}"
            location.headers["Authorization"] = f"Bearer {secrets['header']}"
            job_id = await engine.submit(workflow(COPY_INPUT, dataset=location))
            before = await stalled_in(engine, stall, Status.CONFIGURING_VOLUMES, "pod_config")
            assert tables_holding(postgres_url, secrets) == {key: {"engine_jobs"} for key in secrets}
            proc.kill9()
            await engine.close()
            await wait_until(lambda: stall.open_connections == 0, what="pod_config died with the engine")

            stall.stalling = False
            engine, after = await restarted(proc, log, before, {job_id})
            assert [c.status for c in after] == [30, 40, 60, 70]
            assert after[-1].end_reason == EndReason.COMPLETED
            assert stall.connections >= 2  # configure ran again
            assert (engine.data(job_id) / "outputs" / "copy").read_text() == "the dataset\n"
            assert nothing_running(postgres_url) == []
            assert tables_holding(postgres_url, secrets) == {key: set() for key in secrets}
            await engine.close()


async def test_kill_during_algorithm_leaves_it_running_and_the_restarted_engine_reattaches(
    data_dir, postgres_url, tmp_path
):
    log = tmp_path / "engine.log"
    with engine_process(postgres_url, tmp_path, C2D_ENGINE_MAX_JOBS="1") as proc:
        engine = await proc.start(log)
        code = "print('started', flush=True)\n" + gate() + "print('released', flush=True)\n"
        running = await engine.submit(workflow(code + "open('/data/outputs/r.txt', 'w').write('done')\n"))
        queued = await engine.submit(workflow("print('queued job ran')\n"))
        algorithm_log = engine.algorithm_log(running)
        await wait_for_file_text(algorithm_log, "started")
        before = await engine.logged_so_far()
        proc.kill9()
        await engine.close()
        # The sandbox outlives the engine, under its monitor, and its log keeps flowing.
        assert processes_mentioning(engine.data(running))
        release(engine.data(running))
        await wait_for_file_text(algorithm_log, "released")

        engine, after = await restarted(proc, log, before, {running, queued})
        assert [c.status for c in after if c.job_id == running] == [60, 70]
        end = next(c for c in after if c.job_id == running and c.status == Status.PUBLISHING_RESULTS)
        assert end.algorithm_outcome.exit_code == 0 and not end.algorithm_outcome.stopped
        assert [c.status for c in after if c.job_id == queued] == [10, 20, 30, 40, 60, 70]
        assert (engine.data(running) / "outputs" / "r.txt").read_text() == "done"
        await wait_until(lambda: not processes_mentioning(engine.data(running)), what="the run's processes ended")
        assert no_cgroup_left(running)
        assert nothing_running(postgres_url) == []
        await engine.close()


async def test_a_run_lost_with_its_monitor_fails_as_engine_restarted(data_dir, postgres_url, tmp_path):
    """What a host reboot does: the engine and the monitor die, and the sandbox with them."""
    log = tmp_path / "engine.log"
    with engine_process(postgres_url, tmp_path, C2D_ENGINE_MAX_JOBS="1") as proc:
        engine = await proc.start(log)
        running = await engine.submit(workflow("print('started', flush=True)\n" + gate()))
        queued = await engine.submit(workflow("print('queued job ran')\n"))
        await wait_for_file_text(engine.algorithm_log(running), "started")
        before = await engine.logged_so_far()
        monitor_pid = int((engine.workspaces / running / "admin" / "monitor" / "pid").read_text().split()[0])
        proc.kill9()
        await engine.close()
        os.kill(monitor_pid, signal.SIGKILL)
        # The sandbox dies with its monitor (its lifeline): nothing of the job keeps running.
        await wait_until(lambda: not processes_mentioning(engine.data(running)), what="the sandbox died")

        engine, after = await restarted(proc, log, before, {running, queued})
        end = next(c for c in after if c.job_id == running)
        assert (end.status, end.end_reason, end.error_code, end.error_message) == (
            Status.ALGORITHM_FAILED,
            EndReason.FAILED,
            "engine_restarted",
            "engine restarted during algorithm",
        )
        assert [c.status for c in after if c.job_id == queued] == [10, 20, 30, 40, 60, 70]
        assert no_cgroup_left(running)  # reclaimed at start-up
        assert nothing_running(postgres_url) == []
        await engine.close()


async def test_kill_during_publish_reruns_publish(data_dir, postgres_url, tmp_path):
    log = tmp_path / "engine.log"
    async with StallingServer() as stall:
        with engine_process(postgres_url, tmp_path) as proc:
            engine = await proc.start(log, C2D_STORAGE_KIND="ipfs", C2D_STORAGE_IPFS_API=stall.url)
            # The grant is pod_publish's: kept while publish may (re)run, not after; the location is gone.
            grant = f"c2dgrant1.{uuid.uuid4().hex}"
            flow = workflow("open('/data/outputs/result.txt', 'w').write('42')\n")
            flow.results_asset_grant = grant
            job_id = await engine.submit(flow)
            before = await stalled_in(engine, stall, Status.PUBLISHING_RESULTS, "pod_publish")
            secrets = {"grant": grant, "raw file": "the dataset\n"}
            assert tables_holding(postgres_url, secrets) == {"grant": {"engine_jobs"}, "raw file": set()}
            proc.kill9()
            await engine.close()
            await wait_until(lambda: stall.open_connections == 0, what="pod_publish died with the engine")

            engine, after = await publish_reran(proc, log, before, job_id)
            assert after[-1].end_reason == EndReason.COMPLETED
            assert nothing_running(postgres_url) == []
            assert tables_holding(postgres_url, secrets) == {key: set() for key in secrets}

            # A client that saw everything resumes at the end: nothing is replayed.
            call = engine.changes(after=after[-1].sequence)
            first = await call.read()
            call.cancel()
            assert first.HasField("heartbeat") and first.heartbeat.latest_sequence == after[-1].sequence
            await engine.close()


async def publish_reran(proc: EngineProcess, log: Path, before: list, job_id: str) -> tuple[EngineClient, list]:  # type: ignore[type-arg]
    """The engine started again with its storage back: the job's publish ran again and
    published its result."""
    engine, after = await restarted(proc, log, before, {job_id}, C2D_STORAGE_KIND="local")
    assert [c.status for c in after] == [70]
    assert "result.txt" in {f.path for f in after[-1].results.files}
    return engine, after


async def test_a_stop_recorded_before_a_kill_stops_the_algorithm_left_running(data_dir, postgres_url, tmp_path):
    log = tmp_path / "engine.log"
    with engine_process(postgres_url, tmp_path) as proc:
        job_id = await killed_while_the_algorithm_waits(proc, log)
        # As StopJob records it before it kills: the engine died in between.
        db = sqlalchemy.create_engine(postgres_url)
        with db.begin() as conn:
            conn.execute(
                sqlalchemy.text("UPDATE engine_jobs SET stop_requested = true WHERE job_id = :j"), {"j": job_id}
            )
        db.dispose()
        assert processes_mentioning(proc.workspaces / job_id / "data")

        engine = await proc.start(log)
        await assert_stopped_and_gone(engine, job_id)
        await engine.close()
