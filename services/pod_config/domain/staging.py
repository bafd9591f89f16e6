"""Staging a compute job's /data: the domain of pod_config.

`stage()` lays out the job's workspace (see DESIGN.md, "Inside a job: the
/data layout"), fetches every dataset file and then the algorithm's files
through pluggable `Fetcher`s, verifies sizes and checksums, and returns a
`StagingOutcome` carrying an Ocean status code (30, 31, 32 or 42, from
plumbing/statuses.py), a stable snake_case error code and a reason a person
can act on. DIDs and checksums are read as plumbing/assets.py says, the code
the provider checks them with.

Secrets: file locations (URLs, hosts, paths, bucket keys) and header values
belong to the publisher. Neither reasons nor log lines ever contain them;
they name the asset's DID and the file's index instead.

Error codes (`StagingOutcome.error_code`):
  dataset_fetch_failed / algorithm_fetch_failed   HTTP error, timeout, connection failure
  checksum_mismatch        a file's sha256 or the trusted-algorithm filesChecksum differs
  file_too_large           one file is over `max_file_bytes`
  disk_quota_exceeded      all files together are over `max_total_bytes` (or the disk is full)
  too_many_redirects       more than `max_redirects` HTTP redirects
  ssrf_refused             the file's address is on a refused network
  unknown_source_type      a file source type c2d does not know
  unsupported_source_type  a known source type this environment has no fetcher for
  invalid_source           a file source that cannot be fetched as given (e.g. not an http(s) URL,
                           a checksum that is not 64 lowercase hex digits)
  invalid_did              a DID that is not did:op: + 64 lowercase hex
  path_traversal           a name that would escape the workspace
  invalid_request          the request itself is inconsistent (no algorithm, both kinds, duplicates,
                           a trusted-algorithm filesChecksum that is not 64 lowercase hex digits)
  write_failed             the workspace could not be written
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plumbing import assets, fetching
from plumbing.fetching import (
    ByteBudget,
    Fetcher,
    FetchError,
    FileContext,
    FileSource,
    StagingLimits,
)
from plumbing.statuses import Status

__all__ = ["AssetToStage", "StagedFile", "StagingOutcome", "StagingRequest", "stage"]


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class AssetToStage:
    did: str  # "did:op:<64 hex>"
    files: tuple[FileSource, ...]
    ddo_json: str  # written verbatim to ddos/<did without did:op:>


@dataclass(frozen=True)
class StagingRequest:
    datasets: tuple[AssetToStage, ...]  # first is the main dataset, then additional ones
    algorithm: AssetToStage | None  # a registered algorithm asset, or None when raw
    raw_algorithm: str = ""  # the consumer's raw code (exclusive with algorithm)
    algorithm_files_checksum: str = ""  # the dataset's trusted-algorithm filesChecksum; "" = not pinned
    algo_custom_data: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class StagedFile:
    did: str  # "" for the consumer's raw algorithm
    index: int
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class StagingOutcome:
    status: Status  # 30 success, 31 data failed, 32 algorithm failed, 42 disk quota exceeded
    error_code: str  # "" on success
    reason: str  # names the DID and file index and the cause, never the location
    files: tuple[StagedFile, ...]  # on failure: the files fully staged before it

    @property
    def ok(self) -> bool:
        return self.status == Status.PROVISIONING_SUCCESS


# --------------------------------------------------------------------------- staging


class _Failure(Exception):
    def __init__(self, status: Status, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class _Role:
    name: str  # "dataset" | "algorithm"
    status: Status
    prefix: str  # how a reason starts
    fetch_failed_code: str


_DATASET = _Role("dataset", Status.DATA_PROVISIONING_FAILED, "data provisioning failed", "dataset_fetch_failed")
_ALGORITHM = _Role(
    "algorithm", Status.ALGORITHM_PROVISIONING_FAILED, "algorithm provisioning failed", "algorithm_fetch_failed"
)

# Codes a fetcher reports that are shown as such; anything else is a fetch failure.
_PASS_THROUGH_CODES = frozenset(
    {
        "checksum_mismatch",
        "file_too_large",
        "disk_quota_exceeded",
        "too_many_redirects",
        "ssrf_refused",
        "invalid_source",
        "unknown_source_type",
        "unsupported_source_type",
        "path_traversal",
        "write_failed",
    }
)


@dataclass(frozen=True)
class _FileJob:
    role: _Role
    did: str  # "" for raw
    index: int
    source: FileSource
    directory: Path
    name: str  # final file name inside `directory`
    mode: int

    @property
    def label(self) -> str:
        who = f"{self.role.name} {self.did}" if self.did else "raw algorithm"
        return f"{who} file {self.index}"

    @property
    def final(self) -> Path:
        return self.directory / self.name

    @property
    def part(self) -> Path:
        return self.directory / f".{self.name}.part"


def _fail(role: _Role, code: str, detail: str) -> _Failure:
    status = Status.DISK_QUOTA_EXCEEDED if code == "disk_quota_exceeded" else role.status
    prefix = "disk quota exceeded" if status == Status.DISK_QUOTA_EXCEEDED else role.prefix
    return _Failure(status, code, f"{prefix}: {detail}")


def _did_dirname(did: str, role: _Role) -> str:
    """The DID's directory name; refuses anything that could name another path."""
    if not isinstance(did, str):
        raise _fail(role, "invalid_did", f"the {role.name} DID is not a string")
    shown = repr(did[:80])
    if "\0" in did or "/" in did or "\\" in did or ".." in did or did.startswith(("~", ".")):
        raise _fail(role, "path_traversal", f"the {role.name} DID {shown} would escape the workspace")
    if not assets.is_did(did):
        raise _fail(role, "invalid_did", f"the {role.name} DID {shown} is not {assets.DID_SYNTAX}")
    return assets.did_id(did)


def _inside(root: Path, *parts: str) -> Path:
    """root/parts, refusing any part that is empty, '.', '..', absolute or has a separator or NUL."""
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\\" in part or "\0" in part or os.path.isabs(part):
            raise ValueError("unsafe path component")
    return root.joinpath(*parts)


def _ensure_dir(root: Path, rel: Sequence[str], role: _Role) -> Path:
    path = _inside(root, *rel)
    path.mkdir(parents=True, exist_ok=True)
    # A pre-existing symlink (e.g. inputs -> /etc) must not redirect writes.
    if not path.resolve().is_relative_to(root.resolve()):
        raise _fail(role, "path_traversal", f"the workspace directory {'/'.join(rel)} leads outside the workspace")
    return path


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _source_problem(source: FileSource, fetchers: Mapping[str, Fetcher]) -> tuple[str, str] | None:
    if source.type not in assets.FILE_SOURCE_TYPES:
        return "unknown_source_type", f"unknown source type {source.type[:40]!r}"
    if source.type not in fetchers:
        return "unsupported_source_type", f"source type {source.type!r} is not supported by this environment"
    if source.checksum and not assets.is_sha256_hex(source.checksum):
        return "invalid_source", f"its checksum is not a sha256 digest ({assets.SHA256_SYNTAX})"
    return None


class _Stager:
    def __init__(
        self,
        request: StagingRequest,
        root: Path,
        limits: StagingLimits,
        fetchers: Mapping[str, Fetcher],
        log: logging.Logger,
    ) -> None:
        self.request = request
        self.root = root
        self.limits = limits
        self.fetchers = fetchers
        self.log = log
        self.budget = ByteBudget(limits.max_total_bytes)
        self.semaphore = asyncio.Semaphore(limits.parallelism)
        self.staged: list[StagedFile] = []

    # -- planning: everything is validated before a single byte is fetched

    def _plan_asset(self, asset: AssetToStage, role: _Role) -> tuple[str, list[tuple[int, FileSource]]]:
        name = _did_dirname(asset.did, role)
        files = list(enumerate(asset.files))
        for i, source in files:
            problem = _source_problem(source, self.fetchers)
            if problem:
                raise _fail(role, problem[0], f"{role.name} {asset.did} file {i}: {problem[1]}")
        return name, files

    def plan(self) -> tuple[list[tuple[AssetToStage, str]], tuple[AssetToStage | None, str]]:
        req = self.request
        datasets: list[tuple[AssetToStage, str]] = []
        seen: set[str] = set()
        for asset in req.datasets:
            name, _ = self._plan_asset(asset, _DATASET)
            if asset.did in seen:
                raise _fail(_DATASET, "invalid_request", f"dataset {asset.did} is listed twice")
            seen.add(asset.did)
            datasets.append((asset, name))

        if req.algorithm is not None and req.raw_algorithm:
            raise _fail(_ALGORITHM, "invalid_request", "the job has both a registered and a raw algorithm")
        if req.algorithm is None and not req.raw_algorithm:
            raise _fail(_ALGORITHM, "invalid_request", "the job has no algorithm")
        if req.algorithm_files_checksum and not assets.is_sha256_hex(req.algorithm_files_checksum):
            # The provider refuses such a pin; one that reaches here cannot be verified, so nothing runs.
            raise _fail(
                _ALGORITHM,
                "invalid_request",
                f"the trusted-algorithm filesChecksum is not a sha256 digest ({assets.SHA256_SYNTAX})",
            )
        if req.algorithm is not None:
            name, files = self._plan_asset(req.algorithm, _ALGORITHM)
            if req.algorithm.did in seen:
                raise _fail(_ALGORITHM, "invalid_request", f"algorithm {req.algorithm.did} is also a dataset")
            if not files:
                raise _fail(_ALGORITHM, "invalid_request", f"algorithm {req.algorithm.did} has no files")
            return datasets, (req.algorithm, name)
        if "raw" not in self.fetchers:
            raise _fail(_ALGORITHM, "unsupported_source_type", "raw algorithms are not supported by this environment")
        return datasets, (None, "")

    # -- one file

    async def _stage_file(self, job: _FileJob) -> StagedFile:
        async with self.semaphore:
            fetching.set_file_context(FileContext(job.label, self.log))
            started = time.monotonic()
            fetcher = self.fetchers[job.source.type]
            try:
                size, sha = await fetcher.fetch(job.source, job.part, self.limits, self.budget)
                sha = sha.lower()
                # Belt and braces for third-party fetchers: re-check what they promise.
                on_disk = os.stat(job.part, follow_symlinks=False).st_size
                if on_disk != size:
                    raise FetchError("write_failed", f"the fetcher reported {size} bytes but wrote {on_disk}")
                if size > self.limits.max_file_bytes:
                    raise FetchError(
                        "file_too_large", f"the file is over the limit of {self.limits.max_file_bytes} bytes"
                    )
                if sum(f.size for f in self.staged) + size > self.limits.max_total_bytes:
                    raise FetchError(
                        "disk_quota_exceeded",
                        f"the job's files would exceed the environment's disk of {self.limits.max_total_bytes} bytes",
                    )
                expected = job.source.checksum
                if expected and expected != sha:
                    raise FetchError("checksum_mismatch", "checksum mismatch")
                os.chmod(job.part, job.mode)
                os.replace(job.part, job.final)
            except BaseException:
                # Never leave a half-written file behind, whatever happened.
                job.part.unlink(missing_ok=True)
                raise
        elapsed = time.monotonic() - started
        self.log.info("%s staged: %d bytes in %.2f s", job.label, size, elapsed)
        staged = StagedFile(job.did, job.index, job.final, size, sha)
        self.staged.append(staged)
        return staged

    def _to_failure(self, job: _FileJob, exc: BaseException) -> _Failure:
        role = job.role
        if isinstance(exc, FetchError):
            if exc.code == "checksum_mismatch":
                who = job.did or "raw algorithm"
                return _fail(role, "checksum_mismatch", f"checksum mismatch ({who} file {job.index})")
            code = exc.code if exc.code in _PASS_THROUGH_CODES else role.fetch_failed_code
            return _fail(role, code, f"{job.label}: {exc.message}")
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return _fail(role, "disk_quota_exceeded", f"{job.label}: the environment's disk is full")
        if isinstance(exc, OSError):
            return _fail(
                role,
                "write_failed",
                f"{job.label}: could not write the file ({errno.errorcode.get(exc.errno or 0, 'I/O error')})",
            )
        # Only the type: an exception's text may carry the location.
        return _fail(role, role.fetch_failed_code, f"{job.label}: internal error ({type(exc).__name__})")

    # -- one phase: several files in parallel, first failure cancels the rest

    async def _run_phase(self, jobs: list[_FileJob]) -> list[StagedFile]:
        if not jobs:
            return []
        tasks = [asyncio.create_task(self._stage_file(job)) for job in jobs]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            # Let cancelled downloads remove their partial files before we report.
            await asyncio.gather(*tasks, return_exceptions=True)
        for job, task in zip(jobs, tasks, strict=True):
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                raise self._to_failure(job, exc) from None
        if any(t.cancelled() for t in tasks):
            raise asyncio.CancelledError()
        return [t.result() for t in tasks]

    def _log_failure(self, where: str, failure: _Failure) -> None:
        self.log.error("%s failed (%s, status %d): %s", where, failure.code, failure.status, failure.reason)

    # -- the whole job

    async def run(self) -> StagingOutcome:
        req = self.request
        root = self.root
        started = time.monotonic()
        n_data_files = sum(len(a.files) for a in req.datasets)
        if req.algorithm is not None:
            # No DID here: it is not validated yet, and a log line must not carry arbitrary input.
            algo_desc = f"a registered algorithm with {len(req.algorithm.files)} file(s)"
        else:
            algo_desc = "a raw algorithm" if req.raw_algorithm else "no algorithm"
        self.log.info("staging started: %d dataset(s) with %d file(s), %s", len(req.datasets), n_data_files, algo_desc)
        try:
            datasets, (algorithm, algo_name) = self.plan()
            try:
                custom_data = json.dumps(dict(req.algo_custom_data), sort_keys=True).encode()
            except (TypeError, ValueError) as exc:
                raise _fail(
                    _ALGORITHM,
                    "invalid_request",
                    f"the algorithm's custom data cannot be written as JSON ({type(exc).__name__})",
                ) from None

            # Layout first: the algorithm expects every directory to exist.
            try:
                root.mkdir(parents=True, exist_ok=True)
                inputs = _ensure_dir(root, ["inputs"], _DATASET)
                transformations = _ensure_dir(root, ["transformations"], _ALGORITHM)
                ddos = _ensure_dir(root, ["ddos"], _DATASET)
                _ensure_dir(root, ["outputs"], _DATASET)
                _ensure_dir(root, ["logs"], _DATASET)
                _write_atomic(inputs / "algoCustomData.json", custom_data)
                self.log.info("workspace laid out")

                # Phase 1: datasets.
                jobs: list[_FileJob] = []
                for asset, name in datasets:
                    directory = _ensure_dir(root, ["inputs", name], _DATASET)
                    _write_atomic(_inside(ddos, name), asset.ddo_json.encode())
                    jobs += [
                        _FileJob(_DATASET, asset.did, i, src, directory, str(i), 0o644)
                        for i, src in enumerate(asset.files)
                    ]
            except OSError as exc:
                raise self._os_failure(_DATASET, exc) from None
            self.log.info("fetching %d dataset file(s)", len(jobs))
            data_files = await self._run_phase(jobs)
            self.log.info("datasets staged: %d file(s), %d bytes", len(data_files), sum(f.size for f in data_files))

            # Phase 2: the algorithm, only once every dataset file is in place.
            try:
                if algorithm is not None:
                    _write_atomic(_inside(ddos, algo_name), algorithm.ddo_json.encode())
                    jobs = [
                        _FileJob(
                            _ALGORITHM,
                            algorithm.did,
                            i,
                            src,
                            transformations,
                            "algorithm" if i == 0 else str(i),
                            0o755 if i == 0 else 0o644,
                        )
                        for i, src in enumerate(algorithm.files)
                    ]
                else:
                    raw = FileSource(type="raw", content=req.raw_algorithm)
                    jobs = [_FileJob(_ALGORITHM, "", 0, raw, transformations, "algorithm", 0o755)]
            except OSError as exc:
                raise self._os_failure(_ALGORITHM, exc) from None
            self.log.info("fetching %d algorithm file(s)", len(jobs))
            algo_files = await self._run_phase(jobs)

            expected = req.algorithm_files_checksum
            if expected:
                actual = assets.files_checksum([f.sha256 for f in sorted(algo_files, key=lambda f: f.index)])
                if actual != expected:
                    # The algorithm is not the one the dataset trusts: make sure it cannot run.
                    for f in algo_files:
                        f.path.unlink(missing_ok=True)
                        self.staged.remove(f)
                    who = algorithm.did if algorithm is not None else "raw algorithm"
                    raise _fail(
                        _ALGORITHM,
                        "checksum_mismatch",
                        f"checksum mismatch ({who} files 0..{len(algo_files) - 1}: "
                        "filesChecksum differs from the dataset's trusted-algorithm entry)",
                    )
                self.log.info("algorithm filesChecksum verified")
        except _Failure as failure:
            self._log_failure("staging", failure)
            return StagingOutcome(failure.status, failure.code, failure.reason, tuple(self.staged))

        files = tuple(data_files + algo_files)
        self.log.info(
            "staging succeeded: %d file(s), %d bytes in %.2f s",
            len(files),
            sum(f.size for f in files),
            time.monotonic() - started,
        )
        return StagingOutcome(Status.PROVISIONING_SUCCESS, "", "", files)

    @staticmethod
    def _os_failure(role: _Role, exc: OSError) -> _Failure:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return _fail(role, "disk_quota_exceeded", "the environment's disk is full")
        name = errno.errorcode.get(exc.errno or 0, "I/O error")
        return _fail(role, "write_failed", f"could not lay out the workspace ({name})")


async def stage(
    request: StagingRequest,
    data_root: Path,
    limits: StagingLimits,
    fetchers: Mapping[str, Fetcher],
    log: logging.Logger,
) -> StagingOutcome:
    """Prepare `data_root` (the job's /data) for the algorithm.

    Datasets are staged first; if any fails the outcome is 31 and the
    algorithm is not fetched. Then the algorithm (32 on failure). Going over
    the environment's disk gives 42. Files are written under a temporary name
    and renamed once their size and checksum are verified, so a final name
    always holds a complete file. Cancelling `stage()` removes partial files.
    """
    return await _Stager(request, Path(data_root), limits, fetchers, log).run()
