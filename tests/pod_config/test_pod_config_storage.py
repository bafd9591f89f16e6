"""S3 and IPFS sources staged for real: SeaweedFS (signed S3) and the Kubo RPC front."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import os
from pathlib import Path

import pytest

from plumbing.assets import files_checksum
from plumbing.fetching import ByteBudget, FetchError, FileSource, StorageFetcher, default_fetchers
from plumbing.storage import StorageConfig, open_store
from plumbing.storage.unixfs import cid_of_stream
from services.pod_config.domain.staging import StagingRequest
from testkit.servers import SeaweedFS, free_ports
from tests.pod_config.helpers import (
    ALGO_DID,
    DATASET_DID,
    asset,
    did_dir,
    limits,
    run,
    tree,
)
from tests.storage.conftest import s3_config

MiB = 1 << 20
# The engine's results bucket (C2D_STORAGE_S3_BUCKET): staging never reads from it.
RESULTS_BUCKET = "c2d-results"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def s3(bucket: str, key: str, **kw: object) -> FileSource:
    return FileSource(type="s3", url=f"s3://{bucket}/{key}", **kw)  # type: ignore[arg-type]


def ipfs(cid: str, **kw: object) -> FileSource:
    return FileSource(type="ipfs", cid=cid, **kw)  # type: ignore[arg-type]


RAW = "print('hello')\n"


def raw_algorithm_request(*files: FileSource) -> StagingRequest:
    return StagingRequest(datasets=(asset(DATASET_DID, *files),), algorithm=None, raw_algorithm=RAW)


def leftovers(directory: Path) -> list[str]:
    """Anything in a dataset directory that is not a complete, final file."""
    return sorted(p.name for p in directory.iterdir() if not p.name.isdigit())


@pytest.fixture
def bucket(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.make_bucket("stage")


@pytest.fixture
def s3_conf(seaweedfs: SeaweedFS) -> StorageConfig:
    return s3_config(seaweedfs, RESULTS_BUCKET)


def put_s3(seaweedfs: SeaweedFS, bucket: str, key: str, data: bytes) -> None:
    seaweedfs.client().put_object(bucket, key, io.BytesIO(data), len(data))


@pytest.fixture
def ipfs_conf(ipfs_rpc: str) -> StorageConfig:
    return StorageConfig(kind="ipfs", ipfs_api=ipfs_rpc)


def put_ipfs(conf: StorageConfig, tmp_path: Path, data: bytes) -> str:
    path = tmp_path / f"upload-{sha(data)[:12]}"
    path.write_bytes(data)
    stored = open_store(conf).put_file(path.name, path)
    path.unlink()
    return stored.location.removeprefix("ipfs://")


# --------------------------------------------------------------------------- S3


async def test_s3_dataset_and_algorithm_are_staged_and_verified(
    seaweedfs: SeaweedFS, bucket: str, s3_conf: StorageConfig, tmp_path: Path
) -> None:
    d0, d1 = os.urandom(3 * MiB + 17), b"city,temp\nOslo,4\n"
    algo = b"#!/bin/sh\necho from s3\n"
    for key, data in {"data/part-0.bin": d0, "data/part-1.csv": d1, "algo/run.sh": algo}.items():
        put_s3(seaweedfs, bucket, key, data)
    request = StagingRequest(
        datasets=(asset(DATASET_DID, s3(bucket, "data/part-0.bin", checksum=sha(d0)), s3(bucket, "data/part-1.csv")),),
        algorithm=asset(ALGO_DID, s3(bucket, "algo/run.sh"), kind="algorithm"),
        algorithm_files_checksum=files_checksum([sha(algo)]),
    )
    root = tmp_path / "data"

    outcome, _ = await run(request, root, fetchers=default_fetchers(storage_config=s3_conf))

    assert (outcome.status, outcome.error_code, outcome.reason) == (30, "", "")
    inputs = root / "inputs" / did_dir(DATASET_DID)
    assert (inputs / "0").read_bytes() == d0
    assert (inputs / "1").read_bytes() == d1
    assert (root / "transformations" / "algorithm").read_bytes() == algo
    assert os.access(root / "transformations" / "algorithm", os.X_OK)
    assert {f.sha256 for f in outcome.files} == {sha(d0), sha(d1), sha(algo)}
    assert leftovers(inputs) == []


async def test_s3_object_is_staged_as_stored_even_with_a_content_encoding(
    seaweedfs: SeaweedFS, bucket: str, s3_conf: StorageConfig, tmp_path: Path
) -> None:
    # A publisher uploaded a gzip file with Content-Encoding: gzip; its checksum is of those bytes.
    stored = gzip.compress(b"city,temp\nOslo,4\n" * 1000)
    seaweedfs.client().put_object(
        bucket, "data.csv.gz", io.BytesIO(stored), len(stored), metadata={"Content-Encoding": "gzip"}
    )
    assert seaweedfs.client().stat_object(bucket, "data.csv.gz").metadata["Content-Encoding"] == "gzip"
    root = tmp_path / "data"

    outcome, _ = await run(
        raw_algorithm_request(s3(bucket, "data.csv.gz", checksum=sha(stored))),
        root,
        fetchers=default_fetchers(storage_config=s3_conf),
    )

    assert (outcome.status, outcome.reason) == (30, "")
    assert (root / "inputs" / did_dir(DATASET_DID) / "0").read_bytes() == stored


async def test_missing_s3_object_is_31_naming_did_and_index_not_the_key(
    seaweedfs: SeaweedFS, bucket: str, s3_conf: StorageConfig, tmp_path: Path
) -> None:
    put_s3(seaweedfs, bucket, "present.bin", b"x" * 1000)
    request = raw_algorithm_request(s3(bucket, "present.bin"), s3(bucket, "secret/missing-key.bin"))
    root = tmp_path / "data"

    outcome, log = await run(request, root, fetchers=default_fetchers(storage_config=s3_conf))

    assert (outcome.status, outcome.error_code) == (31, "dataset_fetch_failed")
    assert outcome.reason == f"data provisioning failed: dataset {DATASET_DID} file 1: the S3 object does not exist"
    for secret in (bucket, "missing-key", seaweedfs.endpoint):
        assert secret not in outcome.reason and secret not in log.text
    inputs = root / "inputs" / did_dir(DATASET_DID)
    assert "1" not in os.listdir(inputs) and leftovers(inputs) == []
    assert not (root / "transformations" / "algorithm").exists()  # the algorithm is not fetched


async def test_missing_s3_bucket_is_31(s3_conf: StorageConfig, tmp_path: Path) -> None:
    request = raw_algorithm_request(s3("no-such-bucket-c2d", "a.bin"))

    outcome, _ = await run(request, tmp_path / "data", fetchers=default_fetchers(storage_config=s3_conf))

    assert outcome.status == 31
    assert outcome.reason == f"data provisioning failed: dataset {DATASET_DID} file 0: the S3 bucket does not exist"


async def test_s3_credentials_refused_is_31_without_secrets(seaweedfs: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    put_s3(seaweedfs, bucket, "a.bin", b"abc")
    wrong = s3_config(seaweedfs, RESULTS_BUCKET, s3_secret_key="not-the-secret")
    request = raw_algorithm_request(s3(bucket, "a.bin"))

    outcome, log = await run(request, tmp_path / "data", fetchers=default_fetchers(storage_config=wrong))

    assert outcome.status == 31
    assert outcome.reason.startswith(
        f"data provisioning failed: dataset {DATASET_DID} file 0: the S3 server refused access ("
    )
    assert "not-the-secret" not in outcome.reason + log.text and bucket not in outcome.reason + log.text


async def test_s3_object_over_the_per_file_limit_is_31(
    seaweedfs: SeaweedFS, bucket: str, s3_conf: StorageConfig, tmp_path: Path
) -> None:
    put_s3(seaweedfs, bucket, "big.bin", os.urandom(2 * MiB))
    request = raw_algorithm_request(s3(bucket, "big.bin"))
    root = tmp_path / "data"

    outcome, _ = await run(
        request, root, lim=limits(max_file_bytes=MiB), fetchers=default_fetchers(storage_config=s3_conf)
    )

    assert (outcome.status, outcome.error_code) == (31, "file_too_large")
    assert outcome.reason == (
        f"data provisioning failed: dataset {DATASET_DID} file 0: the file is {2 * MiB} bytes, over the limit of {MiB} bytes"
    )
    assert os.listdir(root / "inputs" / did_dir(DATASET_DID)) == []


async def test_s3_files_over_the_disk_together_are_42(
    seaweedfs: SeaweedFS, bucket: str, s3_conf: StorageConfig, tmp_path: Path
) -> None:
    for i in range(3):
        put_s3(seaweedfs, bucket, f"part-{i}", os.urandom(2 * MiB))
    request = raw_algorithm_request(*(s3(bucket, f"part-{i}") for i in range(3)))
    root = tmp_path / "data"
    lim = limits(max_file_bytes=4 * MiB, max_total_bytes=5 * MiB, parallelism=3)

    outcome, _ = await run(request, root, lim=lim, fetchers=default_fetchers(storage_config=s3_conf))

    assert (outcome.status, outcome.error_code) == (42, "disk_quota_exceeded")
    assert outcome.reason.startswith(f"disk quota exceeded: dataset {DATASET_DID} file ")
    assert outcome.reason.endswith(f"would exceed the environment's disk of {5 * MiB} bytes")
    inputs = root / "inputs" / did_dir(DATASET_DID)
    assert leftovers(inputs) == []
    assert sum(p.stat().st_size for p in inputs.iterdir()) <= 5 * MiB
    assert all(p.stat().st_size == 2 * MiB for p in inputs.iterdir())  # final names hold whole files only


class _LyingBudget(ByteBudget):
    """Reports plenty of room to the size check, as when other downloads charge right
    after it; records every charge attempt."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.attempts: list[int] = []

    @property
    def remaining(self) -> int:
        return 1 << 40

    def charge(self, n: int) -> None:
        self.attempts.append(n)
        super().charge(n)


async def test_s3_download_is_charged_per_chunk_and_stops_at_the_disk(
    seaweedfs: SeaweedFS, bucket: str, s3_conf: StorageConfig, tmp_path: Path
) -> None:
    put_s3(seaweedfs, bucket, "five.bin", os.urandom(5 * MiB))
    budget = _LyingBudget(2 * MiB + 1)
    dest = tmp_path / ".0.part"

    with pytest.raises(FetchError) as failed:
        await StorageFetcher(s3_conf).fetch(s3(bucket, "five.bin"), dest, limits(), budget)

    assert failed.value.code == "disk_quota_exceeded"
    # charged chunk by chunk, and the chunk that would overshoot was the last one read
    assert sum(budget.attempts[:-1]) <= budget.limit < sum(budget.attempts)
    assert sum(budget.attempts) < 5 * MiB
    assert budget.used == 0  # what the stopped download had charged is given back
    assert os.listdir(tmp_path) == []


async def test_cancelled_s3_download_leaves_no_file(
    seaweedfs: SeaweedFS, bucket: str, s3_conf: StorageConfig, tmp_path: Path
) -> None:
    put_s3(seaweedfs, bucket, "large.bin", os.urandom(32 * MiB))
    first_chunk = asyncio.Event()
    loop = asyncio.get_running_loop()

    class Watched(ByteBudget):
        def charge(self, n: int) -> None:
            super().charge(n)
            loop.call_soon_threadsafe(first_chunk.set)

    budget = Watched(1 << 30)
    fetch = asyncio.create_task(
        StorageFetcher(s3_conf).fetch(
            s3(bucket, "large.bin"), tmp_path / ".0.part", limits(max_file_bytes=1 << 30), budget
        )
    )
    await asyncio.wait_for(first_chunk.wait(), 60)
    fetch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fetch

    assert os.listdir(tmp_path) == []
    assert budget.used == 0


async def test_malformed_s3_location_is_invalid_source(s3_conf: StorageConfig, tmp_path: Path) -> None:
    request = raw_algorithm_request(FileSource(type="s3", url="s3://only-a-bucket"))

    outcome, _ = await run(request, tmp_path / "data", fetchers=default_fetchers(storage_config=s3_conf))

    assert (outcome.status, outcome.error_code) == (31, "invalid_source")
    assert outcome.reason.endswith("file 0: the S3 location is not s3://bucket/key")
    assert "only-a-bucket" not in outcome.reason


async def test_no_dataset_is_read_from_the_results_bucket(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    # Another job's result, where pod_publish put it: a dataset naming it must not stage it
    # (the provider refuses such a DDO at publishing; this is the check where it is used).
    results = seaweedfs.make_bucket("results")
    put_s3(seaweedfs, results, "victim-job/outputs/result.json", b'{"secret": 42}')
    config = s3_config(seaweedfs, results)
    root = tmp_path / "data"

    outcome, log = await run(
        raw_algorithm_request(s3(results, "victim-job/outputs/result.json")),
        root,
        fetchers=default_fetchers(storage_config=config),
    )

    assert (outcome.status, outcome.error_code) == (31, "invalid_source")
    assert outcome.reason.endswith("file 0: the S3 location is in the results bucket, which no dataset may name")
    assert results not in outcome.reason + log.text and "victim-job" not in outcome.reason + log.text
    inputs = root / "inputs" / did_dir(DATASET_DID)
    assert not inputs.exists() or os.listdir(inputs) == []  # not a byte of it staged


async def test_results_and_local_locations_never_stage(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    config = s3_config(seaweedfs, RESULTS_BUCKET)
    for number, (source, code) in enumerate(
        [
            (FileSource(type="results", url="local:victim-job/outputs/result.json"), "unknown_source_type"),
            (FileSource(type="url", url="local:victim-job/outputs/result.json"), "invalid_source"),
        ]
    ):
        root = tmp_path / f"data{number}"
        outcome, _ = await run(raw_algorithm_request(source), root, fetchers=default_fetchers(storage_config=config))
        assert (outcome.status, outcome.error_code) == (31, code), outcome.reason
        assert "victim-job" not in outcome.reason
        inputs = root / "inputs" / did_dir(DATASET_DID)
        assert not inputs.exists() or os.listdir(inputs) == []  # not a byte of it staged


async def test_s3_and_ipfs_are_unsupported_without_storage_configuration(tmp_path: Path) -> None:
    fetchers = default_fetchers(storage_config=StorageConfig(kind="local", local_root=tmp_path / "results"))
    assert set(fetchers) == {"url", "raw"}

    outcome, _ = await run(raw_algorithm_request(ipfs("bafkqaaa")), tmp_path / "data", fetchers=fetchers)

    assert (outcome.status, outcome.error_code) == (31, "unsupported_source_type")


# --------------------------------------------------------------------------- IPFS


async def test_ipfs_dataset_is_staged_and_verified(ipfs_conf: StorageConfig, tmp_path: Path) -> None:
    d0, d1 = os.urandom(MiB + 12345), b"small ipfs file\n"
    cid0, cid1 = put_ipfs(ipfs_conf, tmp_path, d0), put_ipfs(ipfs_conf, tmp_path, d1)
    request = raw_algorithm_request(ipfs(cid0, checksum=sha(d0)), ipfs(cid1))
    root = tmp_path / "data"

    outcome, _ = await run(request, root, fetchers=default_fetchers(storage_config=ipfs_conf))

    assert (outcome.status, outcome.reason) == (30, "")
    inputs = root / "inputs" / did_dir(DATASET_DID)
    assert (inputs / "0").read_bytes() == d0 and (inputs / "1").read_bytes() == d1
    assert leftovers(inputs) == []


def unseen_cid() -> str:
    """A valid CID of bytes no node has ever been given."""
    return str(cid_of_stream(io.BytesIO(os.urandom(64))))


async def test_unknown_cid_is_31_without_naming_it(ipfs_conf: StorageConfig, tmp_path: Path) -> None:
    known = put_ipfs(ipfs_conf, tmp_path, b"known")
    missing = unseen_cid()
    request = raw_algorithm_request(ipfs(known), ipfs(missing))
    root = tmp_path / "data"

    outcome, log = await run(request, root, fetchers=default_fetchers(storage_config=ipfs_conf))

    assert (outcome.status, outcome.error_code) == (31, "dataset_fetch_failed")
    assert (
        outcome.reason == f"data provisioning failed: dataset {DATASET_DID} file 1: the IPFS node does not have the CID"
    )
    assert missing not in outcome.reason + log.text
    assert leftovers(root / "inputs" / did_dir(DATASET_DID)) == []


async def test_invalid_cid_is_invalid_source(ipfs_conf: StorageConfig, tmp_path: Path) -> None:
    outcome, _ = await run(
        raw_algorithm_request(ipfs("not-a-cid")), tmp_path / "data", fetchers=default_fetchers(storage_config=ipfs_conf)
    )

    assert (outcome.status, outcome.error_code) == (31, "invalid_source")
    assert outcome.reason.endswith("file 0: the IPFS CID is not valid")


async def test_ipfs_file_over_the_per_file_limit_is_31(ipfs_conf: StorageConfig, tmp_path: Path) -> None:
    cid = put_ipfs(ipfs_conf, tmp_path, os.urandom(MiB + 1))
    root = tmp_path / "data"

    outcome, _ = await run(
        raw_algorithm_request(ipfs(cid)),
        root,
        lim=limits(max_file_bytes=MiB),
        fetchers=default_fetchers(storage_config=ipfs_conf),
    )

    assert (outcome.status, outcome.error_code) == (31, "file_too_large")
    assert os.listdir(root / "inputs" / did_dir(DATASET_DID)) == []


async def test_ipfs_files_over_the_disk_together_are_42(ipfs_conf: StorageConfig, tmp_path: Path) -> None:
    cids = [put_ipfs(ipfs_conf, tmp_path, os.urandom(MiB)) for _ in range(3)]
    root = tmp_path / "data"
    lim = limits(max_file_bytes=2 * MiB, max_total_bytes=2 * MiB + MiB // 2, parallelism=3)

    outcome, _ = await run(
        raw_algorithm_request(*(ipfs(c) for c in cids)),
        root,
        lim=lim,
        fetchers=default_fetchers(storage_config=ipfs_conf),
    )

    assert (outcome.status, outcome.error_code) == (42, "disk_quota_exceeded")
    inputs = root / "inputs" / did_dir(DATASET_DID)
    assert leftovers(inputs) == []
    assert all(p.stat().st_size == MiB for p in inputs.iterdir())
    assert len(list(inputs.iterdir())) <= 2


async def test_unreachable_ipfs_node_is_retried_then_31(tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nothing listens there
    conf = StorageConfig(kind="ipfs", ipfs_api=f"http://127.0.0.1:{port}")
    cid = unseen_cid()

    outcome, log = await run(
        raw_algorithm_request(ipfs(cid)),
        tmp_path / "data",
        lim=limits(max_retries=2),
        fetchers=default_fetchers(storage_config=conf),
    )

    assert outcome.status == 31
    assert outcome.reason == (
        f"data provisioning failed: dataset {DATASET_DID} file 0: "
        "the IPFS node could not be reached or failed (after 3 attempts)"
    )
    assert log.text.count("retry ") == 2
    assert str(port) not in outcome.reason + log.text


async def test_mixed_sources_share_one_disk_budget(
    seaweedfs: SeaweedFS, bucket: str, s3_conf: StorageConfig, ipfs_conf: StorageConfig, tmp_path: Path
) -> None:
    put_s3(seaweedfs, bucket, "one", os.urandom(MiB))
    cid = put_ipfs(ipfs_conf, tmp_path, os.urandom(MiB))
    both = StorageConfig(**{**s3_conf.__dict__, "ipfs_api": ipfs_conf.ipfs_api})
    root = tmp_path / "data"

    ok, _ = await run(
        raw_algorithm_request(s3(bucket, "one"), ipfs(cid)),
        root,
        lim=limits(max_total_bytes=3 * MiB),
        fetchers=default_fetchers(storage_config=both),
    )
    over, _ = await run(
        raw_algorithm_request(s3(bucket, "one"), ipfs(cid)),
        tmp_path / "again",
        lim=limits(max_total_bytes=MiB + MiB // 2, parallelism=1),
        fetchers=default_fetchers(storage_config=both),
    )

    assert ok.status == 30 and tree(root) >= {f"inputs/{did_dir(DATASET_DID)}/0", f"inputs/{did_dir(DATASET_DID)}/1"}
    assert (over.status, over.error_code) == (42, "disk_quota_exceeded")


# --------------------------------------------------------------------------- timeouts


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never says a word."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


async def test_silent_s3_server_hits_the_idle_timeout(silent_server: int, tmp_path: Path) -> None:
    conf = StorageConfig(
        kind="s3", s3_endpoint=f"127.0.0.1:{silent_server}", s3_access_key="k", s3_secret_key="s", s3_region="us-east-1"
    )
    lim = limits(idle_timeout_s=0.3, max_retries=1)

    outcome, _ = await asyncio.wait_for(
        run(
            raw_algorithm_request(s3("bucket", "key")),
            tmp_path / "data",
            lim=lim,
            fetchers=default_fetchers(storage_config=conf),
        ),
        120,
    )

    assert outcome.status == 31
    assert outcome.reason.endswith("file 0: the S3 server could not be reached or failed (after 2 attempts)")


async def test_silent_ipfs_node_hits_the_idle_timeout(silent_server: int, tmp_path: Path) -> None:
    conf = StorageConfig(kind="ipfs", ipfs_api=f"http://127.0.0.1:{silent_server}")
    lim = limits(idle_timeout_s=0.3, connect_timeout_s=0.3, max_retries=1)

    outcome, _ = await asyncio.wait_for(
        run(
            raw_algorithm_request(ipfs(unseen_cid())),
            tmp_path / "data",
            lim=lim,
            fetchers=default_fetchers(storage_config=conf),
        ),
        120,
    )

    assert outcome.status == 31
    assert outcome.reason.endswith("file 0: the IPFS node could not be reached or failed (after 2 attempts)")
