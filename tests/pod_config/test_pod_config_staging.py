"""stage(): layout, ordering, verification, limits and outcomes, against a real HTTP server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from plumbing.assets import files_checksum
from plumbing.fetching import ByteBudget, FetchError, FileSource, StagingLimits, default_fetchers
from services.pod_config.domain.staging import StagingRequest, stage
from tests.pod_config.helpers import (
    ALGO_DID,
    DATASET2_DID,
    DATASET_DID,
    asset,
    ddo,
    did_dir,
    limits,
    new_log,
    part_files,
    run,
    tree,
    url,
)
from tests.pod_config.httpserver import FileServer


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- happy path


async def test_happy_path_lays_out_data_exactly(server: FileServer, tmp_path: Path) -> None:
    d0, d1, d2 = os.urandom(300_000), b"second file of dataset one", os.urandom(70_000)
    a0, a1 = b"#!/bin/sh\necho hello\n", b"helper = 1\n"
    for name, data in {"d0": d0, "d1": d1, "d2": d2, "a0": a0, "a1": a1}.items():
        server.add(name, data)
    request = StagingRequest(
        datasets=(
            asset(DATASET_DID, url(server.url("/file/d0"), checksum=sha(d0)), url(server.url("/file/d1"))),
            asset(DATASET2_DID, url(server.url("/file/d2"), checksum=sha(d2))),
        ),
        algorithm=asset(
            ALGO_DID, url(server.url("/file/a0"), checksum=sha(a0)), url(server.url("/file/a1")), kind="algorithm"
        ),
        algorithm_files_checksum=files_checksum([sha(a0), sha(a1)]),
        algo_custom_data={"epochs": 3, "name": "x"},
    )
    root = tmp_path / "data"

    outcome, _ = await run(request, root)

    assert (outcome.status, outcome.error_code, outcome.reason) == (30, "", "")
    a, c, b = did_dir(DATASET_DID), did_dir(DATASET2_DID), did_dir(ALGO_DID)
    assert tree(root) == {
        "inputs/", f"inputs/{a}/", f"inputs/{a}/0", f"inputs/{a}/1", f"inputs/{c}/", f"inputs/{c}/0",
        "inputs/algoCustomData.json",
        "transformations/", "transformations/algorithm", "transformations/1",
        "ddos/", f"ddos/{a}", f"ddos/{c}", f"ddos/{b}",
        "outputs/", "logs/",
    }  # fmt: skip
    assert (root / f"inputs/{a}/0").read_bytes() == d0
    assert (root / f"inputs/{a}/1").read_bytes() == d1
    assert (root / f"inputs/{c}/0").read_bytes() == d2
    assert (root / "transformations/algorithm").read_bytes() == a0
    assert (root / "transformations/1").read_bytes() == a1
    assert stat.S_IMODE((root / "transformations/algorithm").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "transformations/1").stat().st_mode) == 0o644
    assert json.loads((root / "inputs/algoCustomData.json").read_text()) == {"epochs": 3, "name": "x"}
    assert (root / f"ddos/{a}").read_text() == ddo(DATASET_DID)
    assert (root / f"ddos/{b}").read_text() == ddo(ALGO_DID, "algorithm")
    by_path = {f.path: f for f in outcome.files}
    assert len(outcome.files) == 5
    for path, data in [
        (f"inputs/{a}/0", d0), (f"inputs/{a}/1", d1), (f"inputs/{c}/0", d2),
        ("transformations/algorithm", a0), ("transformations/1", a1),
    ]:  # fmt: skip
        staged = by_path[root / path]
        assert (staged.size, staged.sha256) == (len(data), sha(data))
    assert {(f.did, f.index) for f in outcome.files} == {
        (DATASET_DID, 0),
        (DATASET_DID, 1),
        (DATASET2_DID, 0),
        (ALGO_DID, 0),
        (ALGO_DID, 1),
    }


async def test_raw_algorithm_becomes_transformations_algorithm(server: FileServer, tmp_path: Path) -> None:
    server.add("d0", b"rows")
    code = "import os\nprint(os.listdir('/data/inputs'))\n"
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/file/d0"))),), algorithm=None, raw_algorithm=code
    )

    outcome, _ = await run(request, tmp_path)

    assert (outcome.status, outcome.error_code, outcome.reason) == (30, "", "")
    assert (tmp_path / "transformations/algorithm").read_text() == code
    assert stat.S_IMODE((tmp_path / "transformations/algorithm").stat().st_mode) == 0o755
    assert json.loads((tmp_path / "inputs/algoCustomData.json").read_text()) == {}
    assert tree(tmp_path / "ddos") == {did_dir(DATASET_DID)}
    raw = [f for f in outcome.files if f.did == ""]
    assert len(raw) == 1 and raw[0].sha256 == sha(code.encode())


async def test_files_download_in_parallel_bounded_by_parallelism(server: FileServer, tmp_path: Path) -> None:
    for i in range(6):
        server.add(f"p{i}", f"part {i}".encode())
    files = [url(server.url(f"/file/p{i}?delay=0.3")) for i in range(6)]
    request = StagingRequest(datasets=(asset(DATASET_DID, *files),), algorithm=None, raw_algorithm="x")

    outcome, _ = await run(request, tmp_path / "three", limits(parallelism=3))
    assert (outcome.status, outcome.reason) == (30, "")
    assert server.max_in_flight == 3

    server.max_in_flight = 0
    outcome, _ = await run(request, tmp_path / "one", limits(parallelism=1))
    assert (outcome.status, outcome.reason) == (30, "")
    assert server.max_in_flight == 1
    for i in range(6):
        assert (tmp_path / "three/inputs" / did_dir(DATASET_DID) / str(i)).read_bytes() == f"part {i}".encode()


# --------------------------------------------------------------------------- ordering and failures


async def test_dataset_failure_is_31_and_algorithm_is_not_fetched(server: FileServer, tmp_path: Path) -> None:
    server.add("d0", b"good")
    server.add("algo", b"#!/bin/sh\n")
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/file/d0")), url(server.url("/status/404"))),),
        algorithm=asset(ALGO_DID, url(server.url("/file/algo")), kind="algorithm"),
    )

    outcome, _ = await run(request, tmp_path)

    assert outcome.status == 31
    assert outcome.error_code == "dataset_fetch_failed"
    assert outcome.reason == f"data provisioning failed: dataset {DATASET_DID} file 1: HTTP 404"
    assert server.counts["/file/algo"] == 0
    assert server.counts["/status/404"] == 1  # a 404 is not retried
    assert not (tmp_path / "transformations/algorithm").exists()
    assert not (tmp_path / "ddos" / did_dir(ALGO_DID)).exists()


async def test_algorithm_fetch_failure_is_32(server: FileServer, tmp_path: Path) -> None:
    server.add("d0", b"good")
    server.add("a0", b"#!/bin/sh\n")
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/file/d0"))),),
        algorithm=asset(ALGO_DID, url(server.url("/file/a0")), url(server.url("/status/403")), kind="algorithm"),
    )

    outcome, _ = await run(request, tmp_path)

    assert outcome.status == 32
    assert outcome.error_code == "algorithm_fetch_failed"
    assert outcome.reason == f"algorithm provisioning failed: algorithm {ALGO_DID} file 1: HTTP 403"
    assert server.counts["/status/403"] == 1
    assert (tmp_path / "inputs" / did_dir(DATASET_DID) / "0").read_bytes() == b"good"


async def test_dataset_checksum_mismatch_is_31_and_leaves_no_file(server: FileServer, tmp_path: Path) -> None:
    server.add("d0", b"the real bytes")
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/file/d0"), checksum=sha(b"other bytes"))),),
        algorithm=None,
        raw_algorithm="x",
    )

    outcome, _ = await run(request, tmp_path)

    assert (outcome.status, outcome.error_code) == (31, "checksum_mismatch")
    assert outcome.reason == f"data provisioning failed: checksum mismatch ({DATASET_DID} file 0)"
    assert list((tmp_path / "inputs" / did_dir(DATASET_DID)).iterdir()) == []


async def test_algorithm_file_checksum_mismatch_is_32(server: FileServer, tmp_path: Path) -> None:
    server.add("d0", b"data")
    server.add("a0", b"#!/bin/sh\necho tampered\n")
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/file/d0"))),),
        algorithm=asset(ALGO_DID, url(server.url("/file/a0"), checksum=sha(b"#!/bin/sh\n")), kind="algorithm"),
    )

    outcome, _ = await run(request, tmp_path)

    assert (outcome.status, outcome.error_code) == (32, "checksum_mismatch")
    assert outcome.reason == f"algorithm provisioning failed: checksum mismatch ({ALGO_DID} file 0)"
    assert not (tmp_path / "transformations/algorithm").exists()
    assert part_files(tmp_path) == []


async def test_trusted_files_checksum_mismatch_is_32_and_removes_algorithm(server: FileServer, tmp_path: Path) -> None:
    server.add("d0", b"data")
    server.add("a0", b"#!/bin/sh\n")
    server.add("a1", b"lib")
    trusted = files_checksum([sha(b"#!/bin/sh\n"), sha(b"a different lib")])
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/file/d0"))),),
        algorithm=asset(ALGO_DID, url(server.url("/file/a0")), url(server.url("/file/a1")), kind="algorithm"),
        algorithm_files_checksum=trusted,
    )

    outcome, _ = await run(request, tmp_path)

    assert (outcome.status, outcome.error_code) == (32, "checksum_mismatch")
    assert outcome.reason.startswith(f"algorithm provisioning failed: checksum mismatch ({ALGO_DID} files 0..1")
    assert list((tmp_path / "transformations").iterdir()) == []  # an untrusted algorithm must not stay runnable
    assert all(f.did != ALGO_DID for f in outcome.files)


# --------------------------------------------------------------------------- limits


async def test_streamed_file_over_per_file_limit_is_refused(server: FileServer, tmp_path: Path) -> None:
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/huge"))),), algorithm=None, raw_algorithm="x"
    )

    outcome, _ = await run(request, tmp_path, limits(max_file_bytes=1_000_000))

    assert (outcome.status, outcome.error_code) == (31, "file_too_large")
    assert outcome.reason == (
        f"data provisioning failed: dataset {DATASET_DID} file 0: the file is over the limit of 1000000 bytes"
    )
    # The download stopped near the limit instead of reading the server's whole GiB.
    assert server.body_bytes_sent["/huge"] < 64 * 1024 * 1024
    assert list((tmp_path / "inputs" / did_dir(DATASET_DID)).iterdir()) == []


async def test_declared_content_length_over_limit_is_refused_early(server: FileServer, tmp_path: Path) -> None:
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/huge-declared"))),), algorithm=None, raw_algorithm="x"
    )
    loop = asyncio.get_running_loop()
    started = loop.time()

    outcome, _ = await run(request, tmp_path, limits(max_file_bytes=1_000_000, idle_timeout_s=30))

    assert loop.time() - started < 5  # refused on the headers, not after a 30 s idle timeout
    assert (outcome.status, outcome.error_code) == (31, "file_too_large")
    assert outcome.reason == (
        f"data provisioning failed: dataset {DATASET_DID} file 0: "
        "the file is 10737418240 bytes, over the limit of 1000000 bytes"
    )


async def test_raw_algorithm_over_per_file_limit_is_32(server: FileServer, tmp_path: Path) -> None:
    server.add("d0", b"data")
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/file/d0"))),), algorithm=None, raw_algorithm="x" * 2000
    )

    outcome, _ = await run(request, tmp_path, limits(max_file_bytes=1000))

    assert (outcome.status, outcome.error_code) == (32, "file_too_large")
    assert (
        outcome.reason
        == "algorithm provisioning failed: raw algorithm file 0: the file is 2000 bytes, over the limit of 1000 bytes"
    )
    assert not (tmp_path / "transformations/algorithm").exists()


async def test_concurrent_downloads_cannot_overshoot_the_disk(server: FileServer, tmp_path: Path) -> None:
    # Three 400 kB files without Content-Length streamed side by side; the disk holds 1 MB.
    for i in range(3):
        server.add(f"q{i}", os.urandom(400_000))
    files = [url(server.url(f"/chunked/q{i}?chunk=16384&pause=0.005")) for i in range(3)]
    request = StagingRequest(datasets=(asset(DATASET_DID, *files),), algorithm=None, raw_algorithm="x")

    outcome, _ = await run(request, tmp_path, limits(max_total_bytes=1_000_000))

    assert outcome.status == 42
    assert outcome.error_code == "disk_quota_exceeded"
    assert outcome.reason.startswith(f"disk quota exceeded: dataset {DATASET_DID} file ")
    assert outcome.reason.endswith("the job's files would exceed the environment's disk of 1000000 bytes")
    assert server.max_in_flight == 3  # they really were concurrent
    # Bytes are charged as they stream: the download that crossed the line stopped
    # there and the others were cancelled, instead of all three finishing first.
    assert sum(server.body_bytes_sent.values()) < 1_150_000
    on_disk = [p.stat().st_size for p in (tmp_path / "inputs" / did_dir(DATASET_DID)).iterdir()]
    assert sum(on_disk) <= 1_000_000
    assert part_files(tmp_path) == []


async def test_disk_budget_spans_datasets_and_algorithm(server: FileServer, tmp_path: Path) -> None:
    server.add("d0", b"d" * 600)
    server.add("a0", b"a" * 600)
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/file/d0"))),),
        algorithm=asset(ALGO_DID, url(server.url("/file/a0")), kind="algorithm"),
    )

    outcome, _ = await run(request, tmp_path, limits(max_total_bytes=1000))

    assert (outcome.status, outcome.error_code) == (42, "disk_quota_exceeded")
    assert outcome.reason == (
        f"disk quota exceeded: algorithm {ALGO_DID} file 0: "
        "the file's 600 bytes would exceed the environment's disk of 1000 bytes"
    )
    assert server.counts["/file/a0"] == 1  # refused on its declared length, before writing it


def test_byte_budget_refuses_the_byte_past_the_limit() -> None:
    budget = ByteBudget(10)
    budget.charge(6)
    budget.charge(4)
    with pytest.raises(FetchError) as err:
        budget.charge(1)
    assert err.value.code == "disk_quota_exceeded"
    budget.refund(4)
    assert budget.remaining == 4


# --------------------------------------------------------------------------- source types and fetchers


async def test_unknown_source_type_is_refused_before_any_fetch(server: FileServer, tmp_path: Path) -> None:
    server.add("d0", b"data")
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/file/d0")), FileSource(type="ftp", url="ftp://x/y")),),
        algorithm=None,
        raw_algorithm="x",
    )

    outcome, _ = await run(request, tmp_path)

    assert (outcome.status, outcome.error_code) == (31, "unknown_source_type")
    assert outcome.reason == f"data provisioning failed: dataset {DATASET_DID} file 1: unknown source type 'ftp'"
    assert server.counts["/file/d0"] == 0


async def test_unknown_algorithm_source_type_is_32(server: FileServer, tmp_path: Path) -> None:
    server.add("d0", b"data")
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/file/d0"))),),
        algorithm=asset(ALGO_DID, FileSource(type="gopher"), kind="algorithm"),
    )

    outcome, _ = await run(request, tmp_path)

    assert (outcome.status, outcome.error_code) == (32, "unknown_source_type")
    assert outcome.reason == f"algorithm provisioning failed: algorithm {ALGO_DID} file 0: unknown source type 'gopher'"


async def test_known_source_type_without_fetcher_is_unsupported(tmp_path: Path) -> None:
    request = StagingRequest(
        datasets=(asset(DATASET_DID, FileSource(type="s3", url="s3://bucket/key")),), algorithm=None, raw_algorithm="x"
    )

    outcome, _ = await run(request, tmp_path)

    assert (outcome.status, outcome.error_code) == (31, "unsupported_source_type")
    assert outcome.reason == (
        f"data provisioning failed: dataset {DATASET_DID} file 0: source type 's3' is not supported by this environment"
    )


class StandInFetcher:
    """A stand-in for the s3/ipfs fetchers another helper writes: the orchestration
    must treat any Fetcher the same way."""

    def __init__(self, payload: bytes = b"", error: FetchError | None = None) -> None:
        self.payload = payload
        self.error = error
        self.calls = 0

    async def fetch(self, source: FileSource, dest: Path, limits: StagingLimits, budget: ByteBudget) -> tuple[int, str]:
        self.calls += 1
        if self.error:
            dest.write_bytes(self.payload[:3])  # a partial write the orchestration must clean up
            raise self.error
        budget.charge(len(self.payload))
        dest.write_bytes(self.payload)
        return len(self.payload), sha(self.payload)


async def test_registered_fetchers_plug_in(tmp_path: Path) -> None:
    s3 = StandInFetcher(b"object bytes")
    fetchers = {**default_fetchers(), "s3": s3}
    request = StagingRequest(
        datasets=(asset(DATASET_DID, FileSource(type="s3", url="s3://bucket/key", checksum=sha(b"object bytes"))),),
        algorithm=None,
        raw_algorithm="x",
    )

    outcome, _ = await run(request, tmp_path, fetchers=fetchers)

    assert (outcome.status, outcome.reason) == (30, "")
    assert (tmp_path / "inputs" / did_dir(DATASET_DID) / "0").read_bytes() == b"object bytes"


async def test_fetcher_error_message_reaches_the_reason(tmp_path: Path) -> None:
    ipfs = StandInFetcher(b"partial", FetchError("cid_not_found", "the CID is not available"))
    request = StagingRequest(
        datasets=(),
        algorithm=asset(ALGO_DID, FileSource(type="ipfs", cid="bafy..."), kind="algorithm"),
    )

    outcome, _ = await run(request, tmp_path, fetchers={**default_fetchers(), "ipfs": ipfs})

    assert (outcome.status, outcome.error_code) == (32, "algorithm_fetch_failed")
    assert outcome.reason == f"algorithm provisioning failed: algorithm {ALGO_DID} file 0: the CID is not available"
    assert list((tmp_path / "transformations").iterdir()) == []


# --------------------------------------------------------------------------- request validation


@pytest.mark.parametrize(
    ("bad_did", "code"),
    [
        ("did:op:../../etc", "path_traversal"),
        ("/etc/passwd", "path_traversal"),
        ("did:op:" + "a" * 60 + "/../", "path_traversal"),
        ("did:op:" + "a" * 63 + "\0", "path_traversal"),
        ("..", "path_traversal"),
        ("did:op:" + "A" * 64, "invalid_did"),
        ("did:op:" + "a" * 63, "invalid_did"),
        ("did:eth:" + "a" * 64, "invalid_did"),
    ],
)
async def test_bad_dataset_did_is_refused(server: FileServer, tmp_path: Path, bad_did: str, code: str) -> None:
    server.add("d0", b"data")
    root = tmp_path / "data"
    request = StagingRequest(datasets=(asset(bad_did, url(server.url("/file/d0"))),), algorithm=None, raw_algorithm="x")

    outcome, _ = await run(request, root)

    assert (outcome.status, outcome.error_code) == (31, code)
    assert outcome.reason.startswith("data provisioning failed: the dataset DID ")
    assert server.counts["/file/d0"] == 0
    assert set(p.name for p in tmp_path.iterdir()) <= {"data"}  # nothing written beside the root
    assert not (tmp_path / "etc").exists()


async def test_bad_algorithm_did_is_32(server: FileServer, tmp_path: Path) -> None:
    server.add("d0", b"data")
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/file/d0"))),),
        algorithm=asset("did:op:../../../tmp/evil", url(server.url("/file/d0")), kind="algorithm"),
    )

    outcome, _ = await run(request, tmp_path / "data")

    assert (outcome.status, outcome.error_code) == (32, "path_traversal")
    assert outcome.reason == (
        "algorithm provisioning failed: the algorithm DID 'did:op:../../../tmp/evil' would escape the workspace"
    )
    assert server.counts["/file/d0"] == 0


async def test_symlinked_workspace_directory_is_refused(server: FileServer, tmp_path: Path) -> None:
    server.add("d0", b"data")
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "data"
    root.mkdir()
    (root / "inputs").symlink_to(outside)
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/file/d0"))),), algorithm=None, raw_algorithm="x"
    )

    outcome, _ = await run(request, root)

    assert (outcome.status, outcome.error_code) == (31, "path_traversal")
    assert outcome.reason == "data provisioning failed: the workspace directory inputs leads outside the workspace"
    assert list(outside.iterdir()) == []


async def test_request_without_algorithm_or_with_both_is_32(tmp_path: Path) -> None:
    neither = StagingRequest(datasets=(), algorithm=None)
    both = StagingRequest(datasets=(), algorithm=asset(ALGO_DID, kind="algorithm"), raw_algorithm="print(1)")

    out1, _ = await run(neither, tmp_path / "a")
    out2, _ = await run(both, tmp_path / "b")

    assert (out1.status, out1.error_code, out1.reason) == (
        32,
        "invalid_request",
        "algorithm provisioning failed: the job has no algorithm",
    )
    assert (out2.status, out2.error_code, out2.reason) == (
        32,
        "invalid_request",
        "algorithm provisioning failed: the job has both a registered and a raw algorithm",
    )


async def test_duplicate_dataset_is_31(tmp_path: Path) -> None:
    request = StagingRequest(datasets=(asset(DATASET_DID), asset(DATASET_DID)), algorithm=None, raw_algorithm="x")

    outcome, _ = await run(request, tmp_path)

    assert (outcome.status, outcome.error_code) == (31, "invalid_request")
    assert outcome.reason == f"data provisioning failed: dataset {DATASET_DID} is listed twice"


# --------------------------------------------------------------------------- no half-written files


async def test_failure_removes_other_partial_downloads(server: FileServer, tmp_path: Path) -> None:
    # File 0 is mid-stream (slowly) when file 1 fails: file 0 must be cancelled and removed.
    server.add("big", os.urandom(2_000_000))
    server.add("small", b"not what the DDO promised")
    request = StagingRequest(
        datasets=(
            asset(
                DATASET_DID,
                url(server.url("/chunked/big?chunk=8192&pause=0.02")),
                url(server.url("/file/small?delay=0.3"), checksum=sha(b"something else")),
            ),
        ),
        algorithm=None,
        raw_algorithm="x",
    )

    outcome, _ = await run(request, tmp_path)

    assert (outcome.status, outcome.error_code) == (31, "checksum_mismatch")
    assert outcome.reason == f"data provisioning failed: checksum mismatch ({DATASET_DID} file 1)"
    assert 0 < server.body_bytes_sent["/chunked/big"] < 2_000_000  # file 0 was interrupted mid-way
    assert list((tmp_path / "inputs" / did_dir(DATASET_DID)).iterdir()) == []


async def test_cancelling_stage_removes_partial_files(server: FileServer, tmp_path: Path) -> None:
    server.add("big", os.urandom(2_000_000))
    request = StagingRequest(
        datasets=(asset(DATASET_DID, url(server.url("/chunked/big?chunk=8192&pause=0.02"))),),
        algorithm=None,
        raw_algorithm="x",
    )
    log, _ = new_log()
    task = asyncio.create_task(stage(request, tmp_path, limits(), default_fetchers(), log))
    directory = tmp_path / "inputs" / did_dir(DATASET_DID)
    for _ in range(200):  # wait until the download is visibly under way
        await asyncio.sleep(0.02)
        if part_files(tmp_path) and part_files(tmp_path)[0].stat().st_size > 0:
            break
    assert [p.name for p in directory.iterdir()] == [".0.part"]

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert list(directory.iterdir()) == []
