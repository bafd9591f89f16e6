"""plumbing.job_files: what a job left in its workspace is opened without following links."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plumbing import job_files


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
