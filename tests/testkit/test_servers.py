"""The test servers' child processes start whatever gRPC does in the test process, and
die with it. (A preexec_fn child crashed before its exec now and then while grpc.aio
calls ran: the IPFS front of tests/security 'exited with -6 before it listened'.)"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from testkit.servers import spawn_dying_with_parent

# PR_GET_PDEATHSIG (2), as the child sees it
PRINT_PDEATHSIG = (
    "import ctypes; libc = ctypes.CDLL('libc.so.6'); sig = ctypes.c_int(); "
    "libc.prctl(2, ctypes.byref(sig)); print('pdeathsig', sig.value)"
)
CHILDREN = 40  # about one in five crashed with a preexec_fn; all 40 starting is no luck


def start_one() -> tuple[int, bytes]:
    child = spawn_dying_with_parent([sys.executable, "-c", PRINT_PDEATHSIG], stdout=subprocess.PIPE)
    out, _ = child.communicate(timeout=60)
    return child.returncode, out


async def test_children_start_while_grpc_calls_run_and_get_sigkill_when_their_parent_dies():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    calling = True

    async def call() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while calling:
                await stub.Check(health_pb2.HealthCheckRequest())

    callers = [asyncio.create_task(call()) for _ in range(4)]
    try:
        started = [await asyncio.to_thread(start_one) for _ in range(CHILDREN)]
    finally:
        calling = False
        await asyncio.gather(*callers)
        await server.stop(None)
    assert started == [(0, f"pdeathsig {int(signal.SIGKILL)}\n".encode())] * CHILDREN
