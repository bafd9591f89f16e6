"""Shared builders for the pod_config tests."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

from plumbing.fetching import FileSource, StagingLimits, default_fetchers
from services.pod_config.domain.staging import AssetToStage, StagingOutcome, StagingRequest, stage

DATASET_DID = "did:op:" + "a" * 64
DATASET2_DID = "did:op:" + "c" * 64
ALGO_DID = "did:op:" + "b" * 64


def did_dir(did: str) -> str:
    return did.removeprefix("did:op:")


def ddo(did: str, kind: str = "dataset") -> str:
    return json.dumps({"id": did, "version": "4.1.0", "metadata": {"type": kind, "name": kind}})


def url(src: str, **kw: object) -> FileSource:
    return FileSource(type="url", url=src, **kw)  # type: ignore[arg-type]


def asset(did: str, *files: FileSource, kind: str = "dataset") -> AssetToStage:
    return AssetToStage(did=did, files=tuple(files), ddo_json=ddo(did, kind))


def limits(**kw: object) -> StagingLimits:
    base: dict[str, object] = dict(
        max_file_bytes=10 * 1024 * 1024,
        max_total_bytes=50 * 1024 * 1024,
        connect_timeout_s=5,
        idle_timeout_s=5,
        max_retries=2,
        backoff_base_s=0.01,
        allow_hosts=("127.0.0.1",),
    )
    base.update(kw)
    return StagingLimits(**base)  # type: ignore[arg-type]


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def new_log() -> tuple[logging.Logger, LogCapture]:
    log = logging.getLogger(f"test.pod_config.{uuid.uuid4().hex}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    cap = LogCapture()
    log.addHandler(cap)
    return log, cap


async def run(
    request: StagingRequest,
    root: Path,
    lim: StagingLimits | None = None,
    fetchers: dict | None = None,
) -> tuple[StagingOutcome, LogCapture]:
    log, cap = new_log()
    outcome = await stage(request, root, lim or limits(), fetchers or default_fetchers(), log)
    return outcome, cap


def tree(root: Path) -> set[str]:
    """Every file and directory under root, relative, directories with a trailing slash."""
    out = set()
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        out.add(rel + "/" if p.is_dir() else rel)
    return out


def part_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part")]


def one(src: FileSource) -> StagingRequest:
    """Staging one dataset with file `src`, and a raw algorithm."""
    return StagingRequest(datasets=(asset(DATASET_DID, src),), algorithm=None, raw_algorithm="print('hi')")


def staged(root: Path) -> bytes:
    """What staging left as the dataset's file 0."""
    return (root / "inputs" / did_dir(DATASET_DID) / "0").read_bytes()


# how a refusal of the dataset's file 0 starts
PREFIX = f"data provisioning failed: dataset {DATASET_DID} file 0: "
