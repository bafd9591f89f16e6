"""Results storage in a local directory (the embedded default)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from plumbing import job_files
from plumbing.storage.base import (
    ChunkStream,
    ObjectNotFound,
    StorageError,
    StoredObject,
    check_key,
    check_prefix,
)

PREFIX = "local:"
_COPY_BLOCK = 1 << 20
_DESCRIPTORS = Path("/proc/self/fd")


class LocalStore:
    kind = "local"

    def __init__(self, root: Path) -> None:
        root = Path(root)
        # A pod reaches its results through an open directory (/proc/self/fd/N) whose path's
        # parents are closed to it: that root is kept as it is, never resolved to that path.
        self.root = root if root.parent == _DESCRIPTORS else root.resolve()
        self._real_root = self.root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        # reads run as an unprivileged user from a descriptor of the root (job_files), which
        # must be able to look names up in it: search permission, not listing
        mode = self.root.stat().st_mode
        if not mode & stat.S_IXOTH:
            with contextlib.suppress(OSError):  # not ours to change: then reads say why they fail
                self.root.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)

    def _path(self, key: str) -> Path:
        path = self.root / check_key(key)
        # defence in depth: a symlink planted under root must not lead outside it
        resolved = path.resolve()
        if resolved != self._real_root and self._real_root not in resolved.parents:
            raise StorageError(f"invalid object key {key!r}: resolves outside the storage root")
        return path

    def _key_of(self, location: str) -> str:
        if not location.startswith(PREFIX):
            raise StorageError(f"location {location!r} is not a local: location")
        return location[len(PREFIX) :]

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> StoredObject:
        dest = self._path(key)
        try:
            self._mkdirs(dest.parent)
        except OSError as e:
            raise StorageError(f"cannot create the directory for key {key!r}: {e.strerror}") from e
        digest = hashlib.sha256()
        size = 0
        # temp file in the destination directory, so the rename is atomic
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        try:
            with open(path, "rb") as src, os.fdopen(fd, "wb") as out:
                while block := src.read(_COPY_BLOCK):
                    digest.update(block)
                    size += len(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; results are read by other services
            os.replace(tmp_name, dest)
        except FileNotFoundError as e:
            os.unlink(tmp_name)
            raise StorageError(f"cannot upload {path}: file not found") from e
        except OSError as e:
            Path(tmp_name).unlink(missing_ok=True)
            raise StorageError(f"cannot store {path} as key {key!r}: {e.strerror or e}") from e
        return StoredObject(location=PREFIX + key, size=size, sha256=digest.hexdigest())

    def _mkdirs(self, directory: Path) -> None:
        """Like mkdir -p, with the directories it makes searchable by the unprivileged reader
        whatever the umask (its files are 0644 for the same reason)."""
        if directory == self.root or directory.is_dir():
            return
        self._mkdirs(directory.parent)
        try:
            directory.mkdir()
        except FileExistsError:
            return
        os.chmod(directory, 0o755)

    def read(self, location: str, offset: int = 0, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        key = check_key(self._key_of(location))
        if offset < 0:
            raise StorageError(f"negative offset {offset} for {location}")
        f = self._open(key, location)
        size = os.fstat(f.fileno()).st_size
        if offset > size:
            f.close()
            raise StorageError(f"offset {offset} is past the end of {location} ({size} bytes)")
        f.seek(offset)
        return ChunkStream(iter(lambda: f.read(chunk_size), b""), f.close)

    def _open(self, key: str, location: str) -> BinaryIO:
        # Results are served as what pod_publish stored: a regular file reached through no
        # link, whatever was planted under the root since, opened as an unprivileged user
        # (plumbing.job_files): what put_file stored is readable to anyone, nothing root-only is.
        try:
            return job_files.open_file(self.root, key, unprivileged=True)
        except FileNotFoundError as e:
            raise ObjectNotFound(f"no object at {location}") from e
        except PermissionError as e:
            raise StorageError(f"cannot read {location}: not stored readable to the unprivileged reader") from e
        except OSError as e:
            raise StorageError(f"cannot read {location}: {e.strerror}") from e

    def size(self, location: str) -> int:
        key = check_key(self._key_of(location))
        with self._open(key, location) as f:
            return os.fstat(f.fileno()).st_size

    def delete(self, location: str) -> None:
        path = self._path(self._key_of(location))
        path.unlink(missing_ok=True)
        self._prune_empty_dirs(path.parent)

    def delete_prefix(self, key_prefix: str) -> int:
        """Deletes every key starting with key_prefix (string prefix, as on S3)."""
        check_prefix(key_prefix)
        head, _, tail = key_prefix.rpartition("/")
        base = self._path(head) if head else self.root
        if not base.is_dir():
            return 0
        count = 0
        for entry in list(base.iterdir()):
            if not entry.name.startswith(tail):
                continue
            if entry.is_symlink() or not entry.is_dir():
                entry.unlink()
                count += 1
                continue
            # bottom-up; symlinked dirs are unlinked, never followed
            for dirpath, dirs, files in os.walk(entry, topdown=False):
                links = [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]
                for name in files + links:
                    os.unlink(os.path.join(dirpath, name))
                    count += 1
                os.rmdir(dirpath)
        self._prune_empty_dirs(base)
        return count

    def _prune_empty_dirs(self, directory: Path) -> None:
        # keep the tree tidy after deletes; stops at the root or a non-empty dir
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent
