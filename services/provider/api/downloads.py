"""The one download streamer of GetComputeResult and DownloadAssetFile.

Both serve only what the job's own record lists as its results, while it
still has them (`recorded_results`), and answer a stream of responses of
the same shape: the file's entry in the first, then the bytes from the
requested offset with their offsets.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TypeVar

from c2d.common.v1 import common_pb2
from plumbing import errors, storage
from plumbing.statuses import is_terminal
from services.provider.domain.file_locations import ResultsStorage
from services.provider.persistence import result_files

Response = TypeVar("Response")  # GetComputeResultResponse, DownloadAssetFileResponse


def recorded_results(job: common_pb2.Job) -> Sequence[common_pb2.ResultFile]:
    """The result files the job's record lists, once it ended with results that were not removed."""
    if not job.HasField("results") or not is_terminal(job.status):
        raise errors.FailedPrecondition(f"job {job.job_id} has no results yet (status {job.status})", "no_results")
    if job.results.expired:
        raise errors.FailedPrecondition(f"the results of job {job.job_id} expired and were removed", "results_expired")
    return job.results.files


def result_entry(job: common_pb2.Job, index: int, results: ResultsStorage) -> common_pb2.ResultFile:
    """The job's result file `index`, or NOT_FOUND; PERMISSION_DENIED if its
    record names a location outside that job's own results (`ResultsStorage.holds`)."""
    files = {f.index: f for f in recorded_results(job)}
    entry = files.get(index)
    if entry is None:
        raise errors.NotFound(f"job {job.job_id} has no result file {index} (it has {len(files)})", "result_not_found")
    if not results.holds(entry.location, job.job_id):
        raise errors.PermissionDenied(
            f"result file {index} of job {job.job_id} is recorded outside that job's results: it is not served",
            "results_location_foreign",
        )
    return entry


async def stream_result_file(
    store: storage.ObjectStore,
    location: str,
    entry: common_pb2.ResultFile,
    offset: int,
    response: Callable[..., Response],
) -> AsyncGenerator[Response, None]:
    """`response` messages carrying the file at `location` from `offset`; the
    first one carries `entry`. Close it (contextlib.aclosing) to stop the
    storage read at once when the consumer goes away."""
    if offset > entry.size:
        raise errors.InvalidArgument(
            f"offset {offset} is beyond the file's {entry.size} bytes", "offset_invalid", field="offset"
        )
    first = True
    try:
        async with contextlib.aclosing(result_files.stream_chunks(store, location, offset)) as chunks:
            async for data, chunk_offset in chunks:
                yield response(file=entry if first else None, data=data, offset=chunk_offset)
                first = False
    except storage.StorageError as exc:  # a status that says what happened, never INTERNAL
        where = f"result file {entry.index} ({entry.path!r})"
        if exc.transient:
            raise errors.Unavailable(
                f"{where}: the results storage did not answer: {exc}", "storage_unavailable"
            ) from None
        if isinstance(exc, storage.ObjectNotFound):
            raise errors.FailedPrecondition(f"{where} is no longer in the results storage", "result_missing") from None
        raise errors.FailedPrecondition(f"{where} cannot be served: {exc}", "result_unreadable") from None
    if first:  # an empty file (or offset at its end) still answers with its entry
        yield response(file=entry, offset=offset)
