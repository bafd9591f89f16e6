"""Fetchers for pod_config: HTTP(S) URLs, S3 objects, IPFS CIDs and the
consumer's inline (raw) code.

HttpFetcher streams a file to disk in bounded chunks, hashing as it goes, with
separate connect and idle timeouts, retries with exponential backoff (and
resume through Range requests when the server allows it), manually followed
redirects, and an SSRF guard: every hop's host is resolved and vetted before
connecting, and the connection is pinned to the vetted addresses so a second
DNS answer (rebinding) cannot send it elsewhere. Hashing and writing run in
worker threads, one chunk behind the network, so receiving overlaps them.

StorageFetcher downloads s3:// objects and IPFS CIDs through plumbing.storage
in worker threads, charging the shared disk budget chunk by chunk.

Nothing here puts a URL, host, path or header value in an error message or a
log line: those are the publisher's secrets.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import functools
import hashlib
import ipaddress
import os
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict
from yarl import URL

from plumbing import storage
from plumbing.storage import ObjectNotFound, StorageConfig, StorageError

from .staging import (
    ByteBudget,
    Fetcher,
    FetchError,
    FileMeter,
    FileSource,
    StagingLimits,
    current_file_context,
)

__all__ = [
    "CHUNK_BYTES",
    "FetchError",
    "HttpFetcher",
    "RawFetcher",
    "StorageFetcher",
    "address_refusal",
    "default_fetchers",
    "vet_host",
]

# Read, hash and write 256 KiB at a time: asyncio receives at most that much per
# call, so a chunk is one received buffer (no joining copy), and memory stays
# at a few chunks per download.
CHUNK_BYTES = 256 << 10
USER_AGENT = "c2d-pod-config/1"

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers the fetcher controls itself, or that would break framing; a DDO cannot set them.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "expect",
        "range",
        "if-range",
        "accept-encoding",
        "proxy-authorization",
        "proxy-connection",
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


# --------------------------------------------------------------------------- the SSRF guard

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _norm_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class _Policy:
    allow_names: frozenset[str]
    allow_nets: tuple[IPNetwork, ...]
    blocked_nets: tuple[IPNetwork, ...]

    @staticmethod
    def of(limits: StagingLimits) -> _Policy:
        names: set[str] = set()
        allow: list[IPNetwork] = []
        for entry in limits.allow_hosts:
            try:
                allow.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                names.add(_norm_host(entry))
        blocked = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in limits.blocked_cidrs)
        return _Policy(frozenset(names), tuple(allow), blocked)


def _embedded_ipv4(addr: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, NAT64, compatible):
    the network may deliver to those, so they are vetted too."""
    if not isinstance(addr, ipaddress.IPv6Address):
        return []
    found = [a for a in (addr.ipv4_mapped, addr.sixtofour) if a is not None]
    if addr in _NAT64:
        found.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    if int(addr) >> 32 == 0 and int(addr) > 1:  # deprecated ::a.b.c.d
        found.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return found


def _in_any(addrs: Iterable[IPAddress], nets: Iterable[IPNetwork]) -> bool:
    nets = tuple(nets)
    return any(a.version == n.version and a in n for a in addrs for n in nets)


def _category(addr: IPAddress) -> str | None:
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if addr.is_link_local:
        return "link-local"
    if addr.is_multicast:
        return "multicast"
    if addr.is_private:
        return "private"
    # Stricter than the RFC1918 list on purpose: shared (100.64/10, where some
    # clouds put metadata services), reserved and documentation ranges are no
    # place a public dataset lives either.
    if not addr.is_global:
        return "non-public"
    return None


def address_refusal(address: str | IPAddress, limits: StagingLimits, host: str = "") -> str | None:
    """Why connecting to `address` (for `host`) is refused, or None if allowed.

    Allowed when `host` or the address is in `limits.allow_hosts`; otherwise
    refused when it (or an IPv4 address it embeds) is loopback, link-local,
    private, unspecified, multicast, otherwise non-public, or in
    `limits.blocked_cidrs`.
    """
    policy = _Policy.of(limits)
    addr = address if not isinstance(address, str) else _parse_ip(address)
    if addr is None:
        return "not an IP address"
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        addr = ipaddress.IPv6Address(str(addr).split("%", 1)[0])
    candidates: list[IPAddress] = [addr, *_embedded_ipv4(addr)]
    if host and _norm_host(host) in policy.allow_names:
        return None
    if _in_any(candidates, policy.allow_nets):
        return None
    if _in_any(candidates, policy.blocked_nets):
        return "blocked"
    for a in candidates[1:] + candidates[:1]:  # the embedded IPv4 names the more telling category
        category = _category(a)
        if category:
            return category
    return None


async def vet_host(host: str, port: int, limits: StagingLimits) -> list[ResolveResult]:
    """Resolve `host` and refuse (FetchError "ssrf_refused") if ANY address is refused.

    Returns the vetted addresses, which the caller must connect to (and only to).
    """
    literal = _parse_ip(host)
    if literal is not None:
        infos = [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, str(literal))]
    else:
        loop = asyncio.get_running_loop()
        try:
            raw = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP),
                timeout=limits.connect_timeout_s,
            )
        except (socket.gaierror, UnicodeError) as exc:
            raise _Transient("dns", "could not resolve the file's host name") from exc
        except TimeoutError as exc:
            raise _Transient(
                "dns", f"could not resolve the file's host name within {limits.connect_timeout_s:g} s"
            ) from exc
        infos = [(fam, sockaddr[0]) for fam, _, _, _, sockaddr in raw]
        if not infos:
            raise _Transient("dns", "could not resolve the file's host name")
    for _, ip in infos:
        why = address_refusal(ip, limits, host)
        if why:
            raise FetchError("ssrf_refused", f"the file's address is on a refused network ({why})")
    seen: set[str] = set()
    results: list[ResolveResult] = []
    for family, ip in infos:
        if ip in seen:
            continue
        seen.add(ip)
        results.append(
            {"hostname": host, "host": ip, "port": port, "family": family, "proto": 0, "flags": socket.AI_NUMERICHOST}
        )
    return results


class _PinnedResolver(AbstractResolver):
    """Answers the connector only with addresses `vet_host` approved for this fetch."""

    def __init__(self) -> None:
        self._pins: dict[tuple[str, int], list[ResolveResult]] = {}

    def pin(self, host: str, port: int, results: list[ResolveResult]) -> None:
        self._pins[(_norm_host(host), port)] = results

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = self._pins.get((_norm_host(host), port))
        if not results:
            raise OSError("refusing to connect to an address that was not vetted")
        if family not in (0, socket.AF_UNSPEC):
            results = [r for r in results if r["family"] == family]
        return [dict(r, hostname=host) for r in results]  # type: ignore[misc]

    async def close(self) -> None:
        return None


# --------------------------------------------------------------------------- writing


# Hashing and writing run here, off the event loop (both release the GIL), so
# one download's chunk is hashed and written while the loop receives the next.
# Its own pool: S3 and IPFS downloads hold the default executor's threads.
_WRITERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="c2d-pod-config-write")


class _Sink:
    """The temporary file a download streams into, with its hash and charges."""

    def __init__(self, dest: Path, limits: StagingLimits, budget: ByteBudget) -> None:
        # O_NOFOLLOW: a planted symlink at the temporary name must not redirect the write.
        # Unbuffered: chunks are large, a buffer would only add a copy and memory.
        self._fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        self._meter = FileMeter(limits, budget)
        self._hasher = hashlib.sha256()
        self._pending: asyncio.Future[None] | None = None
        self.validator = ""  # strong ETag or Last-Modified of the entity being downloaded

    @property
    def size(self) -> int:
        return self._meter.size

    def check_declared(self, remaining: int) -> None:
        """Refuse early on a declared length (Content-Length); streaming still counts."""
        self._meter.check_declared(remaining)

    def _put(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise _disk_error(exc) from None
        self._hasher.update(chunk)

    def write(self, chunk: bytes | memoryview) -> None:
        self._meter.add(len(chunk))  # before writing: concurrent downloads cannot overshoot
        self._put(chunk)

    async def write_behind(self, chunk: bytes) -> None:
        """Charge `chunk` now and write it in a worker thread, after the previous
        one; returns once the previous chunk is on disk (at most one in flight)."""
        await self.settle()
        self._meter.add(len(chunk))
        self._pending = asyncio.get_running_loop().run_in_executor(_WRITERS, self._put, chunk)

    async def settle(self) -> None:
        """Wait for the chunk in flight; raise its error, if any.

        It is waited for even when the caller is cancelled, because the file must
        not be truncated, closed or removed under a thread still writing it."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        cancelled = False
        while not pending.done():
            try:
                await asyncio.wait([pending])
            except asyncio.CancelledError:
                cancelled = True
        error = pending.exception()
        if error is not None:
            raise error
        if cancelled:
            raise asyncio.CancelledError()

    def restart(self) -> None:
        """Start over from byte 0 (the server could not resume)."""
        try:
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
        except OSError as exc:
            raise _disk_error(exc) from None
        self._meter.reset()
        self._hasher = hashlib.sha256()
        self.validator = ""

    def finish(self) -> tuple[int, str]:
        try:
            os.close(self._fd)
        except OSError as exc:
            raise _disk_error(exc) from None
        return self.size, self._hasher.hexdigest()

    def abandon(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._meter.reset()


def _disk_error(exc: OSError) -> FetchError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return FetchError("disk_quota_exceeded", "the environment's disk is full")
    return FetchError("write_failed", f"could not write the file ({errno.errorcode.get(exc.errno or 0, 'I/O error')})")


# --------------------------------------------------------------------------- raw


class RawFetcher:
    """The consumer's inline code (source type "raw")."""

    async def fetch(self, source: FileSource, dest: Path, limits: StagingLimits, budget: ByteBudget) -> tuple[int, str]:
        data = source.content.encode("utf-8")
        sink = _Sink(dest, limits, budget)
        try:
            sink.check_declared(len(data))
            view = memoryview(data)
            for start in range(0, len(view), CHUNK_BYTES):
                sink.write(view[start : start + CHUNK_BYTES])
            return sink.finish()
        except BaseException:
            sink.abandon()
            dest.unlink(missing_ok=True)
            raise


# --------------------------------------------------------------------------- http


class _Transient(Exception):
    """A failure worth retrying; `message` is safe to show."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _content_range_start(value: str | None) -> int | None:
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    return int(m.group(1)) if m else None


def _source_headers(headers: dict[str, str] | object) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in dict(headers).items():  # type: ignore[call-overload]
        if not isinstance(name, str) or not isinstance(value, str) or not _HEADER_NAME_RE.fullmatch(name):
            raise FetchError("invalid_source", "the file's HTTP headers are not valid")
        if any(c in value for c in "\r\n\0"):
            raise FetchError("invalid_source", "the file's HTTP headers are not valid")
        if name.lower() not in _RESERVED_HEADERS:
            out[name] = value
    return out


def _parse_url(text: str) -> URL:
    try:
        url = URL(text)
    except (ValueError, TypeError):
        raise FetchError("invalid_source", "the file location is not a valid http(s) URL") from None
    if url.scheme not in ("http", "https") or not url.raw_host:
        raise FetchError("invalid_source", "the file location is not a valid http(s) URL")
    return url.with_fragment(None)


class HttpFetcher:
    """Source type "url": http(s) with timeouts, retries, redirects and the SSRF guard."""

    def __init__(self, user_agent: str = USER_AGENT, ssl_context: ssl.SSLContext | None = None) -> None:
        self._user_agent = user_agent
        # None: the system's CAs with full verification; an operator may pass a
        # context that also trusts a private CA. Verification is never turned off.
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True

    async def fetch(self, source: FileSource, dest: Path, limits: StagingLimits, budget: ByteBudget) -> tuple[int, str]:
        ctx = current_file_context()
        url = _parse_url(source.url)
        extra = _source_headers(source.headers)
        sink = _Sink(dest, limits, budget)
        resolver = _PinnedResolver()
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True)
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=limits.connect_timeout_s,
            sock_connect=limits.connect_timeout_s,
            sock_read=limits.idle_timeout_s,  # the idle timeout: no byte for this long
        )
        try:
            async with aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                auto_decompress=False,  # store and hash exactly the bytes served
                trust_env=False,  # no proxy from the environment: it would bypass the guard
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": self._user_agent},
            ) as session:
                attempt = 0
                while True:
                    try:
                        await self._attempt(session, resolver, url, extra, sink, limits)
                        return sink.finish()
                    except _Transient as t:
                        if attempt >= limits.max_retries:
                            tries = f" (after {attempt + 1} attempts)" if attempt else ""
                            raise FetchError(t.kind, f"{t.message}{tries}") from None
                        attempt += 1
                        delay = self._delay(attempt, t.retry_after, limits)
                        ctx.log.warning(
                            "%s: %s; retry %d of %d in %.2f s",
                            ctx.label,
                            t.message,
                            attempt,
                            limits.max_retries,
                            delay,
                        )
                        await asyncio.sleep(delay)
        except BaseException:
            sink.abandon()
            dest.unlink(missing_ok=True)
            raise

    @staticmethod
    def _delay(attempt: int, retry_after: float | None, limits: StagingLimits) -> float:
        if retry_after is not None:
            return min(retry_after, limits.retry_after_cap_s)
        # Exponential backoff with jitter, so parallel downloads do not retry in lockstep.
        step = limits.backoff_base_s * (2 ** (attempt - 1))
        return step / 2 + random.uniform(0, step / 2)

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        resolver: _PinnedResolver,
        origin_url: URL,
        extra: CIMultiDict[str],
        sink: _Sink,
        limits: StagingLimits,
    ) -> None:
        current = origin_url
        redirects = 0
        while True:
            host, port = current.raw_host or "", current.port or (443 if current.scheme == "https" else 80)
            # Vet on every hop, and pin the connection to what was vetted.
            resolver.pin(host, port, await vet_host(host, port, limits))

            headers: CIMultiDict[str] = CIMultiDict()
            if current.origin() == origin_url.origin():
                # The DDO's headers (often credentials) go only to the origin they were written for.
                headers.update(extra)
            headers["Accept-Encoding"] = "identity"
            if sink.size and sink.validator:
                headers["Range"] = f"bytes={sink.size}-"
                headers["If-Range"] = sink.validator
            elif sink.size:
                sink.restart()  # nothing to tell the server which version we have: start over

            try:
                async with session.get(current, headers=headers, allow_redirects=False, ssl=self._ssl) as resp:
                    status = resp.status
                    if status in _REDIRECT_STATUSES:
                        location = resp.headers.get("Location")
                        if not location:
                            raise FetchError("http_error", f"HTTP {status} without a Location")
                        redirects += 1
                        if redirects > limits.max_redirects:
                            raise FetchError("too_many_redirects", f"more than {limits.max_redirects} HTTP redirects")
                        try:
                            current = current.join(URL(location)).with_fragment(None)
                        except (ValueError, TypeError):
                            raise FetchError("http_error", f"HTTP {status} with an invalid Location") from None
                        if current.scheme not in ("http", "https") or not current.raw_host:
                            raise FetchError("invalid_source", f"HTTP {status} to a location that is not http(s)")
                        continue
                    if status == 429 or status >= 500:
                        raise _Transient("http_error", f"HTTP {status}", _retry_after(resp.headers.get("Retry-After")))
                    if status == 416 and sink.size:
                        sink.restart()
                        raise _Transient("http_error", "HTTP 416 on resume")
                    if not 200 <= status < 300:
                        raise FetchError("http_error", f"HTTP {status}")

                    if status == 206:
                        start = _content_range_start(resp.headers.get("Content-Range"))
                        if start != sink.size:
                            sink.restart()
                            if start != 0:  # not where we are, nor the beginning: try again from 0
                                raise _Transient("http_error", "the server sent an unexpected part of the file")
                    elif sink.size:
                        sink.restart()  # the server sent the whole file again (or a newer one)

                    if not sink.size:
                        etag = resp.headers.get("ETag", "")
                        sink.validator = (
                            etag if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified", "")
                        )
                    if resp.content_length is not None:
                        sink.check_declared(resp.content_length)
                    try:
                        while chunk := await resp.content.read(CHUNK_BYTES):
                            await sink.write_behind(chunk)
                    finally:
                        await sink.settle()  # a write error wins over a broken connection
                    return
            except (FetchError, _Transient):
                raise
            except aiohttp.ClientSSLError:
                raise FetchError("tls_failed", "the TLS connection to the file's server failed verification") from None
            except aiohttp.ConnectionTimeoutError:
                raise _Transient("timeout", f"could not connect within {limits.connect_timeout_s:g} s") from None
            except (TimeoutError, aiohttp.SocketTimeoutError):
                raise _Transient("timeout", f"no data received for {limits.idle_timeout_s:g} s") from None
            except aiohttp.ClientConnectorError as exc:
                code = errno.errorcode.get(exc.os_error.errno or 0, "network error")
                raise _Transient("connect", f"could not connect ({code})") from None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as exc:
                raise _Transient(
                    "connection", f"the connection broke off after {sink.size} bytes ({type(exc).__name__})"
                ) from None
            except aiohttp.InvalidURL:
                raise FetchError("invalid_source", "the file location is not a valid http(s) URL") from None
            except aiohttp.ClientResponseError as exc:
                raise FetchError("http_error", f"the server sent an invalid HTTP response ({exc.status})") from None
            except aiohttp.ClientError as exc:
                # Only the type: aiohttp's messages name the host.
                raise FetchError("http_error", f"the download failed ({type(exc).__name__})") from None


# --------------------------------------------------------------------------- s3 and ipfs


class _Stopped(Exception):
    """Raised inside a download thread whose staging was cancelled."""


class StorageFetcher:
    """Source types "s3" (s3://bucket/key) and "ipfs" (a CID), through plumbing.storage.

    The engine's storage configuration names the S3 endpoint and credentials
    and the Kubo RPC API. The synchronous download runs in a worker thread;
    every chunk is charged to the shared budget before it is written, so
    concurrent downloads cannot overshoot the disk. Transient failures are
    retried from byte 0 with backoff. Reasons never name the bucket, key or CID.
    """

    def __init__(self, config: StorageConfig) -> None:
        self._config = config

    def supports(self) -> tuple[str, ...]:
        """The source types this configuration can serve."""
        return (("s3",) if self._config.s3_endpoint else ()) + (("ipfs",) if self._config.ipfs_api else ())

    async def fetch(self, source: FileSource, dest: Path, limits: StagingLimits, budget: ByteBudget) -> tuple[int, str]:
        ctx = current_file_context()
        download = self._download_for(source)
        attempt = 0
        while True:
            try:
                timeouts = (limits.connect_timeout_s, limits.idle_timeout_s)
                return await self._in_thread(functools.partial(download, timeouts=timeouts), dest, FileMeter(limits, budget))
            except StorageError as exc:
                if not exc.transient or attempt >= limits.max_retries:
                    tries = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise _storage_failure(exc, source.type, tries) from None
                attempt += 1
                delay = HttpFetcher._delay(attempt, None, limits)
                ctx.log.warning(
                    "%s: %s; retry %d of %d in %.2f s",
                    ctx.label,
                    _storage_failure(exc, source.type, "").message,
                    attempt,
                    limits.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)

    def _download_for(self, source: FileSource) -> Callable[..., tuple[int, str]]:
        if source.type == "s3":
            bucket, sep, key = source.url.removeprefix("s3://").partition("/")
            if not source.url.startswith("s3://") or not bucket or not sep or not key:
                raise FetchError("invalid_source", "the S3 location is not s3://bucket/key")
            return functools.partial(storage.download_s3, self._config, bucket, key)
        try:
            cid = str(storage.parse_cid(source.cid))
        except StorageError:
            raise FetchError("invalid_source", "the IPFS CID is not valid") from None
        return functools.partial(storage.download_ipfs, self._config, cid)

    @staticmethod
    async def _in_thread(download: Callable[..., tuple[int, str]], dest: Path, meter: FileMeter) -> tuple[int, str]:
        stopped = threading.Event()

        def on_chunk(n: int) -> None:
            if stopped.is_set():
                raise _Stopped()
            meter.add(n)

        def on_size(size: int) -> None:
            meter.check_declared(size)

        # max_bytes=None: the meter enforces the per-file limit, with our error codes.
        # durable=False: a half-staged workspace is never reused (the engine starts over).
        work = asyncio.ensure_future(
            asyncio.to_thread(
                download, dest, None, on_size=on_size, on_chunk=on_chunk, chunk_bytes=CHUNK_BYTES, durable=False
            )
        )
        done = False
        try:
            result = await asyncio.shield(work)
            done = True
            return result
        except asyncio.CancelledError:
            # A thread cannot be cancelled: tell it to stop at its next chunk and
            # wait, so no file appears under `dest` after staging gave up on it.
            stopped.set()
            await asyncio.wait([work])
            dest.unlink(missing_ok=True)
            raise
        finally:
            if not done:
                meter.reset()
                if work.done() and not work.cancelled():
                    work.exception()  # retrieved: asyncio would otherwise log it as lost


def _storage_failure(exc: StorageError, kind: str, tries: str) -> FetchError:
    """A FetchError for a storage failure, naming the cause but not the bucket, key or CID."""
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return _disk_error(cause)
    if kind == "s3":
        code = getattr(cause, "code", "") or ""
        if isinstance(exc, ObjectNotFound):
            return FetchError("fetch_failed", "the S3 object does not exist")
        if code in ("NoSuchBucket", "NoSuchKey", "NoSuchObject"):
            return FetchError("fetch_failed", "the S3 bucket does not exist")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"):
            return FetchError("fetch_failed", f"the S3 server refused access ({code})")
        if exc.transient:
            return FetchError("fetch_failed", f"the S3 server could not be reached or failed{tries}")
        return FetchError("fetch_failed", f"the S3 download failed ({code or type(cause).__name__})")
    if isinstance(exc, ObjectNotFound):
        return FetchError("fetch_failed", "the IPFS node does not have the CID")
    if "not a file" in exc.message:
        return FetchError("invalid_source", "the IPFS CID names a directory, not a file")
    if exc.transient:
        return FetchError("fetch_failed", f"the IPFS node could not be reached or failed{tries}")
    return FetchError("fetch_failed", "the IPFS node refused the download")


def default_fetchers(
    user_agent: str = USER_AGENT,
    ssl_context: ssl.SSLContext | None = None,
    storage_config: StorageConfig | None = None,
) -> dict[str, Fetcher]:
    """The fetchers pod_config has: "url" and "raw" always; "s3" and "ipfs"
    when `storage_config` names an S3 endpoint or an IPFS API."""
    fetchers: dict[str, Fetcher] = {"url": HttpFetcher(user_agent, ssl_context), "raw": RawFetcher()}
    if storage_config is not None:
        store = StorageFetcher(storage_config)
        fetchers.update(dict.fromkeys(store.supports(), store))
    return fetchers
