"""The engine's log reader and the provider's results storage open job files as an unprivileged user.

Issue 13 asks for a second wall behind plumbing.job_files' link checks: should a
mistake there (or a file the job had a hand in) put a root-only file where a log
or a result is expected, the reader still cannot open it, because it opens as
uid/gid 65534 without groups or file capabilities. Each attack here removes the
first wall on purpose (the link checks, or the file at the path itself) and shows
that root-only content does not come back, while normal jobs still stream their
logs and download their results.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from c2d_sdk.errors import Refused
from plumbing import job_files, settings
from plumbing.storage import LocalStore, StorageError
from testkit.jobs import job_bench

SECRET = b"root-only: the engine's service token"


@pytest.fixture(autouse=True)
def _as_root() -> None:
    # The suite runs as root (bwrap, cgroups, job uids); these attacks are about root's readers.
    assert os.geteuid() == 0, "these tests need root, as the engine and provider run here"


def _root_only(path: Path) -> Path:
    path.write_bytes(SECRET)
    os.chown(path, 0, 0)
    path.chmod(0o600)
    return path


@pytest.fixture
def links_followed(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """job_files' own checks bypassed: openat2 off, and every step follows links and "..".
    Calling the result also bypasses the unprivileged reader (the test's control)."""

    def following(root: int, relpath: str, flags: int) -> int:
        return os.open(relpath, flags | os.O_CLOEXEC, dir_fd=root)

    monkeypatch.setattr(job_files, "_open_fd", following)

    def as_root_too() -> None:
        monkeypatch.setattr(job_files._READER, "run", lambda fn, *args: fn(*args))

    return as_root_too


# -- the reader thread itself -------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "job"
    root.mkdir()
    root.chmod(0o755)
    yield root


def test_a_root_only_file_is_refused_to_the_reader_and_a_readable_one_is_read(tree: Path) -> None:
    _root_only(tree / "secret")
    (tree / "public").write_bytes(b"anyone may read this")
    (tree / "public").chmod(0o644)

    with pytest.raises(PermissionError):
        job_files.open_file(tree, "secret", unprivileged=True)
    with job_files.open_file(tree, "public", unprivileged=True) as f:
        assert f.read() == b"anyone may read this"
    with job_files.open_file(tree, "secret") as f:  # the process itself is still root
        assert f.read() == SECRET


def test_a_file_shared_with_the_reader_is_read_and_stays_closed_to_others(tree: Path) -> None:
    path = tree / "algorithm.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"printed")
        job_files.share_with_reader(fd)
    finally:
        os.close(fd)
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, job_files.READER_ID, 0o640)
    with job_files.open_file(tree, "algorithm.log", unprivileged=True) as f:
        assert f.read() == b"printed"


def test_the_reader_thread_drops_only_its_own_privileges() -> None:
    ids = job_files._READER.run(job_files._thread_ids)
    reader_id = str(job_files.READER_ID)
    assert ids["Uid"][3] == reader_id and ids["Gid"][3] == reader_id  # fsuid, fsgid
    assert ids["Groups"] == []
    caps = int(ids["CapEff"][0], 16)
    for name, bit in job_files._FS_CAPS.items():
        assert not caps & (1 << bit), f"{name} still in the reader's effective set"
    # glibc broadcasts setuid and setgroups to every thread; setfsuid and the raw setgroups are not
    here = job_files._thread_ids()
    assert here["Uid"][3] == "0"
    assert int(here["CapEff"][0], 16) & (1 << job_files._FS_CAPS["CAP_DAC_OVERRIDE"])
    results: list[dict[str, list[str]]] = []
    other = threading.Thread(target=lambda: results.append(job_files._thread_ids()))
    other.start()
    other.join()
    assert results[0]["Uid"][3] == "0"
    assert job_files.describe_reader().startswith(f"job files are opened on reader threads as uid {reader_id}")


def test_a_process_that_is_not_root_opens_as_itself(tree: Path) -> None:
    (tree / "mine").write_bytes(b"its own file")
    os.chown(tree / "mine", 1000, 1000)
    (tree / "mine").chmod(0o600)
    _root_only(tree / "secret")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: uid 1000 for good, then what the reader does
        try:
            os.close(read)
            root_fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)  # pytest's tmp_path is root's alone
            os.setgroups([])
            os.setresgid(1000, 1000, 1000)
            os.setresuid(1000, 1000, 1000)
            line = job_files.describe_reader()
            with job_files.open_file(root_fd, "mine", unprivileged=True) as f:
                line += "|" + f.read().decode()
            try:
                job_files.open_file(root_fd, "secret", unprivileged=True)
            except PermissionError:
                line += "|refused"
            line += f"|{threading.active_count()} thread"
            os.write(write, line.encode())
        except BaseException as exc:
            os.write(write, repr(exc).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        answer = f.read().decode()
    os.waitpid(pid, 0)
    assert answer == "job files are opened as this process's own uid 1000 (not root)|its own file|refused|1 thread"


def test_with_links_followed_the_reader_still_cannot_read_a_root_only_target(
    tree: Path, links_followed: Callable[[], None]
) -> None:
    target = _root_only(tree.parent / "service-token")
    (tree / "logs").mkdir()
    (tree / "logs" / "algorithm.log").symlink_to(target)
    (tree / "up").symlink_to("..")

    for relpath in ("logs/algorithm.log", "up/service-token"):
        with pytest.raises(PermissionError):
            job_files.open_file(tree, relpath, unprivileged=True)
    links_followed()  # control: root would have read it through the same link
    with job_files.open_file(tree, "logs/algorithm.log", unprivileged=True) as f:
        assert f.read() == SECRET


async def _refusal(call: Callable[[], Awaitable[object]]) -> tuple[str, str]:
    """The status name and message a call ends with (the SDK's streams answer either error)."""
    try:
        await call()
    except Refused as exc:
        return exc.code, exc.message
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details() or ""
    raise AssertionError("the call succeeded")


# -- the services -------------------------------------------------------------------------------

ALGORITHM = """
print("hello from the algorithm", flush=True)
open("/data/outputs/result.txt", "w").write("42")
"""


async def test_stream_job_logs_never_returns_a_root_only_file(data_dir, links_followed) -> None:
    async with job_bench() as bench:
        job = await bench.run(ALGORITHM)
        assert job.status == 70, job.error_message
        # the normal way: the engine's copy of the log is streamed (read as the reader)
        assert b"".join([c async for c in bench.consumer.logs(job.job_id)]) == b"hello from the algorithm\n"
        log_path = settings.data_dir() / "workspaces" / job.job_id / "admin" / "algorithm.log"
        assert (log_path.stat().st_gid, log_path.stat().st_mode & 0o777) == (job_files.READER_ID, 0o640)

        async def logs() -> list[bytes]:
            return [c async for c in bench.consumer.logs(job.job_id)]

        # the checks of job_files gone, a link to a root-only file where the log is
        token = _root_only(settings.data_dir() / "stolen-token")
        log_path.unlink()
        log_path.symlink_to(token)
        code, message = await _refusal(logs)
        assert code == "FAILED_PRECONDITION"
        assert "unprivileged log reader" in message
        assert SECRET.decode() not in message

        # and a root-only regular file in its place (what a mistake in the engine could leave)
        log_path.unlink()
        _root_only(log_path)
        assert (await _refusal(logs))[0] == "FAILED_PRECONDITION"

        links_followed()  # control: a root reader streams the secret
        assert b"".join([c async for c in bench.consumer.logs(job.job_id)]) == SECRET


async def test_get_compute_result_from_local_storage_never_returns_a_root_only_file(data_dir, links_followed) -> None:
    async with job_bench() as bench:
        job = await bench.run(ALGORITHM)
        assert job.status == 70, job.error_message
        files = {f.path: f for f in job.results.files}
        index = files["result.txt"].index
        # the normal way: pod_publish stored it, the provider serves it as the reader
        _, data = await bench.consumer.result(job.job_id, index)
        assert data == b"42"

        stored = [p for p in (settings.data_dir() / "results").rglob("result.txt") if job.job_id in str(p)]
        assert len(stored) == 1, stored
        token = _root_only(settings.data_dir() / "stolen-token")
        stored[0].unlink()
        stored[0].symlink_to(token)

        def result() -> Awaitable[object]:
            return bench.consumer.result(job.job_id, index)

        code, message = await _refusal(result)
        assert (code, SECRET.decode() in message) == ("FAILED_PRECONDITION", False), message
        assert "unprivileged reader" in message

        stored[0].unlink()
        _root_only(stored[0])
        assert (await _refusal(result))[0] == "FAILED_PRECONDITION"

        links_followed()  # control: a root reader serves the secret
        _, data = await bench.consumer.result(job.job_id, index)
        assert data == SECRET


def test_local_storage_under_a_private_root_serves_what_it_stored_and_nothing_root_only(tmp_path: Path) -> None:
    root = tmp_path / "results"
    root.mkdir(mode=0o700)
    store = LocalStore(root)
    assert root.stat().st_mode & 0o777 == 0o701  # names can be looked up, not listed
    source = tmp_path / "result.json"
    source.write_bytes(b'{"answer": 42}')
    stored = store.put_file("job/outputs/result.json", source)
    assert b"".join(store.read(stored.location)) == b'{"answer": 42}'

    _root_only(root / "job" / "outputs" / "token")
    with pytest.raises(StorageError, match="unprivileged reader"):
        store.read("local:job/outputs/token")
