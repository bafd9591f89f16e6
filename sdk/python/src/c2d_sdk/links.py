"""Reading a result file through the link the provider gave (GetComputeResultLink).

The link reads the file straight from its storage (an S3 presigned GET, an
IPFS gateway URL), so the bytes never pass through the provider. Whatever
answers is not trusted: more bytes than the signed size are refused as they
arrive, and the caller checks the sha256 against the provider-signed
manifest before taking the file (AsyncClient.verified_chunks).

The storage reads at its own speed only if the consumer keeps up, and the
sha256 costs as much CPU as the rest of the read: so one thread reads from
the socket into a small ring of reusable buffers, a second hashes them in
order (hashlib lets go of the GIL), and the caller gets each buffer after
it is hashed. The three overlap on as many cores as there are; memory stays
at DEPTH * CHUNK however slow the caller is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import queue
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from http.client import HTTPResponse
from typing import cast

from .errors import C2DError, IntegrityError, Unreachable

# Bytes per read (fewer hand-overs between the threads), and buffers in flight.
CHUNK = 4 << 20
DEPTH = 4
TIMEOUT_S = 60.0


def _opener() -> urllib.request.OpenerDirector:
    """HTTP(S) only, redirects too (a gateway may redirect): never file:, ftp: or data:."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _open(url: str, timeout: float) -> HTTPResponse:
    if not url.startswith(("https://", "http://")):
        raise C2DError(f"the provider offered a link that is not http(s): {url[:40]!r}")
    try:
        return cast(HTTPResponse, _opener().open(urllib.request.Request(url), timeout=timeout))
    except urllib.error.HTTPError as exc:
        body = exc.read(2048).decode(errors="replace")
        exc.close()
        # S3 says why in <Message> (expired, signature does not match, access denied)
        why = body.split("<Message>", 1)[1].split("</Message>", 1)[0] if "<Message>" in body else exc.reason
        raise C2DError(
            f"the result link was refused (HTTP {exc.code}: {why}); links are short-lived: ask for a new one"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"the result link's storage is unreachable: {reason}") from None


async def open_link(url: str, size: int, what: str, timeout: float = TIMEOUT_S, hashing: bool = True) -> LinkBytes:
    """The bytes at ``url`` in chunks, at most ``size`` of them (``what`` names the file in errors),
    hashed on the way (``LinkBytes.sha256``) unless ``hashing`` is off.

    Raises Unreachable here, before any byte, when the link's storage does not
    answer, and C2DError when it refuses the link.
    """
    loop = asyncio.get_running_loop()
    response = await loop.run_in_executor(None, _open, url, timeout)
    return LinkBytes(response, size, what, hashing)


async def link_chunks(url: str, size: int, what: str, timeout: float = TIMEOUT_S) -> AsyncIterator[memoryview]:
    """open_link's chunks, unhashed, as one iterator."""
    async for chunk in await open_link(url, size, what, timeout, hashing=False):
        yield chunk


_End = None  # the reader's last word: no more bytes


class LinkBytes:
    """A link's bytes, read and hashed ahead of the caller (iterate once).

    Each chunk is a view of a reused buffer, valid until the next one is asked for.
    """

    def __init__(self, response: HTTPResponse, size: int, what: str, hashing: bool) -> None:
        self._response, self._size, self._what = response, size, what
        self._digest = hashlib.sha256() if hashing else None
        self._complete = False

    def sha256(self) -> str:
        """The hex sha256 of every byte read, once the last chunk was taken."""
        if self._digest is None or not self._complete:
            raise C2DError(f"{self._what}: the link's sha256 is known only after a whole hashed read")
        return self._digest.hexdigest()

    def __aiter__(self) -> AsyncIterator[memoryview]:
        return self._chunks()

    def _read(self, free: queue.SimpleQueue, filled: queue.SimpleQueue, stop: threading.Event) -> None:
        """The reader thread: fills free buffers from the socket, in order."""
        received = 0
        try:
            while not stop.is_set():
                buffer = free.get()
                if buffer is None:  # the caller stopped
                    return
                try:
                    count = self._response.readinto(buffer)
                except (OSError, http.client.HTTPException) as exc:  # e.g. IncompleteRead: it hung up
                    if stop.is_set():
                        return
                    raise Unreachable(f"{self._what}: the link's storage stopped answering: {exc}") from None
                if count == 0:
                    if self._response.length:  # http.client ends a cut-short body quietly
                        raise Unreachable(
                            f"{self._what}: the link's storage stopped answering after {received} bytes "
                            f"of the {received + self._response.length} it announced"
                        )
                    return
                received += count
                if received > self._size:
                    raise IntegrityError(
                        f"{self._what}: the link serves more than the {self._size} bytes the provider signed"
                    )
                filled.put((buffer, count))
        except Exception as exc:  # noqa: BLE001 - raised in the caller, who would otherwise wait forever
            filled.put(exc)
        finally:
            filled.put(_End)

    def _hash(self, filled: queue.SimpleQueue, deliver: Callable[[object], object]) -> None:
        """The hashing thread: hashes each filled buffer in order, then hands it to the caller."""
        while True:
            item = filled.get()
            if isinstance(item, tuple) and self._digest is not None:
                buffer, count = item
                self._digest.update(memoryview(buffer)[:count])
            deliver(item)
            if item is _End:
                return

    async def _chunks(self) -> AsyncIterator[memoryview]:
        declared = self._response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self._size:
            self._response.close()
            raise IntegrityError(f"{self._what}: the link serves {declared} bytes; the provider signed {self._size}")
        loop = asyncio.get_running_loop()
        free: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
        for _ in range(DEPTH):
            free.put(bytearray(CHUNK))
        filled: queue.SimpleQueue[object] = queue.SimpleQueue()
        ready: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()
        reader = _thread(loop, self._read, free, filled, stop)
        hasher = _thread(loop, self._hash, filled, lambda item: loop.call_soon_threadsafe(ready.put_nowait, item))
        try:
            while True:
                item = await ready.get()
                if item is _End:
                    self._complete = True
                    return
                if isinstance(item, BaseException):
                    raise item
                buffer, count = cast(tuple[bytearray, int], item)
                yield memoryview(buffer)[:count]
                free.put(buffer)  # the caller is done with it
        finally:
            stop.set()
            free.put(None)  # a reader waiting for a buffer stops
            if not self._complete:  # a reader blocked in the socket returns at once
                _hang_up(self._response)
            # both threads must be done with the response and the buffers before it is closed
            with contextlib.suppress(Exception):
                await reader
            with contextlib.suppress(Exception):
                await hasher
            self._response.close()


def _thread(loop: asyncio.AbstractEventLoop, target: Callable[..., None], *args: object) -> asyncio.Future[None]:
    """Runs target on a thread of its own (not the loop's executor: a reader blocked on its
    hasher must never wait for a pool thread), done when it returns."""
    done: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        try:
            target(*args)
        finally:
            loop.call_soon_threadsafe(done.set_result, None)

    threading.Thread(target=run, name=f"c2d-link-{target.__name__}", daemon=True).start()
    return done


def _hang_up(response: HTTPResponse) -> None:
    """Shuts the response's socket down: a thread blocked reading it returns (closing it under
    that thread would not be safe)."""
    sock = getattr(getattr(response.fp, "raw", None), "_sock", None)  # http.client keeps it there
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
