"""Job file links: an algorithm makes c2d read a host file for it through a link it planted.

The attack (issue 13, item 1): the algorithm replaces /data/logs/algorithm.log
with a symlink to /etc/shadow or to the service token in the data directory
(with the token, OperatorService.GetJob shows every consumer's jobs), plants
links among its outputs, then its consumer calls StreamJobLogs and
GetComputeResult.

The guarantee: nothing read or served on a job's behalf follows a link the
job could have made. The engine writes algorithm.log itself, out of the
algorithm's reach, and every job file is opened without following links on
any path component (plumbing.job_files: openat2 with RESOLVE_NO_SYMLINKS, or
O_NOFOLLOW at each step where the kernel lacks it), and must be a regular
file. First a real job through the real stack, then plumbing.job_files
itself, both ways, against each kind of link, FIFO, directory and hard link,
then what pod_publish publishes and the local store serves.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plumbing import job_files, settings
from plumbing.storage import LocalStore, StorageConfig, StorageError, open_store
from services.pod_publish.domain import publishing
from testkit.jobs import job_bench
from tests.pod_publish.helpers import local_results, outputs_tree, stored_files

ALGORITHM = """
import os
print("hello from the algorithm", flush=True)
log = "/data/logs/algorithm.log"
if os.path.lexists(log):
    os.remove(log)
os.symlink({target!r}, log)
# and a second try at the result files: a link among the outputs
os.symlink({target!r}, "/data/outputs/stolen.txt")
open("/data/outputs/result.txt", "w").write("42")
"""


@pytest.mark.parametrize("target", ["shadow", "service-token"])
async def test_a_log_replaced_by_a_link_streams_only_what_the_algorithm_printed(data_dir, target):
    async with job_bench() as bench:
        path = "/etc/shadow" if target == "shadow" else str(settings.data_dir() / "service-token")
        with open(path, "rb") as f:
            secret = f.read().strip()
        assert secret, f"{path} must hold something to steal"
        job = await bench.run(ALGORITHM.format(target=path))
        assert job.status == 70, job.error_message

        logs = b"".join([chunk async for chunk in bench.consumer.logs(job.job_id)])
        assert logs == b"hello from the algorithm\n"

        files = {f.path: f for f in job.results.files}
        assert set(files) == {"result.txt", "algorithm.log"}
        assert list(job.results.skipped_paths) == ["stolen.txt"]
        for name, entry in files.items():
            _, data = await bench.consumer.result(job.job_id, entry.index)
            assert secret not in data, name
        _, published_log = await bench.consumer.result(job.job_id, files["algorithm.log"].index)
        assert published_log == b"hello from the algorithm\n"


# -- plumbing.job_files: how every job file is opened ------------------------------------


@pytest.fixture(params=["openat2", "walk"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of opening: the kernel's openat2 and the O_NOFOLLOW walk without it."""
    if request.param == "walk":
        monkeypatch.setattr(job_files, "_openat2_works", False)
    return str(request.param)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("the service token")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "job"
    (root / "logs").mkdir(parents=True)
    return root


def test_a_regular_file_is_read(root: Path, way: str) -> None:
    (root / "logs" / "algorithm.log").write_bytes(b"hello")
    with job_files.open_file(root, "logs/algorithm.log") as f:
        assert f.read() == b"hello"


def test_a_symlinked_file_is_refused(root: Path, secret: Path, way: str) -> None:
    (root / "logs" / "algorithm.log").symlink_to(secret)
    with pytest.raises(job_files.NotAllowed, match="symbolic link"):
        job_files.open_file(root, "logs/algorithm.log")


def test_a_symlinked_directory_on_the_way_is_refused(root: Path, secret: Path, way: str) -> None:
    os.rmdir(root / "logs")
    (root / "logs").symlink_to(secret.parent)
    with pytest.raises(job_files.NotAllowed, match="symbolic link"):
        job_files.open_file(root, "logs/secret")


def test_a_relative_symlink_inside_the_root_is_refused_too(root: Path, way: str) -> None:
    (root / "real.log").write_text("x")
    (root / "logs" / "algorithm.log").symlink_to("../real.log")
    with pytest.raises(job_files.NotAllowed):
        job_files.open_file(root, "logs/algorithm.log")


@pytest.mark.parametrize("relpath", ["../secret", "/etc/shadow", "logs/../../secret", ""])
def test_paths_leaving_the_root_are_refused(root: Path, secret: Path, relpath: str, way: str) -> None:
    with pytest.raises(job_files.NotAllowed):
        job_files.open_file(root, relpath)


def test_a_fifo_is_refused_without_blocking(root: Path, way: str) -> None:
    os.mkfifo(root / "logs" / "algorithm.log")
    with pytest.raises(job_files.NotAllowed, match="FIFO"):
        job_files.open_file(root, "logs/algorithm.log")


def test_a_directory_is_refused(root: Path, way: str) -> None:
    (root / "logs" / "algorithm.log").mkdir()
    with pytest.raises(job_files.NotAllowed, match="directory"):
        job_files.open_file(root, "logs/algorithm.log")


def test_a_hard_link_is_refused_when_asked(root: Path, way: str) -> None:
    (root / "a").write_text("x")
    os.link(root / "a", root / "logs" / "b")
    with pytest.raises(job_files.NotAllowed, match="hard link"):
        job_files.open_file(root, "logs/b", single_link=True)
    with job_files.open_file(root, "logs/b") as f:
        assert f.read() == b"x"


def test_too_large_is_refused(root: Path, way: str) -> None:
    (root / "big").write_bytes(b"x" * 11)
    with pytest.raises(job_files.NotAllowed, match="over the limit of 10"):
        job_files.open_file(root, "big", max_bytes=10)


def test_the_open_file_can_be_named_by_its_descriptor(root: Path, secret: Path, way: str) -> None:
    (root / "f").write_text("mine")
    with job_files.open_file(root, "f") as f:
        os.unlink(root / "f")
        (root / "f").symlink_to(secret)  # the name changes; the open file does not
        assert job_files.fd_path(f).read_text() == "mine"


def test_walk_lists_regular_files_and_says_what_it_skipped(root: Path, secret: Path) -> None:
    out = root / "outputs"
    (out / "sub" / "deeper").mkdir(parents=True)
    (out / "a.txt").write_text("a")
    (out / "sub" / "deeper" / "b.txt").write_text("b")
    (out / "link").symlink_to(secret)
    (out / "dirlink").symlink_to(secret.parent)
    os.mkfifo(out / "sub" / "fifo")
    (out / "hard1").write_text("h")
    os.link(out / "hard1", out / "hard2")
    walked = job_files.walk_files(root, "outputs")
    assert walked.files == [("a.txt", 1), ("sub/deeper/b.txt", 1)]
    assert walked.skipped == {
        "link": f"symlink to {str(secret)!r}",
        "dirlink": f"symlink to {str(secret.parent)!r}",
        "sub/fifo": "FIFO",
        "hard1": "a hard link (2 names for one file)",
        "hard2": "a hard link (2 names for one file)",
    }


def test_walk_of_a_linked_top_directory_reads_nothing(root: Path, secret: Path) -> None:
    (root / "outputs").symlink_to(secret.parent)
    walked = job_files.walk_files(root, "outputs")
    assert walked.files == []
    assert "." in walked.skipped


def test_walk_limits_depth_and_entries(root: Path) -> None:
    deep = root / "outputs"
    for i in range(5):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    assert job_files.walk_files(root, "outputs", max_depth=3).skipped == {"d0/d1/d2": "deeper than 3 levels"}
    for i in range(5):
        (root / "outputs" / f"f{i}").write_text("x")
    walked = job_files.walk_files(root, "outputs", max_entries=3)
    assert len(walked.files) <= 3 and any("over 3 entries" in why for why in walked.skipped.values())


def test_walk_of_a_missing_directory_is_empty(root: Path) -> None:
    assert job_files.walk_files(root, "outputs") == job_files.Walked()


# -- pod_publish: what it publishes from the outputs, and the reader GetComputeResult uses --


def test_collect_publishes_regular_files_only_and_never_follows_links(tmp_path):
    outputs_tree(tmp_path)
    collected = publishing.collect(tmp_path, pack=False, scratch=tmp_path, log_dir=tmp_path / "admin")
    assert [(s.path, s.kind) for s in collected.sources] == [
        ("a/b/deep.txt", publishing.OUTPUT),
        ("top.txt", publishing.OUTPUT),
        ("algorithm.log", publishing.ALGORITHM_LOG),
    ]
    assert collected.skipped == ["a/dir-link", "file-link", "pipe"]


def test_outputs_that_are_themselves_a_link_publish_nothing_but_the_log(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.txt").write_text("x")
    os.symlink(tmp_path / "elsewhere", tmp_path / "outputs")
    collected = publishing.collect(tmp_path, pack=False, scratch=tmp_path, log_dir=tmp_path / "admin")
    assert collected.sources == []


def _secret_host_file(tmp_path: Path) -> Path:
    secret = tmp_path / "host" / "service-token"
    secret.parent.mkdir()
    secret.write_text("SECRET-TOKEN")
    return secret


async def test_links_fifos_and_hard_links_in_outputs_are_never_published(tmp_path):
    secret = _secret_host_file(tmp_path)
    data = tmp_path / "data"
    out = data / "outputs"
    (out / "d").mkdir(parents=True)
    (out / "ok.txt").write_text("ok")
    os.symlink("/etc/shadow", out / "shadow")
    os.symlink(secret, out / "token")
    os.symlink(secret.parent, out / "d" / "host")  # a directory link: never descended
    os.mkfifo(out / "fifo")  # would block a reader that opens it
    (out / "alias").write_text("x")
    os.link(out / "alias", out / "alias2")  # one file, two names
    (data / "logs").mkdir()
    os.symlink(secret, data / "logs" / "algorithm.log")  # the job's own logs/ is not the log
    (tmp_path / "admin").mkdir()
    (tmp_path / "admin" / "algorithm.log").write_text("what the algorithm printed")
    for pack in (False, True):
        outcome = await publishing.publish_results(
            data, tmp_path / "admin", f"job-{pack}", pack, local_results(tmp_path)
        )
        assert outcome.ok, outcome.message
        assert outcome.manifest["skipped_paths"] == ["alias", "alias2", "d/host", "fifo", "shadow", "token"]
    stored = {
        p.relative_to(tmp_path / "results").as_posix(): p.read_bytes()
        for p in (tmp_path / "results").rglob("*")
        if p.is_file()
    }
    assert stored["job-False/outputs/ok.txt"] == b"ok"
    assert (
        stored["job-False/logs/algorithm.log"] == stored["job-True/logs/algorithm.log"] == b"what the algorithm printed"
    )
    assert set(stored) == {
        "job-False/outputs/ok.txt",
        "job-False/logs/algorithm.log",
        "job-True/outputs/outputs.tar",
        "job-True/logs/algorithm.log",
    }
    for content in stored.values():
        assert b"SECRET-TOKEN" not in content and b"root:" not in content


def test_a_file_swapped_for_a_link_after_collecting_is_refused(tmp_path):
    secret = _secret_host_file(tmp_path)
    data = tmp_path / "data"
    (data / "outputs").mkdir(parents=True)
    (data / "outputs" / "result.json").write_text("{}")
    (tmp_path / "admin").mkdir()
    collected = publishing.collect(data, pack=False, scratch=tmp_path, log_dir=tmp_path / "admin")
    os.unlink(data / "outputs" / "result.json")
    os.symlink(secret, data / "outputs" / "result.json")  # a job still running would race like this
    store = open_store(StorageConfig(kind="local", local_root=tmp_path / "results"))
    with pytest.raises(publishing.PublishFailed, match="result.json: a symbolic link is in the way"):
        publishing.publish(store, "job-8", collected)
    assert stored_files(tmp_path) == []


def test_a_link_planted_in_local_storage_is_never_served(tmp_path):
    """A stored result replaced by a link (to a host file, or a directory link on the way)
    is refused, not followed, by the reader GetComputeResult uses."""
    secret = tmp_path / "service-token"
    secret.write_text("SECRET")
    store = LocalStore(tmp_path / "store")
    (tmp_path / "r.txt").write_text("result")
    location = store.put_file("job/outputs/r.txt", tmp_path / "r.txt").location
    stored = tmp_path / "store" / "job" / "outputs" / "r.txt"
    stored.unlink()
    stored.symlink_to(secret)
    with pytest.raises(StorageError, match="symbolic link"):
        store.read(location)
    with pytest.raises(StorageError, match="symbolic link"):
        store.size(location)
    stored.unlink()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "r.txt").write_text("SECRET")
    (tmp_path / "store" / "job" / "outputs").rmdir()
    (tmp_path / "store" / "job" / "outputs").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StorageError, match="symbolic link"):
        store.read(location)
