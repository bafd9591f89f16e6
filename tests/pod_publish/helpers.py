"""What the publishing tests share: a job's outputs with every kind of entry, and a local results store."""

from __future__ import annotations

import os
from pathlib import Path

from plumbing.storage import StorageConfig


def outputs_tree(root: Path) -> Path:
    """outputs/ with nested and top-level files, a file link, a directory link and a FIFO; a log and a secret beside it."""
    out = root / "outputs"
    (out / "a" / "b").mkdir(parents=True)
    (out / "a" / "b" / "deep.txt").write_text("deep")
    (out / "top.txt").write_text("top")
    (root / "admin").mkdir()
    (root / "admin" / "algorithm.log").write_text("log")
    (root / "secret.txt").write_text("outside outputs")
    os.symlink(root / "secret.txt", out / "file-link")
    os.symlink(root, out / "a" / "dir-link")
    os.mkfifo(out / "pipe")
    return out


def local_results(tmp_path: Path) -> StorageConfig:
    return StorageConfig(kind="local", local_root=tmp_path / "results")


def stored_files(tmp_path: Path) -> list[str]:
    return sorted(
        p.relative_to(tmp_path / "results").as_posix() for p in (tmp_path / "results").rglob("*") if p.is_file()
    )
