"""A real HTTP server on 127.0.0.1 (random port) for the staging tests.

Each endpoint plays one behaviour a publisher's file server can have; the
server records every request so tests can count attempts, see headers and
measure concurrency.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    at: float


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    in_flight: int = 0
    max_in_flight: int = 0
    body_bytes_sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first_request: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    scheme: str = "http"
    _runner: web.AppRunner | None = None

    # -- lifecycle

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> FileServer:
        app = web.Application(middlewares=[self._record])
        r = app.router
        r.add_get("/file/{name}", self.file)
        r.add_get("/flaky/{name}", self.flaky)
        r.add_get("/flaky-norange/{name}", self.flaky_norange)
        r.add_get("/redirect/{n}/{name}", self.redirect_chain)
        r.add_get("/redirect-to", self.redirect_to)
        r.add_get("/slow", self.slow)
        r.add_get("/status/{code}", self.status)
        r.add_get("/fail-then-ok/{fails}/{name}", self.fail_then_ok)
        r.add_get("/throttled/{after}/{name}", self.throttled)
        r.add_get("/huge", self.huge)
        r.add_get("/huge-declared", self.huge_declared)
        r.add_get("/chunked/{name}", self.chunked)
        r.add_get("/auth/{name}", self.auth)
        r.add_get("/headers", self.headers)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        # self.port once started: a server stopped and started again is back where it was
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ssl_context)
        self.scheme = "https" if ssl_context else "http"
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def add(self, name: str, data: bytes) -> str:
        """Store a file; return its sha256."""
        self.files[name] = data
        return hashlib.sha256(data).hexdigest()

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    # -- bookkeeping

    @web.middleware
    async def _record(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        self.seen.append(Seen(request.path, dict(request.headers), time.monotonic()))
        self.counts[request.path] += 1
        self.first_request.set()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1

    @staticmethod
    def _etag(data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'

    async def _serve(self, request: web.Request, data: bytes, *, honour_range: bool = True) -> web.StreamResponse:
        etag = self._etag(data)
        rng = request.headers.get("Range", "")
        if_range = request.headers.get("If-Range")
        if honour_range and rng.startswith("bytes=") and rng.endswith("-") and if_range in (None, etag):
            start = int(rng[len("bytes=") : -1])
            body = data[start:]
            resp = web.Response(
                status=206,
                body=body,
                headers={"ETag": etag, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
            )
        else:
            body = data
            resp = web.Response(body=body, headers={"ETag": etag, "Accept-Ranges": "bytes"})
        self.body_bytes_sent[request.path] += len(body)
        return resp

    # -- endpoints

    async def file(self, request: web.Request) -> web.StreamResponse:
        delay = float(request.query.get("delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        return await self._serve(request, self.files[request.match_info["name"]])

    async def _half_then_reset(self, request: web.Request, data: bytes) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"ETag": self._etag(data), "Accept-Ranges": "bytes"})
        resp.content_length = len(data)
        await resp.prepare(request)
        half = data[: len(data) // 2]
        await resp.write(half)
        self.body_bytes_sent[request.path] += len(half)
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()  # the connection breaks off mid-body
        return resp

    async def flaky(self, request: web.Request) -> web.StreamResponse:
        data = self.files[request.match_info["name"]]
        if self.counts[request.path] == 1:
            return await self._half_then_reset(request, data)
        return await self._serve(request, data)

    async def flaky_norange(self, request: web.Request) -> web.StreamResponse:
        data = self.files[request.match_info["name"]]
        if self.counts[request.path] == 1:
            return await self._half_then_reset(request, data)
        return await self._serve(request, data, honour_range=False)

    async def redirect_chain(self, request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        name = request.match_info["name"]
        target = f"/redirect/{n - 1}/{name}" if n > 1 else f"/file/{name}"
        raise web.HTTPFound(target)

    async def redirect_to(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.query["location"])

    async def slow(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 100
        await resp.prepare(request)
        await resp.write(b"x")  # one byte, then silence
        await asyncio.sleep(60)
        return resp

    async def status(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=int(request.match_info["code"]), text="nope")

    async def fail_then_ok(self, request: web.Request) -> web.StreamResponse:
        if self.counts[request.path] <= int(request.match_info["fails"]):
            return web.Response(status=500, text="try later")
        return await self._serve(request, self.files[request.match_info["name"]])

    async def throttled(self, request: web.Request) -> web.StreamResponse:
        if self.counts[request.path] == 1:
            return web.Response(status=429, headers={"Retry-After": request.match_info["after"]})
        return await self._serve(request, self.files[request.match_info["name"]])

    async def huge(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # no Content-Length: chunked, length unknown in advance
        await resp.prepare(request)
        block = b"h" * 65536
        for _ in range(16384):  # up to 1 GiB, unless the client hangs up first
            await resp.write(block)
            self.body_bytes_sent[request.path] += len(block)
        return resp

    async def huge_declared(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 10 * 1024**3
        await resp.prepare(request)
        await asyncio.sleep(60)
        return resp

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        data = self.files[request.match_info["name"]]
        step = int(request.query.get("chunk", "16384"))
        pause = float(request.query.get("pause", "0.005"))
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(0, len(data), step):
            await resp.write(data[i : i + step])
            self.body_bytes_sent[request.path] += len(data[i : i + step])
            await asyncio.sleep(pause)
        return resp

    async def auth(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Api-Key") != "s3cr3t-header-value":
            return web.Response(status=401)
        return await self._serve(request, self.files[request.match_info["name"]])

    async def headers(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"ok")


@pytest.fixture
async def server() -> AsyncIterator[FileServer]:
    """A FileServer for one test (conftest.py files of the test folders import it)."""
    srv = await FileServer().start()
    yield srv
    await srv.stop()
