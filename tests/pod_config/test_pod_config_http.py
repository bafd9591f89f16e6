"""HttpFetcher through stage(): redirects, timeouts, retries, resume, headers
and log redaction, all against real servers on 127.0.0.1. The SSRF guard:
tests/security/test_ssrf.py."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from plumbing.fetching import default_fetchers
from services.pod_config.domain.staging import StagingRequest, stage
from tests.pod_config.helpers import (
    ALGO_DID,
    DATASET_DID,
    PREFIX,
    asset,
    did_dir,
    limits,
    new_log,
    one,
    part_files,
    run,
    staged,
    url,
)
from tests.pod_config.httpserver import FileServer


@pytest.fixture
async def other_server():
    srv = await FileServer().start()
    yield srv
    await srv.stop()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- redirects


async def test_redirect_chain_is_followed(server: FileServer, tmp_path: Path) -> None:
    server.add("f", b"at the end of the chain")

    outcome, _ = await run(one(url(server.url("/redirect/3/f"))), tmp_path, limits(max_redirects=5))

    assert (outcome.status, outcome.error_code, outcome.reason) == (30, "", "")
    assert staged(tmp_path) == b"at the end of the chain"
    assert [s.path for s in server.seen] == ["/redirect/3/f", "/redirect/2/f", "/redirect/1/f", "/file/f"]


async def test_too_many_redirects_fail(server: FileServer, tmp_path: Path) -> None:
    server.add("f", b"never reached")

    outcome, _ = await run(one(url(server.url("/redirect/10/f"))), tmp_path, limits(max_redirects=5))

    assert (outcome.status, outcome.error_code) == (31, "too_many_redirects")
    assert outcome.reason == PREFIX + "more than 5 HTTP redirects"
    assert len(server.seen) == 6  # the first request and five redirects followed, then it stops
    assert server.counts["/file/f"] == 0


async def test_redirect_to_a_non_http_scheme_is_refused(server: FileServer, tmp_path: Path) -> None:
    outcome, _ = await run(one(url(server.url("/redirect-to?location=" + quote("file:///etc/passwd")))), tmp_path)

    assert (outcome.status, outcome.error_code) == (31, "invalid_source")
    assert outcome.reason == PREFIX + "HTTP 302 to a location that is not http(s)"


async def test_non_http_url_is_invalid(tmp_path: Path) -> None:
    outcome, _ = await run(one(url("file:///etc/passwd")), tmp_path)

    assert (outcome.status, outcome.error_code) == (31, "invalid_source")
    assert outcome.reason == PREFIX + "the file location is not a valid http(s) URL"


# --------------------------------------------------------------------------- timeouts and retries


async def test_stalled_download_hits_the_idle_timeout(server: FileServer, tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()

    outcome, _ = await run(one(url(server.url("/slow"))), tmp_path, limits(idle_timeout_s=0.3, max_retries=1))

    assert loop.time() - started < 5
    assert (outcome.status, outcome.error_code) == (31, "dataset_fetch_failed")
    assert outcome.reason == PREFIX + "no data received for 0.3 s (after 2 attempts)"
    assert server.counts["/slow"] == 2  # a timeout is transient: retried once
    assert part_files(tmp_path) == []
    assert list((tmp_path / "inputs" / did_dir(DATASET_DID)).iterdir()) == []


async def test_a_failed_download_hangs_up(server: FileServer, tmp_path: Path) -> None:
    outcome, _ = await run(one(url(server.url("/slow"))), tmp_path, limits(idle_timeout_s=0.2, max_retries=0))

    assert outcome.reason == PREFIX + "no data received for 0.2 s"
    # The server notices the closed connection (and ends its handler) instead of
    # holding a dead connection open.
    for _ in range(100):
        if server.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert server.in_flight == 0


async def test_cancelling_wakes_a_download_blocked_on_a_silent_server(server: FileServer, tmp_path: Path) -> None:
    request = one(url(server.url("/slow")))
    log, _ = new_log()
    task = asyncio.create_task(stage(request, tmp_path, limits(idle_timeout_s=30), default_fetchers(), log))
    directory = tmp_path / "inputs" / did_dir(DATASET_DID)
    for _ in range(250):  # until the one byte /slow sends is on disk: the read now blocks for 30 s
        await asyncio.sleep(0.02)
        if part_files(tmp_path) and part_files(tmp_path)[0].stat().st_size == 1:
            break
    assert [p.name for p in directory.iterdir()] == [".0.part"]
    loop = asyncio.get_running_loop()
    started = loop.time()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert loop.time() - started < 2  # not the idle timeout: the blocked read was woken
    assert list(directory.iterdir()) == []


async def test_server_error_then_success_is_retried(server: FileServer, tmp_path: Path) -> None:
    server.add("f", b"third time lucky")

    outcome, cap = await run(one(url(server.url("/fail-then-ok/2/f"))), tmp_path, limits(max_retries=3))

    assert (outcome.status, outcome.error_code, outcome.reason) == (30, "", "")
    assert staged(tmp_path) == b"third time lucky"
    assert server.counts["/fail-then-ok/2/f"] == 3
    assert sum("HTTP 500; retry" in line for line in cap.lines) == 2


async def test_server_errors_exhaust_the_retries(server: FileServer, tmp_path: Path) -> None:
    server.add("f", b"never")

    outcome, _ = await run(one(url(server.url("/fail-then-ok/99/f"))), tmp_path, limits(max_retries=2))

    assert (outcome.status, outcome.error_code) == (31, "dataset_fetch_failed")
    assert outcome.reason == PREFIX + "HTTP 500 (after 3 attempts)"
    assert server.counts["/fail-then-ok/99/f"] == 3


async def test_client_errors_are_not_retried(server: FileServer, tmp_path: Path) -> None:
    outcome, _ = await run(one(url(server.url("/status/410"))), tmp_path, limits(max_retries=3))

    assert (outcome.status, outcome.error_code) == (31, "dataset_fetch_failed")
    assert outcome.reason == PREFIX + "HTTP 410"
    assert server.counts["/status/410"] == 1


async def test_429_waits_for_retry_after(server: FileServer, tmp_path: Path) -> None:
    server.add("f", b"patience")

    outcome, _ = await run(one(url(server.url("/throttled/1/f"))), tmp_path, limits(backoff_base_s=0.01))

    assert (outcome.status, outcome.reason) == (30, "")
    assert staged(tmp_path) == b"patience"
    first, second = server.requests_to("/throttled/1/f")
    assert second.at - first.at >= 0.9  # Retry-After: 1, not the 10 ms backoff


async def test_retry_after_is_capped(server: FileServer, tmp_path: Path) -> None:
    server.add("f", b"no hour-long naps")
    loop = asyncio.get_running_loop()
    started = loop.time()

    outcome, _ = await run(one(url(server.url("/throttled/3600/f"))), tmp_path, limits(retry_after_cap_s=0.2))

    assert (outcome.status, outcome.reason) == (30, "")
    assert loop.time() - started < 3
    first, second = server.requests_to("/throttled/3600/f")
    assert second.at - first.at >= 0.19


async def test_connection_refused_is_retried_then_fails(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    outcome, cap = await run(one(url(f"http://127.0.0.1:{port}/f")), tmp_path, limits(max_retries=2))

    assert (outcome.status, outcome.error_code) == (31, "dataset_fetch_failed")
    assert outcome.reason == PREFIX + "could not connect (ECONNREFUSED) (after 3 attempts)"
    assert sum("could not connect (ECONNREFUSED); retry" in line for line in cap.lines) == 2


async def test_unanswered_connect_hits_the_connect_timeout(tmp_path: Path) -> None:
    # A listener whose backlog is full: further SYNs go unanswered, as with a dead host.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(c)
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        started = loop.time()

        outcome, _ = await run(
            one(url(f"http://127.0.0.1:{port}/f")),
            tmp_path,
            limits(connect_timeout_s=0.3, idle_timeout_s=30, max_retries=0),
        )

        elapsed = loop.time() - started
        for c in fillers:
            c.close()
    assert 0.25 < elapsed < 5  # the connect timeout, not the 30 s idle timeout
    assert (outcome.status, outcome.error_code) == (31, "dataset_fetch_failed")
    assert outcome.reason == PREFIX + "could not connect within 0.3 s"


# --------------------------------------------------------------------------- resume


async def test_broken_download_resumes_with_range(server: FileServer, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000  # 1 024 000 bytes
    server.add("r", data)

    outcome, _ = await run(one(url(server.url("/flaky/r"), checksum=sha(data))), tmp_path)

    assert (outcome.status, outcome.reason) == (30, "")
    assert staged(tmp_path) == data
    first, second = server.requests_to("/flaky/r")
    assert "Range" not in first.headers
    assert second.headers["Range"] == f"bytes={len(data) // 2}-"
    assert second.headers["If-Range"] == FileServer._etag(data)
    assert server.body_bytes_sent["/flaky/r"] == len(data)  # nothing downloaded twice


async def test_broken_download_restarts_when_range_is_ignored(server: FileServer, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000
    server.add("r", data)

    outcome, _ = await run(one(url(server.url("/flaky-norange/r"), checksum=sha(data))), tmp_path)

    assert (outcome.status, outcome.reason) == (30, "")
    assert staged(tmp_path) == data  # the first half was dropped, not duplicated
    assert outcome.files[0].size == len(data)


async def test_parallel_files_with_retries_and_redirects_all_land(server: FileServer, tmp_path: Path) -> None:
    payloads = {f"m{i}": bytes([i]) * (50_000 + i) for i in range(5)}
    for name, data in payloads.items():
        server.add(name, data)
    srcs = [
        url(server.url("/file/m0?delay=0.2"), checksum=sha(payloads["m0"])),
        url(server.url("/redirect/2/m1"), checksum=sha(payloads["m1"])),
        url(server.url("/fail-then-ok/1/m2"), checksum=sha(payloads["m2"])),
        url(server.url("/flaky/m3"), checksum=sha(payloads["m3"])),
        url(server.url("/chunked/m4"), checksum=sha(payloads["m4"])),
    ]
    request = StagingRequest(datasets=(asset(DATASET_DID, *srcs),), algorithm=None, raw_algorithm="x")

    outcome, _ = await run(request, tmp_path, limits(parallelism=5))

    assert (outcome.status, outcome.reason) == (30, "")
    for i in range(5):
        assert (tmp_path / "inputs" / did_dir(DATASET_DID) / str(i)).read_bytes() == payloads[f"m{i}"]
    assert server.max_in_flight >= 2


# --------------------------------------------------------------------------- headers


async def test_ddo_headers_are_sent(server: FileServer, tmp_path: Path) -> None:
    server.add("f", b"authorised")

    outcome, _ = await run(one(url(server.url("/auth/f"), headers={"X-Api-Key": "s3cr3t-header-value"})), tmp_path)
    refused, _ = await run(one(url(server.url("/auth/f"))), tmp_path / "without")

    assert (outcome.status, outcome.reason) == (30, "")
    assert staged(tmp_path) == b"authorised"
    assert (refused.status, refused.reason) == (31, PREFIX + "HTTP 401")


async def test_headers_follow_same_origin_redirects_only(
    server: FileServer, other_server: FileServer, tmp_path: Path
) -> None:
    server.add("f", b"same origin")
    other_server.add("f", b"other origin")
    headers = {"X-Api-Key": "s3cr3t-header-value"}

    same, _ = await run(one(url(server.url("/redirect-to?location=/auth/f"), headers=headers)), tmp_path / "same")
    cross, _ = await run(
        one(url(server.url("/redirect-to?location=" + quote(other_server.url("/auth/f"))), headers=headers)),
        tmp_path / "cross",
    )

    assert (same.status, same.reason) == (30, "")
    assert (cross.status, cross.error_code, cross.reason) == (31, "dataset_fetch_failed", PREFIX + "HTTP 401")
    (seen,) = other_server.requests_to("/auth/f")
    assert "X-Api-Key" not in seen.headers  # the publisher's credential did not leave its origin


async def test_header_injection_is_refused(server: FileServer, tmp_path: Path) -> None:
    server.add("f", b"x")

    outcome, _ = await run(one(url(server.url("/file/f"), headers={"X-A": "v\r\nX-Injected: 1"})), tmp_path)

    assert (outcome.status, outcome.error_code) == (31, "invalid_source")
    assert outcome.reason == PREFIX + "the file's HTTP headers are not valid"
    assert server.counts["/file/f"] == 0


# --------------------------------------------------------------------------- log redaction


async def test_logs_and_reasons_never_reveal_locations_or_headers(server: FileServer, tmp_path: Path) -> None:
    secret_value = "s3cr3t-header-value"
    server.add("f", b"top secret rows")
    server.add("secret-path-name", b"more rows")
    server.add("a", b"#!/bin/sh\n")
    good = StagingRequest(
        datasets=(
            asset(
                DATASET_DID,
                url(server.url("/auth/f?token=query-secret"), headers={"X-Api-Key": secret_value}),
                url(server.url("/redirect/2/secret-path-name")),
                url(server.url("/fail-then-ok/1/secret-path-name")),
            ),
        ),
        algorithm=asset(ALGO_DID, url(server.url("/file/a")), kind="algorithm"),
    )
    scenarios = [
        (good, limits()),
        (one(url(server.url("/status/404?token=query-secret"), headers={"X-Api-Key": secret_value})), limits()),
        (one(url(server.url("/slow"))), limits(idle_timeout_s=0.2, max_retries=1)),
        (one(url(server.url("/file/f"))), limits(allow_hosts=())),
        (one(url(server.url("/redirect/9/secret-path-name"))), limits(max_redirects=1)),
        (one(url(server.url("/huge"))), limits(max_file_bytes=100_000)),
    ]
    texts: list[str] = []
    outcomes = []
    for i, (request, lim) in enumerate(scenarios):
        outcome, cap = await run(request, tmp_path / str(i), lim)
        outcomes.append(outcome)
        texts += [cap.text, outcome.reason]

    assert [o.status for o in outcomes] == [30, 31, 31, 31, 31, 31]
    everything = "\n".join(texts)
    for secret in ("127.0.0.1", f":{server.port}", str(server.port), "localhost", "http", "secret-path",
                   "query-secret", secret_value, "/auth", "/file", "/redirect", "/slow", "/huge"):  # fmt: skip
        assert secret not in everything, secret
    # ...while still saying what happened, step by step.
    good_log = texts[0]
    assert "staging started: 1 dataset(s) with 3 file(s), a registered algorithm with 1 file(s)" in good_log
    for index, size in [(0, 15), (1, 9), (2, 9)]:
        assert f"dataset {DATASET_DID} file {index} staged: {size} bytes in " in good_log
    assert f"algorithm {ALGO_DID} file 0 staged: 10 bytes in " in good_log
    assert "HTTP 500; retry 1 of 2" in good_log
    assert "staging succeeded: 4 file(s), 43 bytes" in good_log
    assert f"ERROR staging failed (dataset_fetch_failed, status 31): {PREFIX}HTTP 404" in texts[2]


# --------------------------------------------------------------------------- https


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a server certificate for localhost, made by the openssl CLI."""
    d = tmp_path_factory.mktemp("tls")
    ext = d / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "1", "-subj", "/CN=c2d test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "srv.pem", "-days", "1", "-extfile", "san.ext")  # fmt: skip
    return {"ca": d / "ca.pem", "cert": d / "srv.pem", "key": d / "srv.key"}


@pytest.fixture
async def tls_server(tls_files: dict[str, Path]):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls_files["cert"], tls_files["key"])
    srv = await FileServer().start(ssl_context=ctx)
    yield srv
    await srv.stop()


async def test_https_verifies_the_name_while_connecting_to_the_pinned_address(
    tls_server: FileServer, tls_files: dict[str, Path], tmp_path: Path
) -> None:
    tls_server.add("f", b"over tls")
    trust = ssl.create_default_context(cafile=str(tls_files["ca"]))
    src = url(f"https://localhost:{tls_server.port}/file/f", checksum=sha(b"over tls"))

    outcome, _ = await run(
        one(src), tmp_path, limits(allow_hosts=("localhost",)), fetchers=default_fetchers(ssl_context=trust)
    )

    assert (outcome.status, outcome.reason) == (30, "")
    assert staged(tmp_path) == b"over tls"
    assert tls_server.counts["/file/f"] == 1


async def test_https_with_an_untrusted_certificate_fails_without_retry(
    tls_server: FileServer, tls_files: dict[str, Path], tmp_path: Path
) -> None:
    tls_server.add("f", b"over tls")
    trust = ssl.create_default_context(cafile=str(tls_files["ca"]))

    untrusted, cap = await run(
        one(url(f"https://localhost:{tls_server.port}/file/f")), tmp_path / "a", limits(allow_hosts=("localhost",))
    )
    # The certificate is for "localhost": reaching the same address as 127.0.0.1 must fail the name check.
    wrong_name, _ = await run(
        one(url(tls_server.url("/file/f"))), tmp_path / "b", fetchers=default_fetchers(ssl_context=trust)
    )

    for outcome in (untrusted, wrong_name):
        assert (outcome.status, outcome.error_code) == (31, "dataset_fetch_failed")
        assert outcome.reason == PREFIX + "the TLS connection to the file's server failed verification"
    assert "retry" not in cap.text
    assert tls_server.counts["/file/f"] == 0
