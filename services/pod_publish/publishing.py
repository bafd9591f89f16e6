"""What pod_publish publishes, and how: the domain of the publish stage.

Everything under outputs/ (recursively, relative paths kept) and
logs/algorithm.log are the consumer's results; the operator's admin logs live
elsewhere and are never among them. A file that cannot be uploaded after
retries fails the whole publication, and what was already uploaded is
removed: nothing is silently dropped, nothing half-published remains.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from plumbing.storage import ObjectStore, StorageError

log = logging.getLogger("c2d.pod_publish")
OUTPUT, ALGORITHM_LOG = "RESULT_KIND_OUTPUT", "RESULT_KIND_ALGORITHM_LOG"


@dataclass(frozen=True)
class ResultSource:
    path: str  # relative to outputs/, or "algorithm.log"
    file: Path
    kind: str


class PublishFailed(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"results upload failed: {path}: {reason}")
        self.path = path


def collect(data_root: Path, pack: bool, scratch: Path) -> list[ResultSource]:
    outputs = data_root / "outputs"
    found = sorted(
        (p for p in outputs.rglob("*") if p.is_file() and not p.is_symlink()), key=lambda p: p.as_posix()
    ) if outputs.is_dir() else []
    sources: list[ResultSource]
    if pack:
        archive = scratch / "outputs.tar"
        with tarfile.open(archive, "w") as tar:
            for path in found:
                tar.add(path, arcname=path.relative_to(outputs).as_posix())
        sources = [ResultSource("outputs.tar", archive, OUTPUT)]
    else:
        sources = [ResultSource(p.relative_to(outputs).as_posix(), p, OUTPUT) for p in found]
    algorithm_log = data_root / "logs" / "algorithm.log"
    if algorithm_log.is_file():
        sources.append(ResultSource("algorithm.log", algorithm_log, ALGORITHM_LOG))
    return sources


def publish(store: ObjectStore, job_id: str, sources: list[ResultSource], retries: int = 3) -> dict[str, Any]:
    """Uploads every source and returns the results manifest (proto JSON)."""
    files: list[dict[str, Any]] = []
    try:
        for index, source in enumerate(sources):
            prefix = "logs" if source.kind == ALGORITHM_LOG else "outputs"
            key = f"{job_id}/{prefix}/{source.path}"
            content_type = mimetypes.guess_type(source.path)[0] or "application/octet-stream"
            started = time.monotonic()
            stored = _upload(store, key, source, content_type, retries)
            log.info(
                "uploaded result %d (%s, %d bytes) in %.3f s", index, source.path, stored.size, time.monotonic() - started
            )
            files.append(
                {
                    "index": index,
                    "path": source.path,
                    "size": str(stored.size),
                    "sha256": stored.sha256,
                    "kind": source.kind,
                    "location": stored.location,
                    "content_type": content_type,
                }
            )
    except PublishFailed:
        for entry in files:
            try:
                store.delete(entry["location"])
            except StorageError:
                log.warning("could not remove partial result %s", entry["path"])
        raise
    return {
        "files": files,
        "storage": store.kind,
        "published_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
    }


def _upload(store: ObjectStore, key: str, source: ResultSource, content_type: str, retries: int):  # type: ignore[no-untyped-def]
    for attempt in range(retries + 1):
        try:
            return store.put_file(key, source.file, content_type)
        except StorageError as exc:
            if not exc.transient or attempt == retries:
                raise PublishFailed(source.path, str(exc)) from None
            log.info("upload of %s failed (%s); retry %d", source.path, exc, attempt + 1)
            time.sleep(0.2 * 2**attempt)
        except OSError as exc:
            raise PublishFailed(source.path, os.strerror(exc.errno or 0) or str(exc)) from None
    raise AssertionError("unreachable")
