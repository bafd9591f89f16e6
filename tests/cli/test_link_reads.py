"""The SDK's link reader (c2d_sdk.links): a socket-reading thread and a hashing
thread ahead of the caller, in a ring of reused buffers.

Against a real HTTP server on a socket, which plays the storage behind a
link, honest or not: the bytes arrive whole, in order, hashed; memory stays
at the ring's buffers however large the file; a changed byte anywhere, more
bytes than signed, or a storage that hangs up all fail; a caller that stops
early gets its threads back at once, even from a storage that stalls.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from c2d_sdk import errors, links

KiB = 1 << 10
BODY = bytes(range(256)) * (4 * KiB) + b"tail"  # 1 MiB and 4 bytes: many chunks of the ring below
Serve = Callable[[BaseHTTPRequestHandler], None]


@contextmanager
def storage(serve: Serve) -> Iterator[str]:
    """A URL answered by ``serve`` on a real socket."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            serve(self)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/results/big.bin?X-Amz-Signature=x"
    finally:
        server.shutdown()
        server.server_close()


def sends(body: bytes, length: int | None = None, declared: bool = True) -> Serve:
    def serve(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        if declared:  # else the body ends when the connection does (HTTP/1.0)
            handler.send_header("Content-Length", str(len(body) if length is None else length))
        handler.end_headers()
        handler.wfile.write(body)

    return serve


@pytest.fixture
def small_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    """64 KiB buffers, 3 of them: a 1 MiB body goes round the ring many times."""
    monkeypatch.setattr(links, "CHUNK", 64 * KiB)
    monkeypatch.setattr(links, "DEPTH", 3)


def link_threads(ending_within_s: float = 5.0) -> list[threading.Thread]:
    """The reader's threads still running once each had `ending_within_s` to finish: a thread
    hands its result over in its last lines, so it may still be returning just after."""
    threads = [t for t in threading.enumerate() if t.name.startswith("c2d-link-")]
    for thread in threads:
        thread.join(ending_within_s)
    return [t for t in threads if t.is_alive()]


async def read_all(url: str, size: int) -> tuple[bytes, str, set[int]]:
    """(the bytes, their sha256 as the reader hashed them, the buffers they came in)."""
    link = await links.open_link(url, size, "big.bin")
    got, buffers = bytearray(), set()
    async for chunk in link:
        buffers.add(id(chunk.obj))
        got += chunk
    return bytes(got), link.sha256(), buffers


async def test_a_link_is_read_whole_in_order_and_hashed_in_a_bounded_ring(small_ring):
    with storage(sends(BODY)) as url:
        got, sha256, buffers = await read_all(url, len(BODY))
    assert got == BODY
    assert sha256 == hashlib.sha256(BODY).hexdigest()
    assert len(buffers) <= 3  # 17 chunks, never more than the ring's buffers held at once
    assert link_threads() == []


async def test_one_changed_byte_late_in_the_file_changes_the_sha256(small_ring):
    tampered = bytearray(BODY)
    tampered[len(BODY) - 100] ^= 1  # in the last ring turn, after many buffers were reused
    with storage(sends(bytes(tampered))) as url:
        got, sha256, _ = await read_all(url, len(BODY))
    assert got == tampered
    assert sha256 != hashlib.sha256(BODY).hexdigest()
    assert sha256 == hashlib.sha256(tampered).hexdigest()


async def test_more_bytes_than_signed_are_refused(small_ring):
    # declared up front
    with storage(sends(BODY)) as url, pytest.raises(errors.IntegrityError, match="serves 1048580 bytes"):
        await read_all(url, len(BODY) - 1)
    # or not declared: counted as they arrive
    with storage(sends(BODY, declared=False)) as url:
        link = await links.open_link(url, len(BODY) - 1, "big.bin")
        with pytest.raises(errors.IntegrityError, match="more than the 1048579 bytes"):
            async for _ in link:
                pass
    assert link_threads() == []


async def test_a_storage_that_hangs_up_early_fails_the_read(small_ring):
    def hangs_up(handler: BaseHTTPRequestHandler) -> None:
        sends(BODY[: 300 * KiB], length=len(BODY))(handler)
        handler.close_connection = True

    with storage(hangs_up) as url:
        link = await links.open_link(url, len(BODY), "big.bin")
        with pytest.raises(errors.Unreachable, match="big.bin: the link's storage stopped answering"):
            async for _ in link:
                pass
        with pytest.raises(errors.C2DError, match="only after a whole hashed read"):
            link.sha256()
    assert link_threads() == []


async def test_a_caller_that_stops_early_gets_its_threads_back_from_a_stalled_storage(small_ring):
    release = threading.Event()

    def stalls(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(BODY)))
        handler.end_headers()
        handler.wfile.write(BODY[: 100 * KiB])
        handler.wfile.flush()
        release.wait(60)  # then nothing more until the test ends

    with storage(stalls) as url:
        chunks = aiter(await links.open_link(url, len(BODY), "big.bin", timeout=60))
        first = await anext(chunks)
        assert bytes(first) == BODY[: len(first)]
        assert len(link_threads(ending_within_s=0)) == 2  # the reader (blocked in the socket) and the hasher
        await asyncio.wait_for(chunks.aclose(), 30)  # not the 60 s the socket would wait
        assert link_threads() == []
        release.set()
