"""IPFS backend through the Kubo RPC API, against the embedded Kubo of the `ipfs_rpc` fixture."""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from multiformats import CID, multihash

from plumbing.storage import (
    IpfsStore,
    ObjectNotFound,
    StorageConfig,
    StorageError,
    download_ipfs,
    open_store,
    pin_key,
)
from plumbing.storage.unixfs import CIDV0_LEGACY, cid_of_file
from testkit.servers import free_ports
from tests.storage.conftest import write_random


def rpc(url: str, command: str, query: str) -> tuple[int, dict]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", f"/api/v0/{command}?{query}", b"")
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def test_location_is_cidv1_base32_of_the_verified_dag(ipfs_store: IpfsStore, tmp_path: Path) -> None:
    # 174 chunks + 1: a two-level DAG; the node answers CIDv0 and we record its CIDv1 form
    data = write_random(tmp_path / "big.bin", 174 * 262144 + 1, seed=11)
    obj = ipfs_store.put_file("jobs/j/outputs/big.bin", tmp_path / "big.bin")
    assert obj.location.startswith("ipfs://bafybei")
    cid = CID.decode(obj.location.removeprefix("ipfs://"))
    assert (cid.version, cid.codec.name, cid.hashfun.name) == (1, "dag-pb", "sha2-256")
    assert cid.digest == cid_of_file(tmp_path / "big.bin", CIDV0_LEGACY).digest
    assert obj.sha256 == hashlib.sha256(data).hexdigest()
    assert ipfs_store.size(obj.location) == len(data)
    assert b"".join(ipfs_store.read(obj.location, offset=len(data) - 3)) == data[-3:]


def test_delete_unpins_under_either_cid_form(ipfs_store: IpfsStore, ipfs_rpc: str, tmp_path: Path) -> None:
    src = tmp_path / "p.txt"
    src.write_bytes(b"pinned until deleted " + random.randbytes(16))
    obj = ipfs_store.put_file("jobs/j/p.txt", src)
    v0 = str(CID.decode(obj.location.removeprefix("ipfs://")).set(version=0, base="base58btc"))
    ipfs_store.delete(obj.location)
    # the node pinned it as CIDv0: that pin is gone now
    status, body = rpc(ipfs_rpc, "pin/rm", f"arg={v0}")
    assert status == 500 and "not pinned" in body["Message"]
    ipfs_store.delete(obj.location)  # idempotent
    assert ipfs_store.delete_prefix("jobs/j/") == 0


def test_unknown_cid_is_not_found_quickly(ipfs_store: IpfsStore, tmp_path: Path) -> None:
    absent = CID("base32", 1, "raw", multihash.digest(b"never added " + random.randbytes(8), "sha2-256"))
    started = time.monotonic()
    with pytest.raises(ObjectNotFound):
        ipfs_store.size(f"ipfs://{absent}")
    with pytest.raises(ObjectNotFound):
        list(ipfs_store.read(f"ipfs://{absent}"))
    with pytest.raises(ObjectNotFound):
        download_ipfs(
            StorageConfig(kind="ipfs", ipfs_api=ipfs_store.client.base_url), str(absent), tmp_path / "x", None
        )
    assert not (tmp_path / "x").exists()
    assert time.monotonic() - started < 10


def test_download_ipfs(ipfs_store: IpfsStore, ipfs_rpc: str, tmp_path: Path) -> None:
    data = write_random(tmp_path / "ds.bin", 600_000, seed=5)
    obj = ipfs_store.put_file("datasets/ds.bin", tmp_path / "ds.bin")
    config = StorageConfig(kind="ipfs", ipfs_api=ipfs_rpc)
    expected = (len(data), hashlib.sha256(data).hexdigest())
    v1 = obj.location.removeprefix("ipfs://")
    v0 = str(CID.decode(v1).set(version=0, base="base58btc"))
    # the forms a DDO may carry: CIDv0, CIDv1, ipfs://, /ipfs/
    for i, ref in enumerate([v0, v1, obj.location, f"/ipfs/{v1}"]):
        dest = tmp_path / "inputs" / str(i)
        assert download_ipfs(config, ref, dest, len(data)) == expected
        assert dest.read_bytes() == data
    with pytest.raises(StorageError, match="over the limit"):
        download_ipfs(config, v1, tmp_path / "inputs" / "big", len(data) - 1)
    assert not (tmp_path / "inputs" / "big").exists()
    with pytest.raises(StorageError, match="not a valid CID"):
        download_ipfs(config, "QmNotACid", tmp_path / "inputs" / "bad", None)
    assert sorted(p.name for p in (tmp_path / "inputs").iterdir()) == ["0", "1", "2", "3"]


def test_unreachable_api_is_transient(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    store = open_store(StorageConfig(kind="ipfs", ipfs_api=f"http://127.0.0.1:{port}"))
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with pytest.raises(StorageError, match="cannot reach the IPFS API") as exc:
        store.put_file("k", src)
    assert exc.value.transient is True
    with pytest.raises(StorageError, match="must be http"):
        open_store(StorageConfig(kind="ipfs", ipfs_api="127.0.0.1:5001"))


def test_rpc_front_speaks_kubo(ipfs_rpc: str) -> None:
    status, body = rpc(ipfs_rpc, "version", "")
    assert status == 200 and body["Version"] == "0.22.0"
    parts = urlsplit(ipfs_rpc)
    assert parts.hostname == "127.0.0.1"
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", "/api/v0/version")  # Kubo's RPC is POST-only
    assert conn.getresponse().status == 405
    conn.close()
    status, body = rpc(ipfs_rpc, "cat", "")
    assert status == 400 and body["Type"] == "error"


class _TamperingProxy(BaseHTTPRequestHandler):
    """Forwards to the real node; rewrites the CID in `add` answers (one flipped digest bit)."""

    upstream: str = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        parts = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        conn.request("POST", self.path, body, {"Content-Type": self.headers.get("Content-Type", "")})
        response = conn.getresponse()
        payload = response.read()
        conn.close()
        if self.path.startswith("/api/v0/add") and response.status == 200:
            answer = json.loads(payload.splitlines()[-1])
            cid = CID.decode(answer["Hash"])
            digest = bytearray(cid.raw_digest)
            digest[0] ^= 0x80
            answer["Hash"] = str(CID(cid.base, cid.version, cid.codec, multihash.wrap(bytes(digest), "sha2-256")))
            payload = (json.dumps(answer) + "\n").encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def tampering_api(ipfs_rpc: str) -> Iterator[str]:
    handler = type("Proxy", (_TamperingProxy,), {"upstream": ipfs_rpc})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_node_answering_a_wrong_cid_is_refused(tampering_api: str, tmp_path: Path) -> None:
    store = open_store(StorageConfig(kind="ipfs", ipfs_api=tampering_api))
    for name, size in (("one-block", 1000), ("multi-block", 3 * 262144 + 1)):
        write_random(tmp_path / name, size, seed=size)
        with pytest.raises(StorageError, match="hash to .*refusing it") as exc:
            store.put_file(f"jobs/j/{name}", tmp_path / name)
        assert name in str(exc.value)


def test_cid_encodings_are_registered_before_parallel_uploads_use_them() -> None:
    """multiformats registers an encoding on its first use, and two threads doing that at once
    fail ("Raw encoding with name 'base32' already exists": pod_publish uploads in parallel).
    Importing the store registers them, in a fresh interpreter as a pod would start."""
    probe = (
        "from multiformats.multibase import raw\n"
        "before = {'base32', 'base58btc'} & set(raw._raw_encodings)\n"
        "import plumbing.storage.ipfs\n"
        "print(sorted(before), sorted({'base32', 'base58btc'} & set(raw._raw_encodings)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    before, after = out.split("] [")
    assert "base32" not in before  # multiformats alone leaves it to the first use
    assert after == "'base32', 'base58btc']\n"


def test_pin_key_is_the_multihash_whatever_form_the_cid_is_written_in() -> None:
    """Two manifests naming the same content share a key, in any version, base or
    codec (a forged record may write another job's CID differently); the fast
    path for CIDv1 base32 agrees with multiformats on every CID it takes."""
    for index in range(50):
        for codec in ("raw", "dag-pb"):
            for hashfun in ("sha2-256", "sha2-512", "blake2b-256"):
                cid = CID("base32", 1, codec, multihash.digest(f"content {index}".encode(), hashfun))
                forms = [cid, cid.set(base="base58btc"), cid.set(base="base32upper")]
                if codec == "dag-pb" and hashfun == "sha2-256":
                    forms.append(cid.set(version=0, base="base58btc"))
                keys = {pin_key(f"ipfs://{form}") for form in forms}
                assert keys == {bytes(cid.digest).hex()}, forms
                raw = cid.set(codec="raw" if codec == "dag-pb" else "dag-pb")
                assert pin_key(f"ipfs://{raw}") == bytes(cid.digest).hex()  # same blocks, another codec
    other = CID("base32", 1, "raw", multihash.digest(b"other content", "sha2-256"))
    assert pin_key(f"ipfs://{other}") != pin_key(
        f"ipfs://{CID('base32', 1, 'raw', multihash.digest(b'x', 'sha2-256'))}"
    )
    for not_a_cid in (
        "s3://bucket/job/x",
        "local:job/x",
        "ipfs://",
        "ipfs://b",
        "ipfs://bafy",
        "ipfs://Qm",
        "ipfs://b!!",
    ):
        assert pin_key(not_a_cid) is None, not_a_cid
