"""Reading a result file through the link the provider gave (GetComputeResultLink).

The link reads the file straight from its storage (an S3 presigned GET, an
IPFS gateway URL), so the bytes never pass through the provider. Whatever
answers is not trusted: more bytes than the signed size are refused as they
arrive, and the caller checks the sha256 against the provider-signed
manifest before taking the file (AsyncClient.verified_chunks).
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from http.client import HTTPResponse
from typing import cast

from .errors import C2DError, IntegrityError, Unreachable

# Bytes per read: fewer hand-overs between the reader thread and the event loop.
CHUNK = 4 << 20
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


async def open_link(url: str, size: int, what: str, timeout: float = TIMEOUT_S) -> AsyncIterator[memoryview]:
    """The bytes at ``url`` in chunks, at most ``size`` of them (``what`` names the file in errors).

    Raises Unreachable here, before any byte, when the link's storage does not
    answer, and C2DError when it refuses the link. A reader thread fills one
    buffer while the caller uses the other: each chunk is valid until the
    next one is asked for.
    """
    loop = asyncio.get_running_loop()
    response = await loop.run_in_executor(None, _open, url, timeout)
    return _chunks(response, size, what)


async def link_chunks(url: str, size: int, what: str, timeout: float = TIMEOUT_S) -> AsyncIterator[memoryview]:
    """open_link's chunks, as one iterator."""
    async for chunk in await open_link(url, size, what, timeout):
        yield chunk


async def _chunks(response: HTTPResponse, size: int, what: str) -> AsyncIterator[memoryview]:
    loop = asyncio.get_running_loop()
    buffers = (bytearray(CHUNK), bytearray(CHUNK))
    pending: asyncio.Future[int] | None = None
    try:
        declared = response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > size:
            raise IntegrityError(f"{what}: the link serves {declared} bytes; the provider signed {size}")
        received, turn = 0, 0
        pending = loop.run_in_executor(None, response.readinto, buffers[turn])
        while True:
            try:
                count = await pending
            except OSError as exc:
                raise Unreachable(f"{what}: the link's storage stopped answering: {exc}") from None
            pending = None
            if count == 0:
                return
            received += count
            if received > size:
                raise IntegrityError(f"{what}: the link serves more than the {size} bytes the provider signed")
            filled = memoryview(buffers[turn])[:count]
            turn ^= 1
            pending = loop.run_in_executor(None, response.readinto, buffers[turn])
            yield filled
    finally:
        if pending is not None:  # the reader must be done with the response before it is closed
            with contextlib.suppress(Exception):
                await pending
        response.close()
