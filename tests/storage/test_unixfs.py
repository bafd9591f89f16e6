"""The local CID recomputation that IPFS uploads are verified with.

Checked two independent ways: against the real Kubo node of the fixture
(which adds with Kubo's legacy profile: CIDv0, dag-pb leaves) and against
published `ipfs add --cid-version=1 --raw-leaves` vectors, since the embedded
node cannot produce that profile itself.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from multiformats import CID, multihash

from plumbing.storage import StorageError, verify_cid
from plumbing.storage.unixfs import (
    CIDV0_LEGACY,
    CIDV1_RAW_LEAVES,
    UnixFSParams,
    cid_of_file,
)

CHUNK = 262144


def kubo_add(url: str, path: Path, query: str = "") -> tuple[str, dict[str, str]]:
    """`ipfs add` over the Kubo RPC API; returns (Hash, response headers)."""
    parts = urlsplit(url)
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request(
            "POST", f"/api/v0/add?{query}", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        response = conn.getresponse()
        assert response.status == 200, response.read()
        return json.loads(response.read().splitlines()[-1])["Hash"], dict(response.getheaders())
    finally:
        conn.close()


def xorshift_bytes(n: int) -> bytes:
    # xorshift32 from seed 0x12345678, one byte (the low 8 bits) per step:
    # the generator the published vectors below were made from
    out = bytearray(n)
    s = 0x12345678
    for i in range(n):
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        out[i] = s & 0xFF
    return bytes(out)


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7, 174 * CHUNK, 174 * CHUNK + 1],
    ids=["empty", "1B", "chunk-1", "chunk", "chunk+1", "3chunks+7", "174-links", "175-leaves-two-levels"],
)
def test_legacy_profile_matches_the_real_node(ipfs_rpc: str, tmp_path: Path, size: int) -> None:
    path = tmp_path / f"f{size}"
    path.write_bytes(random.Random(size).randbytes(size))
    returned, _headers = kubo_add(ipfs_rpc, path)
    assert CID.decode(returned).version == 0
    assert str(cid_of_file(path, CIDV0_LEGACY)) == returned


def test_node_reports_the_options_it_cannot_apply(ipfs_rpc: str, tmp_path: Path) -> None:
    # what the embedded Kubo can do: only its legacy defaults, and it says so
    path = tmp_path / "small"
    path.write_bytes(b"hello")
    returned, headers = kubo_add(ipfs_rpc, path, "cid-version=1&raw-leaves=true&chunker=size-1024")
    assert returned.startswith("Qm")
    assert headers["X-C2D-Ignored-Options"] == "cid-version,raw-leaves,chunker"


# Published conformance vectors for `ipfs add -Q --cid-version=1 --raw-leaves
# --chunker=size-N` (said to come from kubo 0.41) on xorshift_bytes(size).
# Sizes cross the 1-chunk, 174-link and 175-leaf boundaries.
V1_VECTORS = [
    (0, CHUNK, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
    (1, CHUNK, "bafkreidjelut4obhmqwojoedy5llggv7qabwmsotmff7l7ftvxnehohkgi"),
    (CHUNK, CHUNK, "bafkreifwidxy2bxbc5r2pmjmjp6gd6t35h3m2ee5rhfx2g4rjehr3mdbgm"),
    (CHUNK + 1, CHUNK, "bafybeibehmsugjvfzrrnrs3katfdixzvvyelnptwbacjw7typ4kht3dmoa"),
    (4 * CHUNK, CHUNK, "bafybeihekfxcwcsuwj3drmrk7qz75d4cxfjgf656kkx4ut244wxj4wukoi"),
    (2048, 1024, "bafybeidtwpjv3zp6cf5o4gx4b3uudjyjleatu6xdad2sp3jmygfd6bfrli"),
    (174 * 1024, 1024, "bafybeibmyupfn2lrok54te5jjpiyktli7n3cfwhjuceukpmxlr6jpc643u"),
    (175 * 1024, 1024, "bafybeigdrouqor7w6g7ejjelcupocitq46usreuwmdo6ez2eap6grlvpom"),
    (175 * 1024 + 100, 1024, "bafybeic6gcjkrjcfgbvw35dcxeanv55gkv2l6hwvyvnfei6z7cbyx4a6ge"),
]


def test_raw_leaves_profile_matches_published_vectors(tmp_path: Path) -> None:
    data = xorshift_bytes(4 * CHUNK)
    for size, chunk, expected in V1_VECTORS:
        path = tmp_path / f"v{size}-{chunk}"
        path.write_bytes(data[:size])
        params = UnixFSParams(cid_version=1, raw_leaves=True, chunk_size=chunk)
        assert str(cid_of_file(path, params)) == expected, (size, chunk)
    # Kubo's own fixture notes: `echo "Hello IPFS" | ipfs add --cid-version 1`
    hello = tmp_path / "hello"
    hello.write_bytes(b"Hello IPFS\n")
    assert str(cid_of_file(hello, CIDV1_RAW_LEAVES)) == "bafkreidfdrlkeq4m4xnxuyx6iae76fdm4wgl5d4xzsb77ixhyqwumhz244"


@pytest.fixture
def two_chunk_file(tmp_path: Path) -> Path:
    path = tmp_path / "two-chunks"
    path.write_bytes(random.Random(7).randbytes(CHUNK + 10))
    return path


def test_verifier_accepts_the_right_cid_in_both_profiles(two_chunk_file: Path) -> None:
    v1 = cid_of_file(two_chunk_file, CIDV1_RAW_LEAVES)
    v0 = cid_of_file(two_chunk_file, CIDV0_LEGACY)
    assert verify_cid(str(v1), two_chunk_file) == v1
    assert verify_cid(str(v0), two_chunk_file) == v0
    assert verify_cid(v1.encode("base58btc"), two_chunk_file) == v1  # any multibase decodes


def test_verifier_refuses_tampered_cids(two_chunk_file: Path, tmp_path: Path) -> None:
    good = cid_of_file(two_chunk_file, CIDV1_RAW_LEAVES)
    flipped = bytearray(good.raw_digest)
    flipped[-1] ^= 0x01
    tampered = CID("base32", 1, "dag-pb", multihash.wrap(bytes(flipped), "sha2-256"))
    with pytest.raises(StorageError, match="refusing it"):
        verify_cid(str(tampered), two_chunk_file)
    # same digest, wrong codec: a raw CID claims a single block
    with pytest.raises(StorageError, match="refusing it"):
        verify_cid(str(good.set(codec="raw")), two_chunk_file)
    # the CIDv0 of the same file's *other* profile is not a v1 answer either
    legacy = cid_of_file(two_chunk_file, CIDV0_LEGACY)
    with pytest.raises(StorageError, match="refusing it"):
        verify_cid(str(legacy.set(version=1)), two_chunk_file)
    # a CID for different bytes
    other = tmp_path / "other"
    other.write_bytes(b"other bytes")
    with pytest.raises(StorageError, match="refusing it"):
        verify_cid(str(cid_of_file(other)), two_chunk_file)
    # hash functions and codecs we do not verify are refused, not waved through
    sha512 = CID("base32", 1, "raw", multihash.digest(two_chunk_file.read_bytes(), "sha2-512"))
    with pytest.raises(StorageError, match="expected sha2-256"):
        verify_cid(str(sha512), two_chunk_file)
    cbor = CID("base32", 1, "dag-cbor", multihash.digest(b"x", "sha2-256"))
    with pytest.raises(StorageError, match="expected raw or dag-pb"):
        verify_cid(str(cbor), two_chunk_file)
    with pytest.raises(StorageError, match="not a valid CID"):
        verify_cid("bafy-not-a-cid", two_chunk_file)


def test_single_chunk_raw_cid_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "one"
    path.write_bytes(b"x" * 1000)
    cid = cid_of_file(path)
    assert (cid.version, cid.codec.name) == (1, "raw")
    assert cid.raw_digest == hashlib.sha256(b"x" * 1000).digest()
