"""What pod_publish publishes, and how: the domain of the publish stage.

Everything under outputs/ (recursively, relative paths kept) and the
algorithm.log the engine wrote from the algorithm's stdout and stderr (in
the job's admin directory, where the algorithm cannot write) are the
consumer's results; the operator's admin logs are never among them. Only
regular files with one name are published, each opened through
plumbing.job_files: no symlink is followed on any component (it could point
at the publisher's files outside the job), no FIFO or device is read, no
hard link published; each one is logged and listed in the manifest's
skipped_paths. A file that cannot be uploaded after retries
fails the whole publication, and what was already uploaded is removed:
nothing is silently dropped, nothing half-published remains.

`publish_results()` is the whole stage: collect, upload, register the
results as an asset when the job asks for it (through the `Registrar` port,
which clients/provider.py implements), and say what to report: the
manifest, or status 62 with an error code and a message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import mimetypes
import os
import tarfile
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plumbing import job_files, storage
from plumbing.statuses import Status
from plumbing.storage import ObjectStore, StorageConfig, StorageError, StoredObject
from plumbing.storage.s3 import MIN_PART_SIZE

log = logging.getLogger("c2d.pod_publish")
OUTPUT, ALGORITHM_LOG = "RESULT_KIND_OUTPUT", "RESULT_KIND_ALGORITHM_LOG"
LOG_NAME = "algorithm.log"
# Files uploaded at once: overlaps hashing, reading and the network; each
# upload holds about one S3 part in memory (twice, briefly, while signing).
UPLOAD_WORKERS = 2
# S3 part size pod_publish uses (unless a file needs bigger parts): keeps the
# process well under 128 MiB with UPLOAD_WORKERS uploads, and SeaweedFS takes
# 8 MiB parts faster than 64 MiB ones.
PUBLISH_PART_SIZE = 8 << 20
MAX_PARTS = 10_000  # S3's limit per multipart upload


@dataclass(frozen=True)
class ResultSource:
    path: str  # relative to outputs/, or "algorithm.log"
    root: Path  # the directory `relpath` is opened under, never through a link (plumbing.job_files)
    relpath: str
    size: int  # as collected; the upload checks what it reads
    kind: str


@dataclass(frozen=True)
class Collected:
    sources: list[ResultSource]
    skipped: list[str] = field(default_factory=list)  # relative to outputs/, not published

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.sources)

    @property
    def largest_file(self) -> int:
        return max((s.size for s in self.sources), default=0)


class PublishFailed(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"results upload failed: {path}: {reason}")
        self.path = path


def _walk_outputs(data_root: Path) -> job_files.Walked:
    """Regular files under outputs/ and what was skipped, never following links (logged)."""
    walked = job_files.walk_files(data_root, "outputs")
    for rel, why in sorted(walked.skipped.items()):
        log.warning("skipped outputs/%s: %s; not followed, not published", rel, why)
    return walked


def collect(data_root: Path, pack: bool, scratch: Path, log_dir: Path) -> Collected:
    """The results: outputs/ of the job's /data, and the algorithm.log the engine wrote in
    `log_dir` (outside anything the algorithm could write)."""
    walked = _walk_outputs(data_root)
    sources: list[ResultSource]
    if pack:
        started = time.monotonic()
        archive = scratch / "outputs.tar"
        with tarfile.open(archive, "w") as tar:
            for rel, _size in walked.files:
                _add_to_tar(tar, data_root, rel)
        size = archive.stat().st_size
        log.info(
            "packed %d files into outputs.tar (%d bytes) in %.3f s", len(walked.files), size, time.monotonic() - started
        )
        sources = [ResultSource("outputs.tar", scratch, "outputs.tar", size, OUTPUT)]
    else:
        sources = [ResultSource(rel, data_root, f"outputs/{rel}", size, OUTPUT) for rel, size in walked.files]
    try:
        with job_files.open_file(log_dir, LOG_NAME) as f:
            sources.append(ResultSource(LOG_NAME, log_dir, LOG_NAME, os.fstat(f.fileno()).st_size, ALGORITHM_LOG))
    except FileNotFoundError:
        pass  # the algorithm never ran (or wrote nothing the engine kept)
    return Collected(sources, sorted(walked.skipped))


def _add_to_tar(tar: tarfile.TarFile, data_root: Path, rel: str) -> None:
    # from the descriptor, as a plain file entry: nothing of the name is trusted again
    with job_files.open_file(data_root, f"outputs/{rel}", single_link=True) as f:
        st = os.fstat(f.fileno())
        info = tarfile.TarInfo(rel)
        info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), 0o644
        tar.addfile(info, f)


def part_size_for(configured: int, largest_file: int) -> int:
    """The S3 part size for a publication whose largest file has this size."""
    needed = -(-largest_file // MAX_PARTS)
    needed = -(-needed // (1 << 20)) << 20  # whole MiB
    return max(min(configured, PUBLISH_PART_SIZE), needed, MIN_PART_SIZE)


def publish(
    store: ObjectStore, job_id: str, collected: Collected, retries: int = 3, workers: int = UPLOAD_WORKERS
) -> dict[str, Any]:
    """Uploads every source and returns the results manifest (proto JSON)."""
    sources = collected.sources
    stored: dict[int, StoredObject] = {}
    failed = threading.Event()  # stops queued uploads once one failed
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="upload") as pool:
        futures: list[Future[None]] = [
            pool.submit(_upload_one, store, job_id, index, source, retries, stored, failed)
            for index, source in enumerate(sources)
        ]
        wait(futures, return_when=FIRST_EXCEPTION)
        failure = next((f.exception() for f in futures if f.done() and f.exception()), None)
        if failure is not None:
            failed.set()
            wait(futures)  # let in-flight uploads end before cleaning up after them
            remove(store, [s.location for s in stored.values()])
            raise failure
    files = [
        {
            "index": index,
            "path": source.path,
            "size": str(stored[index].size),
            "sha256": stored[index].sha256,
            "kind": source.kind,
            "location": stored[index].location,
            "content_type": _content_type(source.path),
        }
        for index, source in enumerate(sources)
    ]
    manifest: dict[str, Any] = {
        "files": files,
        "storage": store.kind,
        "published_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    if collected.skipped:
        manifest["skipped_paths"] = collected.skipped
    return manifest


def remove(store: ObjectStore, locations: list[str]) -> None:
    """Deletes what a failed publication had uploaded (best effort, logged).

    Not on IPFS: a CID is its content's, and another job's live results can
    be the same content under the same single pin, which this pod cannot
    see. What it added stays pinned (within the job's disk quota) rather than
    let an algorithm that fails its own publication unpin another job's
    results."""
    if store.kind == "ipfs":
        if locations:
            log.info("left %d partial results pinned: other jobs' results may hold the same CIDs", len(locations))
        return
    for location in locations:
        try:
            store.delete(location)
            log.info("removed partial result %s", location)
        except StorageError as exc:
            log.warning("could not remove partial result %s: %s", location, exc)


def _content_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def _upload_one(
    store: ObjectStore,
    job_id: str,
    index: int,
    source: ResultSource,
    retries: int,
    stored: dict[int, StoredObject],
    failed: threading.Event,
) -> None:
    if failed.is_set():
        return
    prefix = "logs" if source.kind == ALGORITHM_LOG else "outputs"
    started = time.monotonic()
    result = _upload(store, f"{job_id}/{prefix}/{source.path}", source, _content_type(source.path), retries)
    stored[index] = result
    elapsed = time.monotonic() - started
    log.info(
        "uploaded result %d (%s, %d bytes) in %.3f s (%.1f MiB/s)",
        index,
        source.path,
        result.size,
        elapsed,
        result.size / (1 << 20) / max(elapsed, 1e-6),
    )


def _upload(store: ObjectStore, key: str, source: ResultSource, content_type: str, retries: int) -> StoredObject:
    for attempt in range(retries + 1):
        try:
            with job_files.open_file(source.root, source.relpath, single_link=source.kind == OUTPUT) as f:
                return store.put_file(key, job_files.fd_path(f), content_type)
        except StorageError as exc:
            if not exc.transient or attempt == retries:
                raise PublishFailed(source.path, str(exc)) from None
            log.info("upload of %s failed (%s); retry %d", source.path, exc, attempt + 1)
            time.sleep(0.2 * 2**attempt)
        except OSError as exc:  # job_files.NotAllowed too: replaced by a link since it was collected
            raise PublishFailed(source.path, exc.strerror or str(exc)) from None
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- the whole stage


class AssetRegistrationFailed(Exception):
    """The provider did not register the results as an asset (a `Registrar` raises it)."""


# Every failure of this stage is Ocean Node's "results upload failed".
FAILED_STATUS = Status.RESULTS_UPLOAD_FAILED

# Registers a results manifest (proto JSON) as the consumer's new asset; returns its DID.
Registrar = Callable[[dict[str, Any]], Awaitable[str]]


@dataclass(frozen=True)
class PublishOutcome:
    manifest: dict[str, Any] | None  # the results manifest (proto JSON); None when the stage failed
    results_did: str = ""  # the results asset's DID, when one was registered
    error_code: str = ""  # results_upload_failed | results_asset_failed
    message: str = ""  # why it failed, for the job's owner

    @property
    def ok(self) -> bool:
        return self.manifest is not None


def _failed(error_code: str, message: str) -> PublishOutcome:
    log.error("%s", message)
    return PublishOutcome(None, error_code=error_code, message=message)


async def publish_results(
    data_root: Path,
    log_dir: Path,
    job_id: str,
    pack: bool,
    config: StorageConfig,
    register: Registrar | None = None,
) -> PublishOutcome:
    """Publishes the job's results to the configured storage and, with `register`, as an asset.

    All or nothing: when registering fails, what was uploaded is removed."""
    store: ObjectStore | None = None
    manifest: dict[str, Any] | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="c2d-publish-") as scratch:
            step = time.monotonic()
            collected = collect(data_root, pack, Path(scratch), log_dir)
            config = dataclasses.replace(config, part_size=part_size_for(config.part_size, collected.largest_file))
            store = storage.open_store(config)
            log.info(
                "collected %d files (%d bytes, %d skipped) in %.3f s; publishing to %s storage",
                len(collected.sources),
                collected.total_bytes,
                len(collected.skipped),
                time.monotonic() - step,
                store.kind,
            )
            step = time.monotonic()
            manifest = await asyncio.to_thread(publish, store, job_id, collected)
            log.info("uploaded %d files in %.3f s", len(manifest["files"]), time.monotonic() - step)
        results_did = ""
        if register is not None:
            step = time.monotonic()
            results_did = await register(manifest)
            log.info("registered the results as asset %s in %.3f s", results_did, time.monotonic() - step)
    except AssetRegistrationFailed as exc:
        # the job fails, so nothing may stay behind in storage
        assert store is not None and manifest is not None  # registering follows the upload
        await asyncio.to_thread(remove, store, [f["location"] for f in manifest["files"]])
        return _failed(
            "results_asset_failed", f"results upload failed: registering the results as an asset failed: {exc}"
        )
    except PublishFailed as exc:
        return _failed("results_upload_failed", str(exc))
    except StorageError as exc:
        return _failed("results_upload_failed", f"results upload failed: {exc}")
    return PublishOutcome(manifest, results_did)
