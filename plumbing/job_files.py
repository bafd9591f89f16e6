"""Opening what a job wrote without following anything the job could have made.

A job (a stranger's algorithm) can leave symlinks, hard links, FIFOs, devices
and directories where c2d expects a file: `logs/algorithm.log -> /etc/shadow`,
`outputs/a -> /var/lib/c2d`, a FIFO that blocks whoever opens it. Every file
the engine, pod_publish or the provider opens inside a job's workspace or
its results goes through here:

* `open_file(root, relpath)`: no symlink on any component of `relpath`, and
  nothing outside `root` ("..", absolute paths). On Linux ≥ 5.6 this is one
  openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
  so the kernel checks every component atomically; elsewhere each component is
  opened with O_NOFOLLOW from the previous directory's descriptor. The last
  component is opened O_NONBLOCK (a FIFO must not block us), and the
  descriptor must be a regular file by fstat, within `max_bytes`.
* `walk_files(root)`: the regular files under a directory, each a relative
  path, and what was skipped with the reason (symlink, FIFO, device, socket,
  hard link, too deep, too many), walking by directory descriptors.

The root itself is the caller's (a path c2d made, e.g. the job's workspace);
everything below it is the job's.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "MAX_DEPTH",
    "MAX_ENTRIES",
    "NotAllowed",
    "Walked",
    "fd_path",
    "open_file",
    "walk_files",
]

MAX_DEPTH = 64  # directory levels under the root
MAX_ENTRIES = 100_000  # directory entries looked at by one walk

_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "riscv64": 437, "ppc64le": 437, "s390x": 437}.get(os.uname().machine)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


class NotAllowed(OSError):
    """What is there is not a file c2d may read on the job's behalf (the message says why)."""


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


_libc = ctypes.CDLL(None, use_errno=True)
_openat2_works: bool | None = None if _SYS_OPENAT2 is not None else False


def _openat2(dir_fd: int, relpath: str, flags: int) -> int | None:
    """The descriptor, or None when this kernel has no openat2 (then the walk does it)."""
    global _openat2_works  # noqa: PLW0603 - learnt once per process
    if _openat2_works is False:
        return None
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, dir_fd, relpath.encode(), ctypes.byref(how), ctypes.sizeof(how))
    if fd >= 0:
        _openat2_works = True
        return int(fd)
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM) and _openat2_works is None:  # EPERM: a seccomp filter refusing it
        _openat2_works = False
        return None
    if err == errno.ELOOP:
        raise NotAllowed(err, "a symbolic link is in the way (links are never followed)", relpath)
    if err == errno.EXDEV:
        raise NotAllowed(err, "the path leads outside its directory", relpath)
    raise OSError(err, os.strerror(err), relpath)


def _parts(relpath: str) -> list[str]:
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if relpath.startswith("/") or ".." in parts or not parts:
        raise NotAllowed(errno.EINVAL, "not a relative path below its directory", relpath)
    return parts


def _walk_open(dir_fd: int, parts: list[str], flags: int) -> int:
    """openat2's answer without it: O_NOFOLLOW at each step from a directory descriptor."""
    fd = os.dup(dir_fd)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            step = (flags if last else os.O_RDONLY | os.O_DIRECTORY) | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                nxt = os.open(part, step, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and stat.S_ISLNK(
                    os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
                ):
                    raise NotAllowed(
                        errno.ELOOP, "a symbolic link is in the way (links are never followed)", "/".join(parts)
                    ) from None
                raise
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_fd(root: Path | int, relpath: str, flags: int) -> int:
    parts = _parts(relpath)
    root_fd = root if isinstance(root, int) else os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _openat2(root_fd, "/".join(parts), flags)
        return fd if fd is not None else _walk_open(root_fd, parts, flags)
    finally:
        if not isinstance(root, int):
            os.close(root_fd)


def open_file(root: Path | int, relpath: str, *, max_bytes: int | None = None, single_link: bool = False) -> BinaryIO:
    """`root/relpath` opened for reading, never through a link, checked to be a regular file.

    `root` is a directory path or descriptor. `single_link`: refuse a file with
    other hard links (a job's results must not alias another file). Raises
    FileNotFoundError, NotAllowed (link, not a regular file, too large) or OSError.
    """
    fd = _open_fd(root, relpath, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAllowed(errno.EINVAL, f"not a regular file ({_kind(st.st_mode)})", relpath)
        if single_link and st.st_nlink > 1:
            raise NotAllowed(errno.EMLINK, f"a hard link ({st.st_nlink} names for one file)", relpath)
        if max_bytes is not None and st.st_size > max_bytes:
            raise NotAllowed(errno.EFBIG, f"{st.st_size} bytes, over the limit of {max_bytes}", relpath)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def fd_path(f: BinaryIO) -> Path:
    """A path that names exactly the open file `f` (for APIs that take a path): opening it
    reopens the same inode, whatever the job did to the name since."""
    return Path(f"/proc/self/fd/{f.fileno()}")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


@dataclass
class Walked:
    """What `walk_files` found: regular files (sorted by relative path) and what it left out."""

    files: list[tuple[str, int]] = field(default_factory=list)  # (relative path, size) of each regular file
    skipped: dict[str, str] = field(default_factory=dict)  # relative path -> why


def walk_files(
    root: Path,
    relpath: str = "",
    *,
    single_link: bool = True,
    max_depth: int = MAX_DEPTH,
    max_entries: int = MAX_ENTRIES,
) -> Walked:
    """The regular files under `root/relpath`, never through a link (paths relative to that
    directory). A missing directory is empty; a link in its place is skipped as ".".
    """
    walked = Walked()
    try:
        top = (
            _open_fd(root, relpath, os.O_RDONLY | os.O_DIRECTORY)
            if relpath
            else os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        )
    except FileNotFoundError:
        return walked
    except (NotAllowed, NotADirectoryError) as exc:
        walked.skipped["."] = exc.strerror or str(exc)
        return walked
    seen = 0
    for rel, st in _entries(top, "", 0, max_depth, walked):
        seen += 1
        if seen > max_entries:
            walked.skipped[rel] = f"over {max_entries} entries: the rest is not read"
            break
        if st is None:
            continue
        if stat.S_ISREG(st.st_mode):
            if single_link and st.st_nlink > 1:
                walked.skipped[rel] = f"a hard link ({st.st_nlink} names for one file)"
            else:
                walked.files.append((rel, st.st_size))
        else:
            walked.skipped[rel] = _kind(st.st_mode)
    walked.files.sort()
    return walked


def _entries(
    dir_fd: int, prefix: str, depth: int, max_depth: int, walked: Walked
) -> Iterator[tuple[str, os.stat_result | None]]:
    """(relative path, lstat) of each non-directory entry below dir_fd (which it closes);
    directories are descended into through O_NOFOLLOW descriptors."""
    try:
        with os.scandir(dir_fd) as it:
            names = sorted(entry.name for entry in it)
        for name in names:
            rel = f"{prefix}{name}"
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):  # say where it pointed: what the job tried is worth a log line
                walked.skipped[rel] = f"symlink to {os.readlink(name, dir_fd=dir_fd)!r}"
                yield rel, None
                continue
            if not stat.S_ISDIR(st.st_mode):
                yield rel, st
                continue
            if depth + 1 >= max_depth:
                walked.skipped[rel] = f"deeper than {max_depth} levels"
                yield rel, None
                continue
            try:
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as exc:  # replaced by a link since the stat: not followed
                walked.skipped[rel] = f"cannot be opened as a directory ({exc.strerror})"
                yield rel, None
                continue
            yield from _entries(sub, rel + "/", depth + 1, max_depth, walked)
    finally:
        os.close(dir_fd)
