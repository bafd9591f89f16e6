"""Fetching a publisher's files safely: HTTP(S) URLs, S3 objects, IPFS CIDs
and the consumer's inline (raw) code. pod_config stages a job's files with
these fetchers; the provider fetches a trusted algorithm's files with the
same ones to check its filesChecksum before the consumer pays. Both read
the same settings (C2D_STAGING_*), so one SSRF policy holds for both.

HttpFetcher streams a file to disk in bounded chunks, hashing as it goes, with
separate connect and idle timeouts, retries with exponential backoff (and
resume through Range requests when the server allows it), manually followed
redirects, and an SSRF guard: every hop's host is resolved and vetted before
connecting, and the connection is pinned to the vetted addresses so a second
DNS answer (rebinding) cannot send it elsewhere. Each request runs in a
download thread that receives, hashes and writes large chunks: all three
release the GIL, so parallel downloads use every core.

StorageFetcher downloads s3:// objects and IPFS CIDs through plumbing.storage
in worker threads, charging the shared disk budget chunk by chunk.

Nothing here puts a URL, host, path or header value in an error message or a
log line: those are the publisher's secrets.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import errno
import functools
import hashlib
import http.client
import ipaddress
import logging
import os
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar, overload

from multidict import CIMultiDict
from yarl import URL

from plumbing import storage
from plumbing.settings import setting
from plumbing.storage import ObjectNotFound, StorageConfig, StorageError

__all__ = [
    "CHUNK_BYTES",
    "ByteBudget",
    "FetchError",
    "Fetcher",
    "FileContext",
    "FileMeter",
    "FileSource",
    "HttpFetcher",
    "RawFetcher",
    "StagingLimits",
    "StagingSettings",
    "StorageFetcher",
    "address_refusal",
    "current_file_context",
    "default_fetchers",
    "set_file_context",
    "source_of",
    "staging_limits",
    "vet_host",
]

T = TypeVar("T")

# Receive, hash and write up to 256 KiB at a time: large enough that the
# per-chunk Python work is small, small enough to stay in the CPU's cache
# between the three steps, and memory stays at one chunk per download.
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


# --------------------------------------------------------------------------- the fetcher contract


class FetchError(Exception):
    """A fetch failed. `message` is shown to the consumer: it must not contain the
    file's location or header values (say "HTTP 404", not the URL)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ByteBudget:
    """Bytes left on the job's disk, shared by every concurrent download.

    Fetchers charge each chunk *before* writing it, so concurrent downloads can
    never overshoot the total together. Downloads that run in worker threads
    (S3, IPFS) charge from those threads, hence the lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int:
        return self.limit - self.used

    def charge(self, n: int) -> None:
        with self._lock:
            if self.used + n > self.limit:
                raise FetchError(
                    "disk_quota_exceeded",
                    f"the job's files would exceed the environment's disk of {self.limit} bytes",
                )
            self.used += n

    def refund(self, n: int) -> None:
        # A download restarted from byte 0 gives back what it had charged.
        with self._lock:
            self.used = max(0, self.used - n)


class FileMeter:
    """One download's bytes, held against the per-file limit and the shared budget.

    `add(n)` is called before a chunk is written; it raises FetchError
    ("file_too_large" or "disk_quota_exceeded") instead of letting the chunk
    through. `reset()` gives every charged byte back (a restart from byte 0,
    or an abandoned download).
    """

    def __init__(self, limits: StagingLimits, budget: ByteBudget) -> None:
        self._limits = limits
        self._budget = budget
        self.size = 0  # bytes accepted (and charged) so far

    def check_declared(self, remaining: int) -> None:
        """Refuse early on a declared length (Content-Length, object size); `add` still counts."""
        total = self.size + remaining
        if total > self._limits.max_file_bytes:
            raise FetchError(
                "file_too_large",
                f"the file is {total} bytes, over the limit of {self._limits.max_file_bytes} bytes",
            )
        if remaining > self._budget.remaining:
            raise FetchError(
                "disk_quota_exceeded",
                f"the file's {total} bytes would exceed the environment's disk of {self._budget.limit} bytes",
            )

    def add(self, n: int) -> None:
        if self.size + n > self._limits.max_file_bytes:
            raise FetchError("file_too_large", f"the file is over the limit of {self._limits.max_file_bytes} bytes")
        self._budget.charge(n)
        self.size += n

    def reset(self) -> None:
        self._budget.refund(self.size)
        self.size = 0


class Fetcher(Protocol):
    async def fetch(self, source: FileSource, dest: Path, limits: StagingLimits, budget: ByteBudget) -> tuple[int, str]:
        """Stream `source` into `dest` (bounded memory; `dest` is a temporary
        name the caller renames), charging every byte to `budget` and refusing
        more than `limits.max_file_bytes`. Return (size, sha256 hex) of the bytes
        written. Raise FetchError(code, message) on failure."""
        ...


@dataclass(frozen=True)
class FileContext:
    """Which file a fetcher is working on, so it can log retries usefully."""

    label: str  # e.g. "dataset did:op:... file 0"; never a location
    log: logging.Logger


_FILE_CONTEXT: contextvars.ContextVar[FileContext | None] = contextvars.ContextVar("c2d_pod_config_file", default=None)


def set_file_context(context: FileContext) -> None:
    """Names the file the current task fetches (in its log lines)."""
    _FILE_CONTEXT.set(context)


def current_file_context() -> FileContext:
    """The file being fetched by the current task (pod_config's `stage()` sets it)."""
    ctx = _FILE_CONTEXT.get()
    return ctx or FileContext("file", logging.getLogger("c2d.fetching"))


@dataclass(frozen=True)
class FileSource:
    type: str  # "url" | "s3" | "ipfs" | "raw"
    url: str = ""  # http(s)://... for "url"; "s3://bucket/key" for "s3"
    headers: Mapping[str, str] = field(default_factory=dict)  # extra HTTP headers from the DDO
    cid: str = ""  # for "ipfs"
    content: str = ""  # for "raw" (the consumer's inline code)
    checksum: str = ""  # optional expected sha256 of the bytes, 64 lowercase hex

    def __repr__(self) -> str:
        # The location and headers are the publisher's secrets: keep them out of
        # tracebacks and debug output.
        return f"FileSource(type={self.type!r}, checksum={self.checksum!r})"


@dataclass(frozen=True)
class StagingLimits:
    max_file_bytes: int
    max_total_bytes: int  # the environment's disk
    connect_timeout_s: float = 10
    idle_timeout_s: float = 30  # no byte received for that long
    max_retries: int = 3
    backoff_base_s: float = 0.2
    max_redirects: int = 5
    parallelism: int = 4
    allow_hosts: tuple[str, ...] = ()  # hostnames or CIDRs that bypass the SSRF guard
    blocked_cidrs: tuple[str, ...] = ()  # extra ranges to refuse, e.g. the cluster service range
    retry_after_cap_s: float = 30  # a server's Retry-After is honoured up to this

    def __post_init__(self) -> None:
        if self.max_file_bytes < 0 or self.max_total_bytes < 0:
            raise ValueError("byte limits must be >= 0")
        if self.connect_timeout_s <= 0 or self.idle_timeout_s <= 0:
            raise ValueError("timeouts must be > 0")
        if self.max_retries < 0 or self.max_redirects < 0 or self.backoff_base_s < 0:
            raise ValueError("max_retries, max_redirects and backoff_base_s must be >= 0")
        if self.parallelism < 1:
            raise ValueError("parallelism must be >= 1")
        if self.retry_after_cap_s < 0:
            raise ValueError("retry_after_cap_s must be >= 0")


class FileLocation(Protocol):
    """A file location as the workflow carries it (c2d.common.v1.FileLocation)."""

    @property
    def type(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def cid(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def checksum(self) -> str: ...


def source_of(location: FileLocation) -> FileSource:
    return FileSource(
        type=location.type,
        url=location.url,
        headers=dict(location.headers),
        cid=location.cid,
        content=location.content,
        checksum=location.checksum,
    )


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


# A vetted address: (address family, IP address as text).
Pin = tuple[socket.AddressFamily, str]


async def vet_host(host: str, port: int, limits: StagingLimits) -> list[Pin]:
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
        infos = [(fam, str(sockaddr[0])) for fam, _, _, _, sockaddr in raw]
        if not infos:
            raise _Transient("dns", "could not resolve the file's host name")
    for _, ip in infos:
        why = address_refusal(ip, limits, host)
        if why:
            raise FetchError("ssrf_refused", f"the file's address is on a refused network ({why})")
    return list(dict.fromkeys(infos))  # without duplicates, in the resolver's order


# --------------------------------------------------------------------------- writing


class _Sink:
    """The temporary file a download streams into, with its hash and charges.

    Written from one worker thread at a time: os.write and sha256 release the
    GIL on large buffers, so parallel downloads use every core."""

    def __init__(self, dest: Path, limits: StagingLimits, budget: ByteBudget) -> None:
        # O_NOFOLLOW: a planted symlink at the temporary name must not redirect the write.
        # Unbuffered: chunks are large, a buffer would only add a copy and memory.
        self._fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        self._meter = FileMeter(limits, budget)
        self._hasher = hashlib.sha256()
        self.validator = ""  # strong ETag or Last-Modified of the entity being downloaded

    @property
    def size(self) -> int:
        return self._meter.size

    def check_declared(self, remaining: int) -> None:
        """Refuse early on a declared length (Content-Length); streaming still counts."""
        self._meter.check_declared(remaining)

    def write(self, chunk: bytes | memoryview) -> None:
        self._meter.add(len(chunk))  # before writing: concurrent downloads cannot overshoot
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise _disk_error(exc) from None
        self._hasher.update(chunk)

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


# --------------------------------------------------------------------------- download threads

# Every download runs in one of these threads, from its first byte to its last.
# Its own pool: a download must not wait behind other work in the default executor.
_DOWNLOAD_THREADS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="c2d-pod-config-download")


class _Stopped(Exception):
    """Raised inside a download thread whose staging was cancelled."""


async def _in_thread(work: Callable[[], T], stop: Callable[[], None]) -> T:
    """Run `work` in a download thread and return its result.

    A thread cannot be cancelled: if the caller is, `stop()` asks the thread
    to end, and the caller waits until it has (even when cancelled again), so
    nothing writes a file after its download was given up."""
    future = asyncio.get_running_loop().run_in_executor(_DOWNLOAD_THREADS, work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop()
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                pass
        if not future.cancelled():
            future.exception()  # retrieved: asyncio would otherwise log it as lost
        raise


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
            dest.unlink(missing_ok=True)  # noqa: ASYNC240 - on the way out of a failure
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


def _source_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
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
    """Source type "url": http(s) with timeouts, retries, redirects and the SSRF guard.

    Deciding (vetting, redirects, retries, backoff) happens on the event loop;
    each request, from connect to the body's last byte, runs in a download
    thread (`_Exchange`)."""

    def __init__(self, user_agent: str = USER_AGENT, ssl_context: ssl.SSLContext | None = None) -> None:
        self._user_agent = user_agent
        self._given_ssl = ssl_context

    @functools.cached_property
    def _ssl(self) -> ssl.SSLContext:
        # The system's CAs with full verification, made on first use (loading
        # them costs time and memory); an operator may pass a context that also
        # trusts a private CA. Verification is never turned off.
        return self._given_ssl or ssl.create_default_context()

    async def fetch(self, source: FileSource, dest: Path, limits: StagingLimits, budget: ByteBudget) -> tuple[int, str]:
        ctx = current_file_context()
        url = _parse_url(source.url)
        extra = _source_headers(source.headers)
        sink = _Sink(dest, limits, budget)
        try:
            attempt = 0
            while True:
                try:
                    await self._attempt(url, extra, sink, limits)
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
            dest.unlink(missing_ok=True)  # noqa: ASYNC240 - on the way out of a failure
            raise

    @staticmethod
    def _delay(attempt: int, retry_after: float | None, limits: StagingLimits) -> float:
        if retry_after is not None:
            return min(retry_after, limits.retry_after_cap_s)
        # Exponential backoff with jitter, so parallel downloads do not retry in lockstep.
        step = limits.backoff_base_s * (2 ** (attempt - 1))
        return step / 2 + random.uniform(0, step / 2)

    async def _attempt(self, origin_url: URL, extra: CIMultiDict[str], sink: _Sink, limits: StagingLimits) -> None:
        current = origin_url
        redirects = 0
        while True:
            host, port = current.raw_host or "", current.port or (443 if current.scheme == "https" else 80)
            # Vet on every hop; the exchange connects to what was vetted, never resolving again.
            pins = await vet_host(host, port, limits)

            headers: CIMultiDict[str] = CIMultiDict()
            if current.origin() == origin_url.origin():
                # The DDO's headers (often credentials) go only to the origin they were written for.
                headers.update(extra)
            headers["User-Agent"] = self._user_agent
            headers["Accept-Encoding"] = "identity"  # store and hash exactly the bytes served
            headers["Connection"] = "close"
            if sink.size and sink.validator:
                headers["Range"] = f"bytes={sink.size}-"
                headers["If-Range"] = sink.validator
            elif sink.size:
                sink.restart()  # nothing to tell the server which version we have: start over

            tls = self._ssl if current.scheme == "https" else None
            exchange = _Exchange(current, pins, headers, sink, limits, tls)
            redirect = await _in_thread(exchange.run, exchange.stop)
            if redirect is None:
                return
            status, location = redirect
            redirects += 1
            if redirects > limits.max_redirects:
                raise FetchError("too_many_redirects", f"more than {limits.max_redirects} HTTP redirects")
            try:
                current = current.join(URL(location)).with_fragment(None)
            except (ValueError, TypeError):
                raise FetchError("http_error", f"HTTP {status} with an invalid Location") from None
            if current.scheme not in ("http", "https") or not current.raw_host:
                raise FetchError("invalid_source", f"HTTP {status} to a location that is not http(s)")


class _Exchange:
    """One GET, run in a download thread from connect to the body's last byte.

    It connects only to the vetted addresses (`pins`), with TLS verifying the
    URL's host name. `run()` returns a redirect's (status, Location), streams
    a 2xx body into the sink, and raises FetchError or _Transient otherwise.
    No proxy from the environment (it would bypass the guard), no cookies, no
    decompression (the bytes served are the bytes stored and hashed).
    Receiving, hashing and writing each release the GIL, so parallel downloads
    use every core.
    """

    def __init__(
        self,
        url: URL,
        pins: list[Pin],
        headers: CIMultiDict[str],
        sink: _Sink,
        limits: StagingLimits,
        tls: ssl.SSLContext | None,
    ) -> None:
        self._url = url
        self._host = url.raw_host or ""
        self._port = url.port or (443 if tls else 80)
        self._pins = pins
        self._headers = headers
        self._sink = sink
        self._limits = limits
        self._tls = tls
        self._lock = threading.Lock()  # guards _sock and _stopped between the thread and stop()
        self._sock: socket.socket | None = None
        self._stopped = False

    def stop(self) -> None:
        """From the event loop: make the thread end now, even in the middle of a read."""
        with self._lock:
            self._stopped = True
            if self._sock is not None:
                try:
                    # The plain socket's shutdown, also under TLS: it wakes a blocked
                    # read without touching the TLS state the thread is using.
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def run(self) -> tuple[int, str] | None:
        conn = http.client.HTTPConnection(self._host, self._port)
        conn.default_port = 443 if self._tls else 80  # the Host header names the port only when not the default
        resp: http.client.HTTPResponse | None = None
        try:
            conn.sock = self._connect()
            try:
                conn.request("GET", self._url.raw_path_qs, headers=self._headers)
                resp = conn.getresponse()
                return self._receive(resp)
            except TimeoutError:
                raise _Transient("timeout", f"no data received for {self._limits.idle_timeout_s:g} s") from None
            except (http.client.IncompleteRead, OSError) as exc:  # resets, TLS errors mid-stream
                raise _Transient(
                    "connection", f"the connection broke off after {self._sink.size} bytes ({type(exc).__name__})"
                ) from None
            except http.client.InvalidURL:
                raise FetchError("invalid_source", "the file location is not a valid http(s) URL") from None
            except http.client.HTTPException as exc:
                # Only the type: http.client's messages may quote what the server sent.
                raise FetchError(
                    "http_error", f"the server sent an invalid HTTP response ({type(exc).__name__})"
                ) from None
        finally:
            self._hold(None)  # first: once stop() cannot reach the socket, its descriptor may be reused
            # The response holds the socket open on its own (Connection: close hands it over).
            if resp is not None:
                resp.close()
            conn.close()

    @overload
    def _hold(self, sock: socket.socket) -> socket.socket: ...
    @overload
    def _hold(self, sock: None) -> None: ...
    def _hold(self, sock: socket.socket | None) -> socket.socket | None:
        """Make `sock` the one stop() shuts down (None: close the one held)."""
        with self._lock:
            held, self._sock = self._sock, sock
            stopped = self._stopped
        if held is not None and held is not sock:
            held.close()
        if stopped and sock is not None:
            raise _Stopped()
        return sock

    def _connect(self) -> socket.socket:
        limits = self._limits
        deadline = time.monotonic() + limits.connect_timeout_s
        error: OSError = TimeoutError()
        for family, ip in self._pins:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock = self._hold(socket.socket(family, socket.SOCK_STREAM))
            try:
                sock.settimeout(remaining)  # the connect timeout covers the TLS handshake too
                sock.connect((ip, self._port))
                if self._tls is not None:
                    sock = self._hold(self._tls.wrap_socket(sock, server_hostname=self._host))
                sock.settimeout(limits.idle_timeout_s)  # from now on: the idle timeout, per read
                return sock
            except ssl.SSLError:
                raise FetchError("tls_failed", "the TLS connection to the file's server failed verification") from None
            except OSError as exc:
                error = exc
                self._hold(None)
        if isinstance(error, TimeoutError):
            raise _Transient("timeout", f"could not connect within {limits.connect_timeout_s:g} s")
        raise _Transient("connect", f"could not connect ({errno.errorcode.get(error.errno or 0, 'network error')})")

    def _receive(self, resp: http.client.HTTPResponse) -> tuple[int, str] | None:
        sink = self._sink
        status = resp.status
        if status in _REDIRECT_STATUSES:
            location = resp.getheader("Location")
            if not location:
                raise FetchError("http_error", f"HTTP {status} without a Location")
            return status, location
        if status == 429 or status >= 500:
            raise _Transient("http_error", f"HTTP {status}", _retry_after(resp.getheader("Retry-After")))
        if status == 416 and sink.size:
            sink.restart()
            raise _Transient("http_error", "HTTP 416 on resume")
        if not 200 <= status < 300:
            raise FetchError("http_error", f"HTTP {status}")

        if status == 206:
            start = _content_range_start(resp.getheader("Content-Range"))
            if start != sink.size:
                sink.restart()
                if start != 0:  # not where we are, nor the beginning: try again from 0
                    raise _Transient("http_error", "the server sent an unexpected part of the file")
        elif sink.size:
            sink.restart()  # the server sent the whole file again (or a newer one)

        if not sink.size:
            etag = resp.getheader("ETag", "")
            sink.validator = etag if etag and not etag.startswith("W/") else resp.getheader("Last-Modified", "")
        if resp.length is not None:
            sink.check_declared(resp.length)
        # read1: what one receive brings (up to a chunk), so bytes are charged as they arrive.
        while chunk := resp.read1(CHUNK_BYTES):
            if self._stopped:
                raise _Stopped()
            sink.write(chunk)
        if resp.length:  # http.client ends quietly when the body stops short of Content-Length
            raise http.client.IncompleteRead(b"", resp.length)
        return None


# --------------------------------------------------------------------------- s3 and ipfs


class StorageFetcher:
    """Source types "s3" (s3://bucket/key) and "ipfs" (a CID), through plumbing.storage.

    The engine's storage configuration names the S3 endpoint and credentials
    and the Kubo RPC API. The synchronous download runs in a worker thread;
    every chunk is charged to the shared budget before it is written, so
    concurrent downloads cannot overshoot the disk. Transient failures are
    retried from byte 0 with backoff. Reasons never name the bucket, key or CID.
    No dataset is read from the results bucket (other jobs' results live there).
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
                return await self._download(
                    functools.partial(download, timeouts=timeouts), dest, FileMeter(limits, budget)
                )
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
            if self._config.kind == "s3" and bucket == self._config.s3_bucket:
                # other jobs' results: the provider refuses such a dataset at publishing, this again here
                raise FetchError(
                    "invalid_source", "the S3 location is in the results bucket, which no dataset may name"
                )
            return functools.partial(storage.download_s3, self._config, bucket, key)
        try:
            cid = str(storage.parse_cid(source.cid))
        except StorageError:
            raise FetchError("invalid_source", "the IPFS CID is not valid") from None
        return functools.partial(storage.download_ipfs, self._config, cid)

    @staticmethod
    async def _download(download: Callable[..., tuple[int, str]], dest: Path, meter: FileMeter) -> tuple[int, str]:
        stopped = threading.Event()

        def on_chunk(n: int) -> None:
            if stopped.is_set():
                raise _Stopped()
            meter.add(n)

        def on_size(size: int) -> None:
            meter.check_declared(size)

        # max_bytes=None: the meter enforces the per-file limit, with our error codes.
        # durable=False: a half-staged workspace is never reused (the engine starts over).
        work = functools.partial(
            download, dest, None, on_size=on_size, on_chunk=on_chunk, chunk_bytes=CHUNK_BYTES, durable=False
        )
        try:
            return await _in_thread(work, stopped.set)
        except asyncio.CancelledError:
            meter.reset()
            dest.unlink(missing_ok=True)  # noqa: ASYNC240 - the thread may have finished just before it was told to stop
            raise
        except BaseException:
            meter.reset()
            raise


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


# --------------------------------------------------------------------------- settings

# The disk a job gets when its environment names none.
UNBOUNDED_DISK_BYTES = 1 << 40


@dataclass(frozen=True)
class StagingSettings:
    """How files are fetched (C2D_STAGING_*), by pod_config and the provider alike."""

    max_file_bytes: int = setting(0, "largest single file in bytes (0 = the environment's disk)")
    connect_timeout_s: float = setting(10.0, "TCP/TLS connect timeout per download")
    idle_timeout_s: float = setting(30.0, "a download receiving nothing for this long fails")
    max_retries: int = setting(3, "retries of transient failures (reset, 5xx, 429)")
    max_redirects: int = setting(5, "HTTP redirects followed")
    parallelism: int = setting(4, "files downloaded at once")
    allow_hosts: tuple[str, ...] = setting((), "hosts or CIDRs exempt from the private-address guard")
    blocked_cidrs: tuple[str, ...] = setting((), "extra ranges to refuse, e.g. the cluster's service range")


def staging_limits(config: StagingSettings, disk_bytes: int) -> StagingLimits:
    disk = disk_bytes or UNBOUNDED_DISK_BYTES
    return StagingLimits(
        max_file_bytes=config.max_file_bytes or disk,
        max_total_bytes=disk,
        connect_timeout_s=config.connect_timeout_s,
        idle_timeout_s=config.idle_timeout_s,
        max_retries=config.max_retries,
        max_redirects=config.max_redirects,
        parallelism=config.parallelism,
        allow_hosts=config.allow_hosts,
        blocked_cidrs=config.blocked_cidrs,
    )
