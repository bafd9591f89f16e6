"""Stop and timeouts in every stage: configure (pod_config stalled on a dataset
URL), algorithm (sandboxed), publish (pod_publish stalled on its storage). A stop
ends the job 70 STOPPED at once and kills what the stage started."""

from __future__ import annotations

import time

from c2d.common.v1 import common_pb2
from plumbing.statuses import EndReason, Status
from tests.operator_engine.engine_harness import (
    StallingServer,
    engine_running,
    wait_for_file_text,
    wait_until,
    workflow,
)
from tests.operator_engine.test_engine_adversarial import no_cgroup_left

# A stop must not wait for the stalled stage: the stall would last 30 s and more.
STOP_BOUND_S = 10.0


def stalled_dataset(stall: StallingServer) -> common_pb2.FileLocation:
    return common_pb2.FileLocation(type="url", url=f"{stall.url}/data.csv")


async def stop_and_check(engine, job_id: str, stage_status: int):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    response = await engine.stop(job_id)
    end = await engine.ended(job_id)
    took = time.monotonic() - started
    assert response.status == stage_status
    assert end.status == Status.FINISHED
    assert end.end_reason == EndReason.STOPPED
    assert end.error_code == "stopped"
    assert took < STOP_BOUND_S, took
    return end


async def test_stop_during_configure_kills_pod_config(data_dir, postgres_url, tmp_path):
    async with StallingServer() as stall, engine_running(postgres_url, tmp_path / "ws") as engine:
        job_id = await engine.submit(workflow("print(1)", dataset=stalled_dataset(stall)))
        await wait_until(lambda: stall.open_connections >= 1, what="pod_config connected")
        await stop_and_check(engine, job_id, Status.CONFIGURING_VOLUMES)
        await wait_until(lambda: stall.open_connections == 0, what="pod_config's connection closed (it was killed)")


async def test_stop_during_algorithm_kills_the_sandbox(data_dir, postgres_url, tmp_path):
    async with engine_running(postgres_url, tmp_path / "ws") as engine:
        job_id = await engine.submit(workflow("import time\nprint('started', flush=True)\ntime.sleep(600)\n"))
        await wait_for_file_text(engine.algorithm_log(job_id), "started")
        end = await stop_and_check(engine, job_id, Status.RUNNING_ALGORITHM)
        assert end.algorithm_outcome.stopped
        assert no_cgroup_left(job_id)


async def test_stop_during_publish_kills_pod_publish(data_dir, postgres_url, tmp_path, monkeypatch):
    async with StallingServer() as stall:
        monkeypatch.setenv("C2D_STORAGE_KIND", "ipfs")
        monkeypatch.setenv("C2D_STORAGE_IPFS_API", stall.url)
        async with engine_running(postgres_url, tmp_path / "ws") as engine:
            job_id = await engine.submit(workflow("open('/data/outputs/r.txt', 'w').write('r')\n"))
            await wait_until(lambda: stall.open_connections >= 1, what="pod_publish connected")
            await stop_and_check(engine, job_id, Status.PUBLISHING_RESULTS)
            await wait_until(lambda: stall.open_connections == 0, what="pod_publish's connection closed")


async def test_configure_and_publish_time_out_with_their_own_status(data_dir, postgres_url, tmp_path, monkeypatch):
    async with StallingServer() as stall:
        monkeypatch.setenv("C2D_STORAGE_KIND", "ipfs")
        monkeypatch.setenv("C2D_STORAGE_IPFS_API", stall.url)
        async with engine_running(
            postgres_url, tmp_path / "ws", configure_timeout_s=2.0, publish_timeout_s=2.0
        ) as engine:
            configuring = await engine.submit(workflow("print(1)", dataset=stalled_dataset(stall)))
            publishing = await engine.submit(workflow("open('/data/outputs/r.txt', 'w').write('r')\n"))
            end = await engine.ended(configuring)
            assert (end.status, end.end_reason, end.error_code) == (
                Status.DATA_PROVISIONING_FAILED,
                EndReason.TIMED_OUT,
                "configure_timed_out",
            )
            assert end.error_message == "configuring the job took longer than 2 s"
            end = await engine.ended(publishing)
            assert (end.status, end.end_reason, end.error_code) == (
                Status.RESULTS_UPLOAD_FAILED,
                EndReason.TIMED_OUT,
                "publish_timed_out",
            )
            await wait_until(lambda: stall.open_connections == 0, what="both pods killed")
