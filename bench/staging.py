"""pod_config staging throughput and memory, against the obvious baselines.

    .venv/bin/python bench/staging.py [--quick] [--repeat N]

Stages 4 files (1 GiB in all; 64 MiB with --quick) into a job's /data as
pod_config does (parallel downloads, sha256 while streaming, checksums
verified, disk budget charged per chunk) and compares with:

- HTTP: `curl` downloading the same 4 files in parallel from the same local
  server (an aiohttp server in its own process, sending with sendfile);
- S3: the minio SDK's `fget_object` for the same 4 objects, in 4 threads,
  from a real SeaweedFS started here.

Each staging runs in a child process that imports the pod_config program,
so its peak RSS (VmHWM) is the whole program's. Throughputs are the best of
--repeat runs; ratios the median over back-to-back pairs (the machine may be
shared). CPU seconds (user + system, the client side only: not the servers)
are the median per side; they move less than times on a shared machine.
Files live in a temporary directory, deleted at the end. The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MiB = 1 << 20
FILES = 4
DID = "did:op:" + "5" * 64

# The file server: aiohttp's static files go out with sendfile, so the server is not the bottleneck.
SERVER = """
import asyncio, sys
from aiohttp import web
app = web.Application()
app.router.add_static("/", sys.argv[1])
runner = web.AppRunner(app, access_log=None)
async def main():
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("LISTENING", site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


# --------------------------------------------------------------------------- the staging child


def child(spec_path: str) -> None:
    """Runs one staging as pod_config would and prints its duration."""
    from plumbing import fetching
    from plumbing.storage import StorageConfig
    from services.pod_config.domain import staging

    spec = json.loads(Path(spec_path).read_text())
    sources = tuple(fetching.FileSource(**s) for s in spec["sources"])
    request = staging.StagingRequest(
        datasets=(staging.AssetToStage(DID, sources, "{}"),), algorithm=None, raw_algorithm="print(1)\n"
    )
    defaults = fetching.StagingSettings()
    limits = fetching.StagingLimits(
        max_file_bytes=spec["disk"],
        max_total_bytes=spec["disk"],
        parallelism=defaults.parallelism,
        connect_timeout_s=defaults.connect_timeout_s,
        idle_timeout_s=defaults.idle_timeout_s,
        allow_hosts=("127.0.0.1",),
    )
    storage = StorageConfig(**spec["storage"]) if spec.get("storage") else None
    fetchers = fetching.default_fetchers(storage_config=storage)
    started, cpu_started = time.perf_counter(), time.process_time()
    outcome = asyncio.run(staging.stage(request, Path(spec["root"]), limits, fetchers, logging.getLogger("bench")))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "cpu_seconds": cpu,
                "status": outcome.status,
                "reason": outcome.reason,
                "peak_rss_kib": peak_rss_kib(),
            }
        )
    )


def peak_rss_kib() -> int:
    # VmHWM, not ru_maxrss: the kernel carries the parent's RSS at fork into the
    # child's ru_maxrss, and the parent here holds upload buffers.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(spec: dict, work: Path) -> tuple[float, float, float]:
    """(seconds, CPU seconds, peak RSS in MiB) of one staging in a child process;
    seconds and CPU seconds leave out the interpreter's start and imports."""
    spec_path = work / f"spec-{uuid.uuid4().hex[:8]}.json"
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(spec_path)], stdout=subprocess.PIPE, cwd=REPO, check=False
    )
    spec_path.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"staging child failed with {done.returncode}")
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    if result["status"] != 30:
        raise RuntimeError(f"staging failed: {result}")
    return result["seconds"], result["cpu_seconds"], result["peak_rss_kib"] / 1024


# --------------------------------------------------------------------------- helpers


def make_files(directory: Path, size: int) -> dict[str, str]:
    import hashlib

    directory.mkdir(parents=True)
    digests = {}
    block = 4 * MiB
    for i in range(FILES):
        h = hashlib.sha256()
        with open(directory / f"part-{i}.bin", "wb") as f:
            for start in range(0, size, block):
                data = os.urandom(min(block, size - start))
                h.update(data)
                f.write(data)
        digests[f"part-{i}.bin"] = h.hexdigest()
    return digests


def drop(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def summary(baseline: list[tuple[float, float, float]], ours: list[tuple[float, float, float]]) -> dict[str, float]:
    """Best times, median of the paired ratios, median CPU seconds, peak RSS MiB.

    Runs are (seconds, CPU seconds, peak RSS MiB). Each repeat runs the
    baseline and then the staging back to back; the ratio of a pair is less at
    the mercy of other load than two best-ofs."""
    return {
        "base_s": min(b[0] for b in baseline),
        "ours_s": min(o[0] for o in ours),
        "ratio": median([b[0] / o[0] for b, o in zip(baseline, ours, strict=True)]),
        "base_cpu_s": median([b[1] for b in baseline]),
        "ours_cpu_s": median([o[1] for o in ours]),
        "rss_mib": max(o[2] for o in ours),
    }


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def mib_s(total: int, seconds: float) -> float:
    return total / MiB / seconds


# --------------------------------------------------------------------------- HTTP


def bench_http(work: Path, files: dict[str, str], total: int, repeat: int) -> dict[str, float]:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(work / "src")], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        urls = {name: f"http://127.0.0.1:{port}/{name}" for name in files}
        curl_runs, stage_runs = [], []
        for _ in range(repeat):
            out = work / "curl"
            out.mkdir()
            args = ["curl", "-sS", "--no-progress-meter", "--fail", "-Z", "--parallel-max", str(FILES)]
            for name, url in urls.items():
                args += ["-o", str(out / name), url]
            started, cpu_started = time.perf_counter(), children_cpu_s()
            subprocess.run(args, check=True)
            curl_runs.append((time.perf_counter() - started, children_cpu_s() - cpu_started, 0.0))
            drop(out)

            root = work / "stage"
            sources = [{"type": "url", "url": urls[n], "checksum": files[n]} for n in files]
            stage_runs.append(run_child({"sources": sources, "root": str(root), "disk": 2 * total}, work))
            drop(root)
    finally:
        server.terminate()
        server.wait(10)
    return summary(curl_runs, stage_runs)


# --------------------------------------------------------------------------- S3


def bench_s3(work: Path, files: dict[str, str], total: int, repeat: int) -> dict[str, float]:
    from plumbing.storage import StorageConfig
    from plumbing.storage.s3 import make_client
    from testkit.servers import run_seaweedfs

    access, secret = "bench-access", f"bench-{uuid.uuid4().hex}"
    with run_seaweedfs(work / "weed", access, secret) as weed:
        config = StorageConfig(
            kind="s3", s3_endpoint=weed.endpoint, s3_access_key=access, s3_secret_key=secret, s3_region="us-east-1"
        )
        bucket = weed.make_bucket("bench")
        client = make_client(config)
        for name in files:
            client.fput_object(bucket, name, str(work / "src" / name), part_size=16 * MiB)
        minio_runs, stage_runs = [], []
        out = work / "minio"
        for _ in range(repeat):
            out.mkdir()
            started, cpu_started = time.perf_counter(), time.process_time()
            with ThreadPoolExecutor(FILES) as pool:
                list(pool.map(lambda n: client.fget_object(bucket, n, str(out / n)), files))
            minio_runs.append((time.perf_counter() - started, time.process_time() - cpu_started, 0.0))
            drop(out)

            root = work / "stage"
            sources = [{"type": "s3", "url": f"s3://{bucket}/{n}", "checksum": files[n]} for n in files]
            storage = {k: v for k, v in config.__dict__.items() if k != "local_root"}
            stage_runs.append(
                run_child({"sources": sources, "root": str(root), "disk": 2 * total, "storage": storage}, work)
            )
            drop(root)
    return summary(minio_runs, stage_runs)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 MiB in all instead of 1 GiB")
    parser.add_argument(
        "--repeat", type=int, default=0, help="runs per measurement, best kept (default 3; 1 with --quick)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    size = (16 if args.quick else 256) * MiB
    total = size * FILES
    repeat = args.repeat or (1 if args.quick else 3)
    work = Path(tempfile.mkdtemp(prefix="c2d-bench-staging-"))
    try:
        print(f"preparing {FILES} files of {size // MiB} MiB in {work} ...", flush=True)
        files = make_files(work / "src", size)
        http = bench_http(work, files, total, repeat)
        s3 = bench_s3(work, files, total, repeat)
    finally:
        drop(work)

    rows = [("HTTP", "curl -Z (4 parallel)", http), ("S3", "minio fget_object x4 threads", s3)]
    print(
        f"\nstaging {total // MiB} MiB ({FILES} files), best of {repeat}; this machine: {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'source':<6} {'baseline':<30} {'MiB/s':>8} {'CPU s':>6}   {'c2d':<20} {'MiB/s':>8} {'CPU s':>6} "
        f"{'ratio':>6} {'peak RSS':>9}"
    )
    for source, base_name, r in rows:
        print(
            f"{source:<6} {base_name:<30} {mib_s(total, r['base_s']):8.0f} {r['base_cpu_s']:6.2f}   "
            f"{'pod_config staging':<20} {mib_s(total, r['ours_s']):8.0f} {r['ours_cpu_s']:6.2f} "
            f"{r['ratio']:6.2f} {r['rss_mib']:7.1f} MiB"
        )
    print(
        "MiB/s: best run; ratio: baseline time / staging time, median over back-to-back pairs; "
        "CPU s: median, client side only"
    )
    figures = {
        "bytes": total,
        "http_over_curl": round(http["ratio"], 3),
        "s3_over_minio": round(s3["ratio"], 3),
        "peak_rss_mib": round(max(http["rss_mib"], s3["rss_mib"]), 1),
        "http_mib_s": round(mib_s(total, http["ours_s"]), 1),
        "curl_mib_s": round(mib_s(total, http["base_s"]), 1),
        "s3_mib_s": round(mib_s(total, s3["ours_s"]), 1),
        "minio_mib_s": round(mib_s(total, s3["base_s"]), 1),
        "http_cpu_s": round(http["ours_cpu_s"], 2),
        "curl_cpu_s": round(http["base_cpu_s"], 2),
        "s3_cpu_s": round(s3["ours_cpu_s"], 2),
        "minio_cpu_s": round(s3["base_cpu_s"], 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
