"""SSRF: a publisher's file location that points c2d at what it can reach and others cannot.

The attack: a dataset's or a trusted algorithm's file URL (or a redirect
from an innocent one) names the host's loopback, a private or link-local
address, the cloud metadata service (169.254.169.254, and its IPv6-mapped,
NAT64 and 6to4 spellings), a name that resolves to one of them, or a name
that resolves once to a public address and then to a private one. pod_config
fetches datasets and algorithms at staging, and the provider fetches a
trusted algorithm's files at InitializeCompute to check their checksum.

The guarantee: both fetch through the same guard (plumbing/fetching.py):
every address a name resolves to is vetted before any connection, the
connection goes to the vetted address (no second resolution), each redirect
is vetted again, and only what C2D_STAGING_ALLOW_HOSTS allows gets past; a
refusal (31 "ssrf_refused" at staging, FAILED_PRECONDITION at
InitializeCompute) names the kind of network, never the location.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest

from cli import demo
from plumbing import fetching
from plumbing.fetching import FetchError, address_refusal, vet_host
from testkit.market import Market, assert_refusal, refused
from tests.pod_config.helpers import PREFIX, limits, one, run, staged, url
from tests.pod_config.httpserver import FileServer

# --- pod_config's staging ------------------------------------------------------------


async def test_loopback_is_refused_unless_allowlisted(server: FileServer, tmp_path: Path) -> None:
    server.add("f", b"internal")

    outcome, _ = await run(one(url(server.url("/file/f"))), tmp_path, limits(allow_hosts=()))

    assert (outcome.status, outcome.error_code) == (31, "ssrf_refused")
    assert outcome.reason == PREFIX + "the file's address is on a refused network (loopback)"
    assert server.seen == []


async def test_localhost_is_refused(server: FileServer, tmp_path: Path) -> None:
    server.add("f", b"internal")

    outcome, _ = await run(one(url(f"http://localhost:{server.port}/file/f")), tmp_path, limits(allow_hosts=()))

    assert (outcome.status, outcome.error_code) == (31, "ssrf_refused")
    assert outcome.reason == PREFIX + "the file's address is on a refused network (loopback)"
    assert server.seen == []


async def test_cloud_metadata_address_is_refused_without_connecting(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()

    outcome, _ = await run(
        one(url("http://169.254.169.254/latest/meta-data/iam/security-credentials/")),
        tmp_path,
        limits(connect_timeout_s=30, max_retries=3, backoff_base_s=5),
    )

    # Connecting (or retrying) would take seconds; a refusal before any socket is instant.
    assert loop.time() - started < 1
    assert (outcome.status, outcome.error_code) == (31, "ssrf_refused")
    assert outcome.reason == PREFIX + "the file's address is on a refused network (link-local)"


async def test_redirect_from_allowlisted_host_to_other_address_is_refused(server: FileServer, tmp_path: Path) -> None:
    server.add("f", b"internal")
    # "localhost" is allowlisted by name; the redirect names 127.0.0.1, which is not.
    start = f"http://localhost:{server.port}/redirect-to?location=" + quote(server.url("/file/f"))

    outcome, _ = await run(one(url(start)), tmp_path, limits(allow_hosts=("localhost",)))

    assert (outcome.status, outcome.error_code) == (31, "ssrf_refused")
    assert outcome.reason == PREFIX + "the file's address is on a refused network (loopback)"
    assert server.counts["/redirect-to"] == 1
    assert server.counts["/file/f"] == 0


async def test_redirect_to_metadata_address_is_refused(server: FileServer, tmp_path: Path) -> None:
    location = quote("http://169.254.169.254/latest/meta-data/")

    outcome, _ = await run(one(url(server.url(f"/redirect-to?location={location}"))), tmp_path)

    assert (outcome.status, outcome.error_code) == (31, "ssrf_refused")
    assert outcome.reason == PREFIX + "the file's address is on a refused network (link-local)"


async def test_allowlisted_hostname_and_cidr_connect_through_the_pinned_resolver(
    server: FileServer, tmp_path: Path
) -> None:
    server.add("f", b"allowed")

    by_name, _ = await run(
        one(url(f"http://localhost:{server.port}/file/f")), tmp_path / "name", limits(allow_hosts=("LOCALHOST",))
    )
    by_cidr, _ = await run(one(url(server.url("/file/f"))), tmp_path / "cidr", limits(allow_hosts=("127.0.0.0/8",)))

    assert (by_name.status, by_name.reason) == (30, "")
    assert (by_cidr.status, by_cidr.reason) == (30, "")
    assert server.counts["/file/f"] == 2


async def test_the_connection_goes_to_the_vetted_address_without_resolving_again(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The vetting resolves "rebound.invalid" to the server; the system resolver
    # never could (.invalid never resolves), so resolving again would fail.
    server.add("f", b"pinned")
    vetted: list[str] = []

    async def vet_to_the_server(host: str, port: int, lim: object) -> list[tuple[socket.AddressFamily, str]]:
        vetted.append(host)
        return [(socket.AF_INET, "127.0.0.1")]

    monkeypatch.setattr(fetching, "vet_host", vet_to_the_server)

    outcome, _ = await run(one(url(f"http://rebound.invalid:{server.port}/file/f")), tmp_path)

    assert (outcome.status, outcome.reason) == (30, "")
    assert staged(tmp_path) == b"pinned"
    assert vetted == ["rebound.invalid"]
    assert server.seen[0].headers["Host"] == f"rebound.invalid:{server.port}"


async def test_vet_host_answers_the_resolved_addresses_once_each() -> None:
    pins = await vet_host("localhost", 80, limits(allow_hosts=("localhost",)))
    assert pins and set(pins) <= {(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")}
    assert len(pins) == len(set(pins))


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of 169.254.169.254
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.100.100.200", "non-public"),  # shared address space (a cloud metadata service lives there)
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
    ],
)
def test_address_classification(address: str, why: str | None) -> None:
    assert address_refusal(address, limits(allow_hosts=())) == why


def test_blocked_cidrs_and_allowlist_precedence() -> None:
    blocked = limits(allow_hosts=(), blocked_cidrs=("8.8.8.0/24", "2001:db8:1::/48"))
    assert address_refusal("8.8.8.8", blocked) == "blocked"
    assert address_refusal("8.8.4.4", blocked) is None
    assert address_refusal(ipaddress.ip_address("::ffff:8.8.8.8"), blocked) == "blocked"
    allowed = limits(allow_hosts=("10.0.0.0/8", "files.internal"))
    assert address_refusal("10.9.9.9", allowed) is None
    assert address_refusal("192.168.0.1", allowed) == "private"
    assert address_refusal("192.168.0.1", allowed, host="FILES.internal.") is None


async def test_vet_host_refuses_blocked_literal_without_traffic() -> None:
    # An IP literal is vetted without DNS and nothing is connected here.
    with pytest.raises(FetchError) as err:
        await vet_host("8.8.8.8", 80, limits(allow_hosts=(), blocked_cidrs=("8.8.8.0/24",)))
    assert (err.value.code, err.value.message) == (
        "ssrf_refused",
        "the file's address is on a refused network (blocked)",
    )


# --- the provider, checking a trusted algorithm at InitializeCompute --------------------


@pytest.fixture
def private_listener() -> Iterator[tuple[str, list[bytes]]]:
    """A server on a loopback address the SSRF guard refuses (only 127.0.0.1 is allowed in tests)."""
    listener = socket.socket()
    listener.bind(("127.0.0.2", 0))
    listener.listen(4)
    accepted: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection.recv(1024))
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.2:{listener.getsockname()[1]}/latest/meta-data/", accepted
    listener.close()


async def test_the_provider_never_fetches_an_algorithm_from_a_refused_network(
    data_dir, market: Market, private_listener: tuple[str, list[bytes]]
):
    url, accepted = private_listener
    algorithm = await market.publish_algorithm(demo.ALGORITHM, file_url=url)
    dataset = await market.publish_dataset(trusted=[market.trust(algorithm)])
    error = await refused(market.consumer.initialize(market.spec(dataset, "", algorithm)))
    assert_refusal(error, grpc.StatusCode.FAILED_PRECONDITION, "algorithm_files_unreachable", "ssrf_refused")
    assert "127.0.0.2" not in error.details()
    assert accepted == []
