"""StreamJobLogs(follow=True) yields the algorithm's lines as it prints them and
ends when the job ends."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from c2d.engine.v1 import engine_pb2
from tests.operator_engine.engine_harness import WAIT_S, engine_running, gate, release, workflow

ALGORITHM = (
    "print('line one', flush=True)\n"
    + gate("go1")
    + "print('line two', flush=True)\n"
    + gate("go2")
    + "import sys\nprint('line three', file=sys.stderr, flush=True)\n"
)


async def test_following_a_log_yields_lines_live_and_ends_with_the_job(data_dir, postgres_url, tmp_path):
    async with engine_running(postgres_url, tmp_path / "ws") as engine:
        job_id = await engine.submit(workflow(ALGORITHM))
        call = engine.stub.StreamJobLogs(
            engine_pb2.StreamJobLogsRequest(job_id=job_id, follow=True), metadata=engine.metadata
        )
        received = b""

        async def read_until(text: bytes) -> None:
            nonlocal received
            while text not in received:
                chunk = await asyncio.wait_for(call.read(), WAIT_S)
                assert chunk is not grpc.aio.EOF, received
                assert chunk.offset == len(received)  # contiguous chunks
                received += chunk.data

        await read_until(b"line one\n")
        assert b"line two" not in received  # the algorithm has not printed it yet
        release(engine.data(job_id), "go1")
        await read_until(b"line two\n")
        release(engine.data(job_id), "go2")
        await read_until(b"line three\n")
        assert await asyncio.wait_for(call.read(), WAIT_S) is grpc.aio.EOF  # the job ended, so did the stream
        assert received == b"line one\nline two\nline three\n"
        assert (await engine.ended(job_id)).status == 70

        # After the end: the whole log from an offset, without following.
        tail = [
            c
            async for c in engine.stub.StreamJobLogs(
                engine_pb2.StreamJobLogsRequest(job_id=job_id, offset=9), metadata=engine.metadata
            )
        ]
        assert b"".join(c.data for c in tail) == b"line two\nline three\n"


async def test_logs_of_an_unknown_job_are_not_found(data_dir, postgres_url, tmp_path):
    async with engine_running(postgres_url, tmp_path / "ws") as engine:
        call = engine.stub.StreamJobLogs(engine_pb2.StreamJobLogsRequest(job_id="nope"), metadata=engine.metadata)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
