"""pod_publish throughput and memory, and GetComputeResult, against the obvious baselines.

    .venv/bin/python bench/publishing.py [--quick] [--repeat N] [--sparse-gib G] [--download-only]

1. Publishing 4 files (1 GiB in all; 32 MiB with --quick) to a real SeaweedFS
   started here, as pod_publish does (collect, S3 multipart with sha256 while
   streaming, its part size, two uploads at once), against the minio SDK's
   `fput_object` of the same files one after the other (its defaults: 3 parts
   in parallel). Each runs in a child process that imports the pod_publish
   program, so its peak RSS (VmHWM) is the whole program's.
2. A job on the whole embedded stack (provider, operator-service, engine,
   sandbox) writes a 1 GiB result (32 MiB with --quick) to that SeaweedFS;
   a consumer process downloads it with GetComputeResult as the CLI did
   (cli.client.connect and Client.result_chunks), and through the link
   GetComputeResultLink gives as the CLI now does (the SDK's
   verified_chunks: the signed manifest, the presigned GET, the sha256
   check), each against a process reading the same object straight from
   S3 with the minio SDK (1 MiB chunks), in the same run. All count the
   bytes and keep none. --download-only runs only
   this part (and the bare gRPC stream from memory). Each path's cost is
   also given as the machine's busy CPU-seconds per GiB (every process,
   SeaweedFS included, and whatever else runs on a shared machine): the
   direct read alone keeps nearly every core busy, so cores / cost bounds
   what the provider path can reach. And as the CPU-seconds per GiB of the
   consumer's process and of SeaweedFS alone, which another load does not
   change: what each path itself costs.
3. With --sparse-gib G (6 in the full run, 0 with --quick): one sparse file of
   G GiB through pod_publish's S3 multipart, in a child process: time, RSS,
   part count.

Each figure is the best of --repeat runs (the machine may be shared). Files
live in a temporary directory, deleted at the end. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.cpu import machine_busy_s

MiB = 1 << 20
FILES = 4


def _own_cpu_s() -> float:
    """CPU-seconds this process spent, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --------------------------------------------------------------------------- the child processes


def child_publish(root: str, job_id: str) -> None:
    """pod_publish's upload of root/outputs, configured from C2D_STORAGE_* like the pod."""
    import dataclasses

    import services.pod_publish.program  # noqa: F401 - the whole program's imports count in its RSS
    from plumbing import storage
    from services.pod_publish.domain import publishing

    with tempfile.TemporaryDirectory() as scratch:
        # no algorithm.log: the engine's log directory is empty here
        collected = publishing.collect(Path(root), pack=False, scratch=Path(scratch), log_dir=Path(scratch))
        config = storage.StorageConfig.from_env()
        config = dataclasses.replace(
            config, part_size=publishing.part_size_for(config.part_size, collected.largest_file)
        )
        store = storage.open_store(config)
        started = time.monotonic()
        manifest = publishing.publish(store, job_id, collected)
        seconds = time.monotonic() - started
    size = sum(int(f["size"]) for f in manifest["files"])
    print(json.dumps({"seconds": seconds, "bytes": size, "rss_mib": _peak_rss_mib(), "part_size": config.part_size}))


def child_fput(root: str, job_id: str) -> None:
    """The baseline: minio's fput_object of the same files, with the SDK's defaults."""
    import urllib3  # noqa: F401
    from minio import Minio

    import services.pod_publish.program  # noqa: F401 - same imports as the publishing child

    env = os.environ
    client = Minio(
        env["C2D_STORAGE_S3_ENDPOINT"],
        access_key=env["C2D_STORAGE_S3_ACCESS_KEY"],
        secret_key=env["C2D_STORAGE_S3_SECRET_KEY"],
        secure=False,
        region="us-east-1",
    )
    files = sorted((Path(root) / "outputs").iterdir())
    started = time.monotonic()
    for path in files:
        client.fput_object(env["C2D_STORAGE_S3_BUCKET"], f"{job_id}/fput/{path.name}", str(path))
    seconds = time.monotonic() - started
    size = sum(p.stat().st_size for p in files)
    print(json.dumps({"seconds": seconds, "bytes": size, "rss_mib": _peak_rss_mib()}))


def run_child(kind: str, root: Path, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(root), f"bench-{uuid.uuid4().hex[:8]}"],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- 1. publishing


def write_files(root: Path, total: int) -> None:
    outputs = root / "outputs"
    outputs.mkdir(parents=True)
    block = os.urandom(MiB)
    for i in range(FILES):
        with open(outputs / f"part-{i}.bin", "wb") as f:
            f.writelines(
                block[n % 7 :] + block[: n % 7] for n in range(total // FILES // MiB)
            )  # not all the same bytes


def bench_publishing(root: Path, env: dict[str, str], total: int, repeat: int) -> dict:
    write_files(root, total)
    ours, theirs = [], []
    for _ in range(repeat):  # interleaved, so a busy moment hits both
        ours.append(run_child("publish", root, env))
        theirs.append(run_child("fput", root, env))
    best_ours = min(ours, key=lambda r: r["seconds"])
    best_theirs = min(theirs, key=lambda r: r["seconds"])
    shutil.rmtree(root / "outputs")
    return {
        "ours": best_ours,
        "minio": best_theirs,
        "peak_rss_mib": max(r["rss_mib"] for r in ours),
        "minio_rss_mib": max(r["rss_mib"] for r in theirs),
    }


# --------------------------------------------------------------------------- 2. GetComputeResult


BIG_RESULT = """
import os
block = os.urandom(1 << 20)
with open(os.environ["OUTPUTS"] + "/big.bin", "wb") as f:
    for n in range({mib}):
        f.write(block[n % 5:] + block[:n % 5])
"""


def child_download(how: str, target: str, what: str) -> None:
    """A consumer in its own process, as consumers are: streams one file, keeps no bytes.

    how = "provider": target is the provider's address, what "<job id>/<index>";
    how = "link": the same, read through the file's link and checked against the signed sha256;
    how = "link-unchecked": the same link read without the sha256 (the transport alone);
    how = "direct": target is unused, what "<bucket>/<key>" read with the minio SDK;
    how = "direct-sha256": the same, hashing what it reads (what checking costs on a direct read).
    """
    env = os.environ
    if how in ("direct", "direct-sha256"):
        import hashlib

        from minio import Minio

        client = Minio(
            env["C2D_STORAGE_S3_ENDPOINT"],
            access_key=env["C2D_STORAGE_S3_ACCESS_KEY"],
            secret_key=env["C2D_STORAGE_S3_SECRET_KEY"],
            secure=False,
            region="us-east-1",
        )
        bucket, key = what.split("/", 1)
        started, busy, own, got = time.monotonic(), machine_busy_s(), _own_cpu_s(), 0
        digest = hashlib.sha256() if how == "direct-sha256" else None
        response = client.get_object(bucket, key)
        for block in response.stream(MiB):
            got += len(block)
            if digest is not None:
                digest.update(block)
        response.close()
        response.release_conn()
    else:
        from cli.client import Client, connect
        from testkit.jobs import CONSUMER_KEY

        job_id, index = what.rsplit("/", 1)

        async def download() -> int:
            # exactly what the CLI uses: its channel and Client.result_chunks (streamed),
            # or Client.verified_chunks (its download_results: the link, checked)
            async with connect(target) as channel:
                client, count = Client(channel, CONSUMER_KEY), 0
                if how == "link":
                    entry = next(f for f in await client.signed_manifest(job_id) if f.index == int(index))
                    async for data in client.verified_chunks(job_id, entry):
                        count += len(data)
                    return count
                if how == "link-unchecked":  # the transport alone: the link's bytes, no sha256
                    from c2d_sdk import links

                    answer = await client.result_link(job_id, int(index))
                    async for data in links.link_chunks(answer.url, answer.file.size, answer.file.path):
                        count += len(data)
                    return count
                async for _, _, data in client.result_chunks(job_id, int(index)):
                    count += len(data)
                return count

        started, busy, own = time.monotonic(), machine_busy_s(), _own_cpu_s()
        got = asyncio.run(download())
    print(
        json.dumps(
            {
                "seconds": time.monotonic() - started,
                "bytes": got,
                "machine_busy_s": machine_busy_s() - busy,
                "own_cpu_s": _own_cpu_s() - own,
            }
        )
    )


async def bench_download(env: dict[str, str], total: int, repeat: int, storage_pid: int) -> dict:
    from plumbing.statuses import Status
    from testkit.jobs import job_bench

    async with job_bench(disk_bytes=total + (256 * MiB)) as bench:
        job = await bench.run(BIG_RESULT.format(mib=total // MiB))
        if job.status != Status.FINISHED:
            raise RuntimeError(f"the job failed: {job.error_message}")
        entry = next(f for f in job.results.files if f.path == "big.bin")

        async def child(how: str, target: str, what: str) -> tuple[float, float, float, float]:
            """(seconds, CPU-seconds the whole machine was busy meanwhile, the consumer's own, SeaweedFS's)."""
            storage_cpu = _process_cpu_s(storage_pid)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--child",
                f"download-{how}",
                target,
                what,
                env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"download child failed:\n{err.decode()[-3000:]}")
            result = json.loads(out.decode().strip().splitlines()[-1])
            assert result["bytes"] == entry.size, (result, entry.size)
            storage_cpu = _process_cpu_s(storage_pid) - storage_cpu
            return result["seconds"], result["machine_busy_s"], result["own_cpu_s"], storage_cpu

        runs: dict[str, list[tuple[float, float, float, float]]] = {}
        job_file, s3_object = f"{job.job_id}/{entry.index}", entry.location.removeprefix("s3://")
        for _ in range(repeat):  # interleaved, so a busy moment hits every path
            for how, target, what in (
                ("provider", bench.stack.provider_address, job_file),
                ("link", bench.stack.provider_address, job_file),
                ("direct", "-", s3_object),
                ("link-unchecked", bench.stack.provider_address, job_file),
                ("direct-sha256", "-", s3_object),
            ):
                runs.setdefault(how, []).append(await child(how, target, what))
    best = {how: min(results) for how, results in runs.items()}
    figures: dict = {"bytes": entry.size}
    for how, (seconds, cpu, own, storage_cpu) in best.items():
        name = how.replace("-", "_")
        figures[f"{name}_s"], figures[f"{name}_cpu_s"] = seconds, cpu
        figures[f"{name}_own_cpu_s"], figures[f"{name}_storage_cpu_s"] = own, storage_cpu
    return figures


def _from_memory(total: int):  # type: ignore[no-untyped-def]
    from c2d.provider.v1 import provider_pb2_grpc

    class FromMemory(_FromMemory, provider_pb2_grpc.ProviderServiceServicer):
        pass

    return FromMemory(total)


class _FromMemory:
    """A bare gRPC server streaming bytes from memory in GetComputeResult's
    chunks: the ceiling of any Python gRPC download on this machine."""

    def __init__(self, total: int) -> None:
        self.total = total

    async def GetComputeResult(self, request, context):  # type: ignore[no-untyped-def]
        from c2d.provider.v1 import provider_pb2
        from services.provider.persistence.result_files import RESULT_CHUNK

        data, sent = os.urandom(RESULT_CHUNK), 0
        while sent < self.total:
            yield provider_pb2.GetComputeResultResponse(data=data, offset=sent)
            sent += len(data)


def child_ceiling(address: str) -> None:
    import grpc

    from c2d.provider.v1 import provider_pb2, provider_pb2_grpc

    async def download() -> int:
        async with grpc.aio.insecure_channel(address) as channel:
            count = 0
            async for chunk in provider_pb2_grpc.ProviderServiceStub(channel).GetComputeResult(
                provider_pb2.GetComputeResultRequest()
            ):
                count += len(chunk.data)
            return count

    started, busy = time.monotonic(), machine_busy_s()
    got = asyncio.run(download())
    print(json.dumps({"seconds": time.monotonic() - started, "bytes": got, "machine_busy_s": machine_busy_s() - busy}))


async def bench_grpc_ceiling(total: int, repeat: int) -> tuple[float, float]:
    """(MiB/s, machine CPU-seconds per GiB) of the best run."""
    import grpc

    from c2d.provider.v1 import provider_pb2_grpc

    server = grpc.aio.server()
    provider_pb2_grpc.add_ProviderServiceServicer_to_server(_from_memory(total), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        runs = []
        for _ in range(repeat):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--child",
                "ceiling",
                f"127.0.0.1:{port}",
                "-",
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await proc.communicate()
            result = json.loads(out.decode().strip().splitlines()[-1])
            runs.append((result["seconds"], result["machine_busy_s"]))
        seconds, busy = min(runs)
        return total / MiB / seconds, busy / (total / (1 << 30))
    finally:
        await server.stop(0)


# --------------------------------------------------------------------------- 3. a sparse file


def bench_sparse(root: Path, env: dict[str, str], gib: int) -> dict:
    outputs = root / "outputs"
    outputs.mkdir(parents=True)
    with open(outputs / "sparse.bin", "wb") as f:
        f.truncate(gib << 30)
    result = run_child("publish", root, env)
    shutil.rmtree(outputs)
    return result


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure (best is kept)")
    parser.add_argument("--sparse-gib", type=int, default=None, help="size of the sparse multipart run (0: skip)")
    parser.add_argument(
        "--download-only", action="store_true", help="only part 2 (GetComputeResult) and the gRPC ceiling"
    )
    parser.add_argument("--child", nargs=3, metavar=("KIND", "ROOT", "JOB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, root, job_id = args.child
        if kind == "ceiling":
            child_ceiling(root)
        elif kind.startswith("download-"):
            child_download(kind.removeprefix("download-"), root, job_id)
        else:
            {"publish": child_publish, "fput": child_fput}[kind](root, job_id)
        return

    total = 32 * MiB if args.quick else 1 << 30
    repeat = args.repeat or (1 if args.quick else 2)
    sparse_gib = args.sparse_gib if args.sparse_gib is not None else (0 if args.quick else 6)

    from testkit.servers import run_seaweedfs

    base = Path(tempfile.mkdtemp(prefix="c2d-bench-publishing-"))
    os.environ["C2D_DATA_DIR"] = str(base / "c2d")
    os.environ["C2D_STAGING_ALLOW_HOSTS"] = "127.0.0.1"
    os.environ.pop("C2D_SERVICE_TOKEN", None)
    try:
        with run_seaweedfs(base / "weed", "bench-access") as server:
            bucket = server.make_bucket("bench")
            # SeaweedFS allocates the bucket's volumes on its first write: not in either measured run
            server.client().put_object(bucket, "warm-up", io.BytesIO(bytes(MiB)), MiB)
            env = {
                "C2D_STORAGE_KIND": "s3",
                "C2D_STORAGE_S3_ENDPOINT": server.endpoint,
                "C2D_STORAGE_S3_ACCESS_KEY": server.access_key,
                "C2D_STORAGE_S3_SECRET_KEY": server.secret_key,
                "C2D_STORAGE_S3_BUCKET": bucket,
                "C2D_STORAGE_S3_REGION": "us-east-1",
            }
            os.environ.update(env)  # the stack of part 2 (provider and pods) uses the same bucket
            publishing = None if args.download_only else bench_publishing(base / "files", env, total, repeat)
            download = asyncio.run(bench_download(env, total, repeat, server.pid))
            ceiling_mib_s, ceiling_cost = asyncio.run(bench_grpc_ceiling(total, repeat))
            sparse = bench_sparse(base / "sparse", env, sparse_gib) if sparse_gib and not args.download_only else None
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def mib_s(size, s):
        return size / MiB / s

    figures: dict = {}
    if publishing is not None:
        ours, minio = publishing["ours"], publishing["minio"]
        s3_over_minio = minio["seconds"] / ours["seconds"]
        print(f"\npublishing {FILES} files, {ours['bytes'] / MiB:.0f} MiB, to SeaweedFS S3 (best of {repeat})")
        print(f"  {'':34} {'seconds':>8} {'MiB/s':>8} {'peak RSS MiB':>13}")
        print(
            f"  {'pod_publish (part ' + str(ours['part_size'] // MiB) + ' MiB, 2 at once)':34} "
            f"{ours['seconds']:8.2f} {mib_s(ours['bytes'], ours['seconds']):8.1f} {publishing['peak_rss_mib']:13.1f}"
        )
        print(
            f"  {'minio fput_object (defaults)':34} {minio['seconds']:8.2f} "
            f"{mib_s(minio['bytes'], minio['seconds']):8.1f} {publishing['minio_rss_mib']:13.1f}"
        )
        print(f"  pod_publish / fput_object throughput: {s3_over_minio:.2f}x (target >= 0.9x, RSS <= 128 MiB)")
        figures.update(
            {
                "s3_over_minio": round(s3_over_minio, 3),
                "peak_rss_mib": round(publishing["peak_rss_mib"], 1),
                "publish_mib_s": round(mib_s(ours["bytes"], ours["seconds"]), 1),
                "fput_mib_s": round(mib_s(minio["bytes"], minio["seconds"]), 1),
                "minio_rss_mib": round(publishing["minio_rss_mib"], 1),
            }
        )
    over_direct = download["direct_s"] / download["provider_s"]
    link_over_direct = download["direct_s"] / download["link_s"]
    print(f"\nDownloading a {download['bytes'] / MiB:.0f} MiB result (best of {repeat})")
    print(f"  {'':34} {'seconds':>8} {'MiB/s':>8}")
    print(
        f"  {'through the provider (c2d client)':34} {download['provider_s']:8.2f} "
        f"{mib_s(download['bytes'], download['provider_s']):8.1f}"
    )
    print(
        f"  {'its link, sha256 checked (c2d)':34} {download['link_s']:8.2f} "
        f"{mib_s(download['bytes'], download['link_s']):8.1f}"
    )
    print(
        f"  {'its link, unchecked (transport)':34} {download['link_unchecked_s']:8.2f} "
        f"{mib_s(download['bytes'], download['link_unchecked_s']):8.1f}"
    )
    print(
        f"  {'straight from S3 + sha256':34} {download['direct_sha256_s']:8.2f} "
        f"{mib_s(download['bytes'], download['direct_sha256_s']):8.1f}"
    )
    print(
        f"  {'straight from S3 (minio get_object)':34} {download['direct_s']:8.2f} "
        f"{mib_s(download['bytes'], download['direct_s']):8.1f}"
    )
    print(
        f"  {'bare gRPC stream from memory':34} {'':8} {ceiling_mib_s:8.1f}   "
        f"(grpc.aio stub, default options; {ceiling_cost:.2f} CPU-s/GiB)"
    )
    print(f"  provider / direct throughput: {over_direct:.2f}x (streamed; the design's limit, see below)")
    unchecked_over_direct = download["direct_s"] / download["link_unchecked_s"]
    checked_over_checked = download["direct_sha256_s"] / download["link_s"]
    print(f"  link / direct throughput: {link_over_direct:.2f}x (target >= 0.9x)")
    print(
        f"  of which the transport: {unchecked_over_direct:.2f}x unchecked; checked against a direct read "
        f"that hashes too: {checked_over_checked:.2f}x"
    )
    # What the machine can give: each path's CPU-seconds per GiB (all processes,
    # SeaweedFS included); with every core busy the provider path could at best
    # deliver cores / its cost.
    gib = download["bytes"] / (1 << 30)
    provider_cost, direct_cost = download["provider_cpu_s"] / gib, download["direct_cpu_s"] / gib
    link_cost = download["link_cpu_s"] / gib
    cores = os.cpu_count() or 1
    bound = cores / provider_cost * 1024 / mib_s(download["bytes"], download["direct_s"])
    print(
        f"  machine CPU per GiB: {provider_cost:.2f} s through the provider, {link_cost:.2f} s through the link, "
        f"{direct_cost:.2f} s straight from S3;"
    )
    print(f"  with all {cores} cores busy the provider path could reach at most {bound:.2f}x direct")
    # What each path itself costs, whatever else the machine runs: the consumer's
    # process (all its threads) and SeaweedFS's, per GiB.
    own = {how: download[f"{how}_own_cpu_s"] / gib for how in ("link", "link_unchecked", "direct", "direct_sha256")}
    served = {how: download[f"{how}_storage_cpu_s"] / gib for how in ("link", "direct")}
    print(
        f"  the consumer's own CPU per GiB: {own['link']:.2f} s through the link (sha256 on its own thread), "
        f"{own['link_unchecked']:.2f} s unchecked, {own['direct']:.2f} s straight from S3, "
        f"{own['direct_sha256']:.2f} s straight + sha256;"
    )
    print(
        f"  SeaweedFS's CPU per GiB: {served['link']:.2f} s serving the link, {served['direct']:.2f} s the direct read;"
        f" load average {os.getloadavg()[0]:.1f} on {cores} cores"
    )
    # On a machine whose cores are all taken (by others too), a path's speed follows its CPU
    # cost; with a core to spare, the link's sha256 thread runs beside the socket reads.
    saturated = (own["direct"] + served["direct"]) / (own["link"] + served["link"])
    print(f"  so with no core to spare the checked link can reach about {saturated:.2f}x direct")
    figures.update(
        {
            "provider_cpu_s_per_gib": round(provider_cost, 2),
            "direct_cpu_s_per_gib": round(direct_cost, 2),
            "provider_path_bound_over_direct": round(bound, 3),
            "result_download_over_direct": round(over_direct, 3),
            "link_download_over_direct": round(link_over_direct, 3),
            "link_unchecked_over_direct": round(unchecked_over_direct, 3),
            "link_over_direct_sha256": round(checked_over_checked, 3),
            "link_cpu_s_per_gib": round(link_cost, 2),
            "link_own_cpu_s_per_gib": round(own["link"], 2),
            "link_unchecked_own_cpu_s_per_gib": round(own["link_unchecked"], 2),
            "direct_own_cpu_s_per_gib": round(own["direct"], 2),
            "direct_sha256_own_cpu_s_per_gib": round(own["direct_sha256"], 2),
            "link_storage_cpu_s_per_gib": round(served["link"], 2),
            "direct_storage_cpu_s_per_gib": round(served["direct"], 2),
            "link_saturated_bound_over_direct": round(saturated, 3),
            "load_average": round(os.getloadavg()[0], 1),
            "link_mib_s": round(mib_s(download["bytes"], download["link_s"]), 1),
            "download_mib_s": round(mib_s(download["bytes"], download["provider_s"]), 1),
            "direct_mib_s": round(mib_s(download["bytes"], download["direct_s"]), 1),
            "grpc_ceiling_mib_s": round(ceiling_mib_s, 1),
            "grpc_ceiling_cpu_s_per_gib": round(ceiling_cost, 2),
            "total_mib": total // MiB,
        }
    )
    if sparse is not None:
        parts = -(-sparse["bytes"] // sparse["part_size"])
        print(
            f"\na {sparse_gib} GiB sparse file through pod_publish's S3 multipart ({parts} parts of "
            f"{sparse['part_size'] // MiB} MiB): {sparse['seconds']:.1f} s, "
            f"{mib_s(sparse['bytes'], sparse['seconds']):.1f} MiB/s, peak RSS {sparse['rss_mib']:.1f} MiB"
        )
        figures.update(
            {
                "sparse_gib": sparse_gib,
                "sparse_seconds": round(sparse["seconds"], 1),
                "sparse_parts": parts,
                "sparse_rss_mib": round(sparse["rss_mib"], 1),
            }
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
