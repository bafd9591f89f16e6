"""Provider API benchmark: `.venv/bin/python bench/provider_api.py [--quick] [--postgres] [--in-process|--processes]`.

On the stack of `c2d up` (provider, operator-service, engine with the no-op
backend, so jobs spawn no process) in its own process, as deployed: the
load generator does not share the servers' interpreter (with --in-process,
everything in this one process and one event loop, as before; with
--processes, one process per server, as `c2d up --processes`). SQLite by
default or a fresh PostgreSQL database with --postgres, 64 concurrent
clients, each its own Ethereum key:

1. StartCompute: each client starts its jobs one after another (a raw
   algorithm on a dataset that allows it, one order per job): jobs/s, p50/p99;
2. GetJobDetails: each client reads one of its jobs repeatedly (300 times: a
   phase of several seconds, long enough for a stable rate): RPS, p50/p99;
3. the baseline, in the same run and topology: a bare grpc.aio echo server
   (in its own process unless --in-process) answering the same number of
   calls with a GetJobDetails-sized payload.

Requests are signed before the clock starts (signing is the client's cost,
not the provider's). Prints a table and, as its last line, one JSON object.
Not a test: figures to report (target: GetJobDetails >= 0.5x the echo's RPS).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import provider_pb2
from cli import demo
from cli.client import Client
from cli.stack import start_stack
from services.operator_engine.settings import EngineSettings
from services.operator_service.settings import OperatorSettings
from services.provider.settings import ProviderSettings
from testkit.market import wait_for_environment
from testkit.servers import free_ports, stop_process
from testkit.stacks import fresh_postgres_database, settings_for
from testkit.up import running_up

CLIENTS = 64
ECHO = "/bench.Echo/Echo"
RAW = provider_pb2.RawAlgorithm(
    code="print(1)", container=common_pb2.AlgorithmContainer(entrypoint="python3 $ALGO", image="python", tag="3.11")
)


def fresh_database():
    return fresh_postgres_database("c2d_bench")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run_clients(calls: list[list[Callable[[], Awaitable[Any]]]]) -> tuple[float, list[float]]:
    """Each inner list is one client's calls, made one after another; all
    clients at once. Returns (seconds, latencies in ms)."""
    latencies: list[float] = []

    async def client(own: list[Callable[[], Awaitable[Any]]]) -> None:
        for call in own:
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client(own) for own in calls))
    return time.perf_counter() - started, latencies


async def start_echo_server() -> tuple[grpc.aio.Server, int]:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler("bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def serve_echo() -> None:
    """`--echo-server`: the baseline in its own process; prints its port, stops on SIGTERM."""
    server, port = await start_echo_server()
    print(port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


@contextlib.asynccontextmanager
async def echo_server(in_process: bool) -> AsyncIterator[str]:
    if in_process:
        server, port = await start_echo_server()
        try:
            yield f"127.0.0.1:{port}"
        finally:
            await server.stop(0)
        return
    with server_process([sys.executable, __file__, "--echo-server"], os.environ) as process:
        assert process.stdout is not None
        yield f"127.0.0.1:{int(process.stdout.readline())}"


@contextlib.contextmanager
def server_process(command: list[str], env: dict[str, str] | os._Environ[str]) -> Any:
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        yield process
    finally:
        stop_process(process, grace=30.0)


def stack_environment(provider: ProviderSettings, operator: OperatorSettings, engine: EngineSettings) -> dict[str, str]:
    """The settings as the C2D_* variables `c2d up` reads."""
    env = dict(os.environ)
    for prefix, config in (("C2D_PROVIDER", provider), ("C2D_OPERATOR", operator), ("C2D_ENGINE", engine)):
        for field in dataclasses.fields(config):
            value = getattr(config, field.name)
            env[f"{prefix}_{field.name.upper()}"] = ",".join(value) if isinstance(value, tuple) else str(value)
    return env


@contextlib.asynccontextmanager
async def stack_at(
    provider: ProviderSettings, operator: OperatorSettings, engine: EngineSettings, in_process: bool, per_server: bool
) -> AsyncIterator[str]:
    """The provider's address, the stack running in this process, in a `c2d up`
    process, or one process per server (`c2d up --processes`)."""
    if in_process:
        stack = await start_stack(provider, operator, engine)
        try:
            yield stack.provider_address
        finally:
            await stack.stop()
        return
    if per_server:  # `c2d up --processes` wires its servers by fixed ports
        ports = free_ports(3)
        provider = dataclasses.replace(provider, address=f"127.0.0.1:{ports[0]}")
        operator = dataclasses.replace(operator, address=f"127.0.0.1:{ports[1]}")
        engine = dataclasses.replace(engine, address=f"127.0.0.1:{ports[2]}")
    with running_up(stack_environment(provider, operator, engine), processes=per_server) as up:
        yield up.addresses["provider"]


def figures(seconds: float, latencies: list[float]) -> dict[str, float]:
    return {
        "rps": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 99),
    }


async def bench(
    database_url: str,
    jobs_per_client: int,
    reads_per_client: int,
    in_process: bool,
    per_server: bool,
    say: Callable[[str], None],
) -> dict[str, Any]:
    provider, operator, engine = settings_for(database_url, backend="noop")
    engine = dataclasses.replace(engine, max_jobs=CLIENTS)
    async with (
        stack_at(provider, operator, engine, in_process, per_server) as provider_address,
        grpc.aio.insecure_channel(provider_address) as channel,
    ):
        publisher = Client(channel, "0x" + "51" * 32)
        environment = await wait_for_environment(publisher)
        clients = [Client(channel, "0x" + f"{i + 1:064x}") for i in range(CLIENTS)]

        # Setup: one dataset that allows raw algorithms, one order per job.
        files = await publisher.encrypt([common_pb2.FileLocation(type="url", url="http://127.0.0.1:9/data.csv")])
        salt = f"bench-{time.time_ns()}"
        dataset = publisher.did_for(salt)
        await publisher.publish(
            {
                "version": "4.1.0",
                "metadata": {"type": "dataset", "name": "bench", "author": "bench", "license": "CC0"},
                "services": [
                    demo._service(
                        "compute",
                        "compute",
                        files,
                        dataset,
                        {
                            "allowRawAlgorithm": True,
                            "allowNetworkAccess": False,
                            "publisherTrustedAlgorithms": [],
                            "publisherTrustedAlgorithmPublishers": [],
                        },
                    )
                ],
            },
            salt,
        )
        token = await publisher.create_datatoken(dataset, "compute")
        for client in clients:
            await publisher.mint(token, client.address, jobs_per_client)

        async def orders_of(client: Client) -> list[str]:
            return [await client.order(dataset, "compute") for _ in range(jobs_per_client)]

        say(f"setup: {CLIENTS * jobs_per_client} orders ...")
        orders = await asyncio.gather(*(orders_of(c) for c in clients))

        def start_call(client: Client, order_id: str) -> Callable[[], Awaitable[Any]]:
            spec = provider_pb2.ComputeSpec(
                dataset=provider_pb2.AssetOrder(did=dataset, service_id="compute", order_id=order_id),
                raw_algorithm=RAW,
                environment_id=environment,
            )
            request = client.signed("StartCompute", provider_pb2.StartComputeRequest(spec=spec))
            return lambda: client.compute.StartCompute(request)

        start_calls = [[start_call(c, o) for o in own] for c, own in zip(clients, orders, strict=False)]
        job_ids: list[list[str]] = [[] for _ in clients]

        def recording(index: int, call: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
            async def run() -> None:
                job_ids[index].append((await call()).job_id)

            return run

        say("StartCompute ...")
        start_s, start_lat = await run_clients(
            [[recording(i, call) for call in own] for i, own in enumerate(start_calls)]
        )

        # The engine and operator finish those jobs before the reads start.
        async def last_status(client: Client, job_id: str) -> int:
            status = 0
            async for job in client.watch(job_id):
                status = job.status
            return status

        say("waiting for the jobs to finish ...")
        await asyncio.gather(*(last_status(c, own[-1]) for c, own in zip(clients, job_ids, strict=False)))
        say(f"signing {CLIENTS * reads_per_client} reads ...")
        read_calls = []
        for client, own in zip(clients, job_ids, strict=False):
            requests = [
                client.signed("GetJobDetails", provider_pb2.GetJobDetailsRequest(job_id=own[0]))
                for _ in range(reads_per_client)
            ]
            read_calls.append([(lambda c=client, r=r: c.compute.GetJobDetails(r)) for r in requests])
        payload = (await read_calls[0][0]()).SerializeToString()
        read_calls[0] = read_calls[0][1:]  # that request's nonce is spent
        say("reading GetJobDetails ...")
        read_s, read_lat = await run_clients(read_calls)

    async with echo_server(in_process) as address, grpc.aio.insecure_channel(address) as echo_channel:
        echo = echo_channel.unary_unary(ECHO)
        # Warmed up like the provider, whose setup calls came first.
        await run_clients([[(lambda: echo(payload)) for _ in range(10)] for _ in clients])
        say("echo ...")
        echo_s, echo_lat = await run_clients(
            [[(lambda: echo(payload)) for _ in range(reads_per_client)] for _ in clients]
        )

    return {
        "start": figures(start_s, start_lat),
        "getjob": figures(read_s, read_lat),
        "echo": figures(echo_s, echo_lat),
        "payload_bytes": len(payload),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--postgres", action="store_true", help="a fresh PostgreSQL database instead of SQLite")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="the servers in this process, with the load generator (the old topology)",
    )
    parser.add_argument(
        "--processes", action="store_true", help="the stack as `c2d up --processes`: one process per server"
    )
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)  # the baseline's own process
    args = parser.parse_args()
    if args.echo_server:
        asyncio.run(serve_echo())
        return
    jobs_per_client, reads_per_client = (2, 10) if args.quick else (8, 300)
    os.environ["C2D_DATA_DIR"] = tempfile.mkdtemp(prefix="c2d-bench-")

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with fresh_database() if args.postgres else contextlib.nullcontext("") as url:
        result = asyncio.run(bench(url, jobs_per_client, reads_per_client, args.in_process, args.processes, say))

    database = "postgresql" if args.postgres else "sqlite"
    topology = "in-process" if args.in_process else "process per server" if args.processes else "processes"
    start, getjob, echo = result["start"], result["getjob"], result["echo"]
    print(f"provider API, {CLIENTS} concurrent clients, {database}, noop engine backend, servers: {topology}")
    print(f"{'call':<16}{'calls':>8}{'per s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, row, calls in (
        ("StartCompute", start, CLIENTS * jobs_per_client),
        ("GetJobDetails", getjob, CLIENTS * reads_per_client - 1),
        ("echo (baseline)", echo, CLIENTS * reads_per_client),
    ):
        print(f"{name:<16}{calls:>8}{row['rps']:>10.1f}{row['p50_ms']:>10.2f}{row['p99_ms']:>10.2f}")
    ratio = getjob["rps"] / echo["rps"]
    print(f"GetJobDetails / echo: {ratio:.2f}x (target >= 0.5x); payload {result['payload_bytes']} bytes")
    print(
        json.dumps(
            {
                "database": database,
                "topology": topology,
                "clients": CLIENTS,
                "getjob_rps": round(getjob["rps"], 1),
                "echo_rps": round(echo["rps"], 1),
                "getjob_over_echo": round(ratio, 3),
                "getjob_p50_ms": round(getjob["p50_ms"], 2),
                "getjob_p99_ms": round(getjob["p99_ms"], 2),
                "echo_p99_ms": round(echo["p99_ms"], 2),
                "start_rps": round(start["rps"], 1),
                "start_p50_ms": round(start["p50_ms"], 2),
                "start_p99_ms": round(start["p99_ms"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
