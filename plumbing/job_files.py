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

`open_file(..., unprivileged=True)` (the engine's log reader, the provider's
results) also opens below the root as an unprivileged user, so that a mistake
here, or a file the job had a hand in, still reads nothing root-only (the
service token, the engine's database, /etc/shadow). In a root process the
open runs on a reader thread whose filesystem uid and gid are READER_ID with
no supplementary groups: the kernel checks file access against a thread's
fsuid/fsgid and groups, and setting the fsuid from 0 clears that thread's
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER, while the process's
other threads stay root (glibc broadcasts setuid/setgroups to every thread,
not setfsuid, so setgroups is the raw syscall). The root directory is opened
by the calling thread (its parents may be root's alone). A process that is
not root opens as itself. Files c2d writes for such readers
(algorithm.log) are made readable to them by `share_with_reader`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

__all__ = [
    "MAX_DEPTH",
    "MAX_ENTRIES",
    "READER_ID",
    "NotAllowed",
    "Walked",
    "describe_reader",
    "fd_path",
    "open_file",
    "share_with_reader",
    "walk_files",
]

MAX_DEPTH = 64  # directory levels under the root
MAX_ENTRIES = 100_000  # directory entries looked at by one walk

_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "riscv64": 437, "ppc64le": 437, "s390x": 437}.get(os.uname().machine)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
# The unprivileged reader's uid and gid: the kernel's overflow id ("nobody"/"nogroup"), which
# owns nothing and which no job's uid is (a root engine's jobs run as SANDBOX_HOST_IDS).
READER_ID = 65534
READER_THREADS = 4  # opens at once (a thread hop each; the reads themselves are the caller's)
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159, "riscv64": 159, "ppc64le": 81, "s390x": 206}.get(os.uname().machine)
# capabilities(7): cleared from a thread's effective set when its fsuid leaves 0
_FS_CAPS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4}


class NotAllowed(OSError):
    """What is there is not a file c2d may read on the job's behalf (the message says why)."""


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")
_openat2_works: bool | None = None if _SYS_OPENAT2 is not None else False


def _thread_ids() -> dict[str, list[str]]:
    """This thread's Uid, Gid, Groups and CapEff lines, as the kernel sees them."""
    with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
        fields = (line.split(":", 1) for line in f)
        return {k: v.split() for k, v in fields if k in ("Uid", "Gid", "Groups", "CapEff")}


def _become_reader(uid: int, gid: int) -> None:
    """This thread only: no supplementary groups, fsgid `gid`, fsuid `uid`, checked with the kernel."""
    if _SYS_SETGROUPS is None or _libc.syscall(_SYS_SETGROUPS, 0, None) != 0:
        err = ctypes.get_errno() if _SYS_SETGROUPS is not None else errno.ENOSYS
        raise PermissionError(err, f"the job-file reader cannot drop its groups: {os.strerror(err)}")
    _libc.setfsgid(gid)
    _libc.setfsuid(uid)
    ids = _thread_ids()
    caps = int(ids["CapEff"][0], 16)
    kept = [name for name, bit in _FS_CAPS.items() if caps & (1 << bit)]
    # setfsuid answers the previous id even when it refuses (uid not mapped in this namespace)
    if ids["Uid"][3] != str(uid) or ids["Gid"][3] != str(gid) or ids["Groups"] or kept:
        raise PermissionError(
            errno.EPERM,
            f"the job-file reader thread did not become uid {uid}/gid {gid} without groups "
            f"(kernel: fsuid {ids['Uid'][3]}, fsgid {ids['Gid'][3]}, groups {ids['Groups']}, still {kept}); "
            f"is {uid} mapped in this user namespace?",
        )


class _Reader:
    """Threads that open as READER_ID (_as_reader): made at the first open, remade in a forked child."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pool = None

    def run(self, fn: Callable[..., T], *args: object) -> T:
        if os.geteuid() != 0:  # already unprivileged: no hop
            return fn(*args)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(READER_THREADS, "c2d-job-reader")
            pool = self._pool
        return pool.submit(_as_reader, fn, *args).result()


_reader_thread = threading.local()


def _as_reader(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` on a reader thread, which drops its privileges at its first call (an error
    then is this call's, with the reason, and the next call tries again)."""
    if not getattr(_reader_thread, "dropped", False):
        _become_reader(READER_ID, READER_ID)
        _reader_thread.dropped = True
    # setfsuid(-1) changes nothing and answers the fsuid: a last check that nothing (a glibc
    # setuid broadcast, say) gave this thread root's files back
    elif _libc.setfsuid(-1) != READER_ID:
        raise PermissionError(errno.EPERM, "the job-file reader thread is no longer unprivileged")
    return fn(*args)


_READER = _Reader()


def describe_reader() -> str:
    """Whom files are opened as with `unprivileged=True` (a line for the startup log); in a root
    process this makes the reader threads, and raises if they cannot drop privileges."""
    if os.geteuid() != 0:
        return f"job files are opened as this process's own uid {os.geteuid()} (not root)"
    ids = _READER.run(_thread_ids)
    return (
        f"job files are opened on reader threads as uid {ids['Uid'][3]}, gid {ids['Gid'][3]}, "
        "no groups, no file capabilities (the process is root)"
    )


def share_with_reader(fd: int, owner: int = -1) -> None:
    """Makes a file c2d writes for unprivileged readers (algorithm.log) readable to them and to
    no other uid: group READER_ID, mode 0640, when this process is root (else its own, 0640).
    `owner` (a root process only): the one uid that also reads it, e.g. the job's own uid, which
    the job's pod_publish runs as."""
    if os.geteuid() == 0:
        os.fchown(fd, owner, READER_ID)
    os.fchmod(fd, 0o640)


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


def open_file(
    root: Path | int,
    relpath: str,
    *,
    max_bytes: int | None = None,
    single_link: bool = False,
    unprivileged: bool = False,
) -> BinaryIO:
    """`root/relpath` opened for reading, never through a link, checked to be a regular file.

    `root` is a directory path or descriptor. `single_link`: refuse a file with
    other hard links (a job's results must not alias another file).
    `unprivileged`: open below `root` as READER_ID (module doc), so the file must
    be readable to it. Raises FileNotFoundError, NotAllowed (link, not a regular
    file, too large), PermissionError or OSError.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
    if not unprivileged:
        fd = _open_fd(root, relpath, flags)
    else:
        root_fd = root if isinstance(root, int) else os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = _READER.run(_open_fd, root_fd, relpath, flags)
        finally:
            if not isinstance(root, int):
                os.close(root_fd)
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
