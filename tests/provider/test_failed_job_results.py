"""Failed jobs keep their logs, through the real provider, operator-service and
engine (local backend, real sandbox) on PostgreSQL: a job that ends in 41, 42
or a timeout publishes algorithm.log and whatever outputs exist, marked
partial, so GetComputeResult by index works for it as in Ocean; its status
stays the failure."""

from __future__ import annotations

import grpc

from c2d.common.v1 import common_pb2
from plumbing.statuses import Status
from testkit.market import Market, assert_refusal, open_market, refused

FAILS = """\
print("giving up", flush=True)
open("/data/outputs/partial.txt", "w").write("half done")
raise SystemExit(3)
"""
HANGS = """\
import time
print("still thinking", flush=True)
open("/data/outputs/partial.txt", "w").write("a quarter done")
time.sleep(60)
"""
FILLS_THE_DISK = """\
print("writing a lot", flush=True)
with open("/data/outputs/big", "wb") as f:
    for i in range(64):
        f.write(b"x" * (1 << 20))
"""
SUCCEEDS = """\
print("all good", flush=True)
open("/data/outputs/result.txt", "w").write("done")
"""


async def run(market: Market, code: str, **spec_fields: object) -> tuple[common_pb2.Job, list[int]]:
    """The job as it ended, and every status its watcher saw."""
    algorithm = await market.publish_algorithm(code)
    dataset = await market.publish_dataset(trusted=[market.trust(algorithm, code)])
    spec = market.spec(
        dataset,
        await market.buy(dataset, "compute"),
        algorithm,
        await market.buy(algorithm, "access"),
        **spec_fields,
    )
    job_id = (await market.consumer.start(spec)).job_id
    seen = []
    async for update in market.consumer.watch(job_id):
        seen.append(int(update.status))
    return (await market.consumer.details(job_id)).job, seen


async def result_text(market: Market, job: common_pb2.Job, path: str) -> str:
    entry = next(f for f in job.results.files if f.path == path)
    got, body = await market.consumer.result(job.job_id, entry.index)
    assert got.sha256 == entry.sha256
    return body.decode()


async def test_a_failed_a_timed_out_and_a_disk_filling_algorithm_publish_their_logs(data_dir, postgres_url):
    async with open_market(postgres_url, backend="local", engine={"disk_bytes": 16 << 20}) as market:
        failed, seen = await run(market, FAILS)
        assert failed.status == Status.ALGORITHM_FAILED and failed.end_reason == common_pb2.END_REASON_FAILED
        assert failed.error_message == "algorithm failed: exit code 3"
        assert Status.PUBLISHING_RESULTS not in seen, seen  # published unannounced: no status moves back
        assert failed.results.partial
        kinds = {f.path: f.kind for f in failed.results.files}
        assert kinds == {
            "partial.txt": common_pb2.RESULT_KIND_OUTPUT,
            "algorithm.log": common_pb2.RESULT_KIND_ALGORITHM_LOG,
        }
        assert "giving up" in await result_text(market, failed, "algorithm.log")
        assert await result_text(market, failed, "partial.txt") == "half done"
        assert not failed.orders_released

        timed_out, _ = await run(market, HANGS, max_duration_seconds=2)
        assert timed_out.status == Status.ALGORITHM_FAILED, timed_out
        assert timed_out.end_reason == common_pb2.END_REASON_TIMED_OUT
        assert timed_out.results.partial
        assert "still thinking" in await result_text(market, timed_out, "algorithm.log")
        assert await result_text(market, timed_out, "partial.txt") == "a quarter done"

        full, _ = await run(market, FILLS_THE_DISK)
        assert full.status == Status.DISK_QUOTA_EXCEEDED, full
        assert full.results.partial
        assert "writing a lot" in await result_text(market, full, "algorithm.log")

        done, _ = await run(market, SUCCEEDS)
        assert done.status == Status.FINISHED and not done.results.partial
        assert await result_text(market, done, "result.txt") == "done"


async def test_a_failed_jobs_results_are_its_owners_alone(data_dir, postgres_url):
    async with open_market(postgres_url, backend="local") as market:
        failed, _ = await run(market, FAILS)
        assert failed.results.partial and failed.results.files
        for entry in failed.results.files:
            error = await refused(market.other.result(failed.job_id, entry.index))
            assert_refusal(error, grpc.StatusCode.NOT_FOUND, "job_not_found", "not yours")
