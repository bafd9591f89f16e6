"""The provider's streaming of a stored result (GetComputeResult's reader):
offsets, bounded read-ahead, errors and early close, on a real local store.
A link planted in the store: tests/security/test_job_file_links.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from plumbing.storage import LocalStore, ObjectNotFound, StorageError
from services.provider.persistence.result_files import READ_AHEAD, RESULT_CHUNK, stream_chunks


async def _all(chunks) -> list[tuple[bytes, int]]:  # type: ignore[no-untyped-def]
    return [item async for item in chunks]


@pytest.fixture
def stored(tmp_path) -> tuple[LocalStore, str, bytes]:  # type: ignore[no-untyped-def]
    store = LocalStore(tmp_path / "store")
    data = os.urandom(2 * RESULT_CHUNK + 12345)
    (tmp_path / "result.bin").write_bytes(data)
    return store, store.put_file("job/outputs/result.bin", tmp_path / "result.bin").location, data


async def test_streams_the_whole_file_in_chunks_with_their_offsets(stored):
    store, location, data = stored
    chunks = await _all(stream_chunks(store, location, 0))
    assert [len(c) for c, _ in chunks] == [RESULT_CHUNK, RESULT_CHUNK, 12345]
    assert [o for _, o in chunks] == [0, RESULT_CHUNK, 2 * RESULT_CHUNK]
    assert b"".join(c for c, _ in chunks) == data


async def test_resumes_from_an_offset_and_yields_nothing_from_the_end(stored):
    store, location, data = stored
    chunks = await _all(stream_chunks(store, location, RESULT_CHUNK + 7))
    assert chunks[0][1] == RESULT_CHUNK + 7
    assert b"".join(c for c, _ in chunks) == data[RESULT_CHUNK + 7 :]
    assert await _all(stream_chunks(store, location, len(data))) == []


class CountingStore:
    """Hands out numbered chunks forever and records how many were read and whether the read was closed."""

    kind = "local"

    def __init__(self, fail_at: int | None = None) -> None:
        self.read_count = 0
        self.closed = threading.Event()
        self.fail_at = fail_at

    def read(self, location: str, offset: int = 0, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        try:
            while True:
                if self.read_count == self.fail_at:
                    raise StorageError(f"cannot reach the storage while reading {location}", transient=True)
                self.read_count += 1
                yield b"x" * 10
        finally:
            self.closed.set()


async def test_reads_at_most_read_ahead_chunks_beyond_the_one_being_sent():
    store = CountingStore()
    chunks = stream_chunks(store, "local:x", 0)  # type: ignore[arg-type]
    async with contextlib.aclosing(chunks):
        await anext(chunks)
        await asyncio.sleep(0.2)  # a slow consumer: the reader must wait for room
        assert store.read_count == READ_AHEAD + 1
        await anext(chunks)
        await asyncio.sleep(0.2)
        assert store.read_count == READ_AHEAD + 2


async def test_closing_early_stops_the_reader_and_releases_the_storage_read():
    store = CountingStore()
    chunks = stream_chunks(store, "local:x", 0)  # type: ignore[arg-type]
    await anext(chunks)
    await chunks.aclose()
    assert store.closed.is_set()  # released before aclose() returned
    # The reader has finished its work; its thread ends an instant later.
    readers = [t for t in threading.enumerate() if t.name == "result-read-ahead"]
    for reader in readers:
        reader.join(timeout=5)
    assert not any(reader.is_alive() for reader in readers)


async def test_a_storage_error_while_streaming_reaches_the_consumer_after_the_chunks_before_it():
    store = CountingStore(fail_at=2)
    got = []
    with pytest.raises(StorageError, match="cannot reach the storage"):
        async for data, _ in stream_chunks(store, "local:x", 0):  # type: ignore[arg-type]
            got.append(data)
    assert len(got) == 2
    assert store.closed.is_set()


async def test_a_missing_object_raises_object_not_found(tmp_path):
    with pytest.raises(ObjectNotFound):
        await _all(stream_chunks(LocalStore(tmp_path), "local:job/outputs/missing.bin", 0))


MMAPPED_BY_A_4_MIB_BUFFER = """
import ctypes, sys
from plumbing import server

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Mallinfo2
if sys.argv[1] == "tuned":
    server.reuse_freed_memory()
before = mallinfo2().hblkhd
buffer = bytearray(4 << 20)
print(mallinfo2().hblkhd - before)
"""


@pytest.mark.parametrize(("how", "mmapped"), [("default", True), ("tuned", False)])
def test_servers_make_glibc_serve_big_buffers_from_the_reusable_heap(how, mmapped):
    # a fresh process, so glibc's adaptive thresholds start from their defaults
    out = subprocess.run(
        [sys.executable, "-c", MMAPPED_BY_A_4_MIB_BUFFER, how],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert (int(out.stdout) >= 4 << 20) is mmapped
