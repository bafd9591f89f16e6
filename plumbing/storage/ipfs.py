"""Results storage on IPFS through the Kubo HTTP RPC API (/api/v0/...).

Every CID the node returns from `add` is checked against the bytes sent: the
UnixFS DAG is recomputed locally (plumbing.storage.unixfs) and a mismatch is
refused. We ask for CIDv1 with raw leaves and the 256 KiB chunker; a node that
ignores those options and answers with a CIDv0 (an old or embedded Kubo) is
checked against Kubo's legacy profile instead, which is the only one a CIDv0
can come from. Either way the manifest records the CIDv1 base32 form.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

from multiformats import CID
from multiformats.multibase import raw as multibase_raw

from plumbing.storage.base import (
    ChunkStream,
    ObjectNotFound,
    SizedDownload,
    StorageConfig,
    StorageError,
    StoredObject,
    check_key,
)
from plumbing.storage.unixfs import (
    CIDV1_RAW_LEAVES,
    UnixFSHasher,
    UnixFSParams,
    cid_of_file,
    params_for,
)

PREFIX = "ipfs://"
_BLOCK = 1 << 20
_NOT_FOUND_HINTS = ("not found", "could not find", "no link named", "no such")


class KuboError(StorageError):
    """An error answer from the Kubo RPC API."""


class KuboClient:
    """Minimal Kubo RPC client on http.client: streams request and response bodies."""

    def __init__(self, base_url: str, timeout: float = 120.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StorageError(f"IPFS API URL {base_url!r} must be http(s)://host:port")
        self.base_url = base_url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base_path = parts.path.rstrip("/")
        self.timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self.timeout)

    def request(
        self,
        command: str,
        params: dict[str, str] | list[tuple[str, str]],
        body: Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        """POSTs /api/v0/<command>; returns the open 200 response or raises StorageError."""
        path = f"{self._base_path}/api/v0/{command}?{urlencode(params)}"
        conn = self._connection()
        try:
            conn.putrequest("POST", path)
            for k, v in (headers or {"Content-Length": "0"}).items():
                conn.putheader(k, v)
            conn.endheaders()
            send_error: OSError | None = None
            if body is not None:
                try:
                    for block in body:
                        conn.send(block)
                except (BrokenPipeError, ConnectionResetError) as e:
                    send_error = e  # the server may have answered early with an error; read it
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise StorageError(
                f"cannot reach the IPFS API at {self.base_url} ({command}): {type(e).__name__}", transient=True
            ) from e
        if response.status != 200:
            try:
                raw = response.read(1 << 16)
            finally:
                conn.close()
            message = raw.decode(errors="replace").strip()
            try:
                message = json.loads(raw).get("Message", message)  # noqa: TID251 - the IPFS node's answers
            except (ValueError, AttributeError):
                pass
            raise KuboError(
                f"IPFS API {command} failed: HTTP {response.status}: {message}",
                transient=response.status in (502, 503, 504),
            )
        if send_error is not None:
            conn.close()
            raise StorageError(f"IPFS API {command}: connection broke while sending", transient=True)
        return response

    def json(self, command: str, params: dict[str, str]) -> dict:
        response = self.request(command, params)
        try:
            return json.loads(response.read())  # noqa: TID251 - the IPFS node's answers
        finally:
            response.close()


def _multipart(name: str, path: Path, size: int, hasher_updates: list) -> tuple[str, int, Iterator[bytes]]:
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{quote(name, safe="")}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        with open(path, "rb") as f:
            while block := f.read(_BLOCK):
                for update in hasher_updates:
                    update(block)
                yield block
        yield tail

    return f"multipart/form-data; boundary={boundary}", len(head) + size + len(tail), body()


def parse_cid(value: str) -> CID:
    """Accepts a bare CID (v0 or v1), ipfs://CID or /ipfs/CID."""
    text = value.strip()
    for prefix in (PREFIX, "/ipfs/"):
        text = text.removeprefix(prefix)
    text = text.rstrip("/")
    try:
        return CID.decode(text)
    except (ValueError, KeyError, IndexError) as e:  # IndexError: multiformats on "b" (no bytes)
        raise StorageError(f"{value!r} is not a valid CID") from e


# multiformats registers an encoding on its first use, racily: two threads encoding the
# first CIDs at once (pod_publish uploads in parallel) failed with "already exists".
for _encoding in ("base32", "base58btc"):
    multibase_raw.get(_encoding)


# sha2-512 is 132 hex digits; a longer key is no CID a node made: not worth an index entry.
PIN_KEY_MAX = 160


def pin_key(location: str) -> str | None:
    """The key two manifests naming the same IPFS content share: the CID's
    multihash, hex, whatever version, base or codec the location writes it in
    (a record may name another job's content in another form). None for a
    location that is not an ipfs:// CID, or whose key is implausibly long."""
    if not location.startswith(PREFIX):
        return None
    try:
        key = (_multihash_of_v1_base32(location[len(PREFIX) :]) or bytes(parse_cid(location).digest)).hex()
    except StorageError:
        return None
    return key if len(key) <= PIN_KEY_MAX else None


def _multihash_of_v1_base32(text: str) -> bytes | None:
    """The multihash of a CIDv1 in base32 (how manifests write CIDs), or None
    for another form. multiformats checks every call's types: 0.12 ms a CID,
    most of what recording a batch of results cost."""
    if not text.startswith("b") or text != text.lower():
        return None
    try:
        raw = base64.b32decode(text[1:].upper() + "=" * (-len(text[1:]) % 8))
    except binascii.Error:
        return None
    if raw[:1] != b"\x01":
        return None
    at = 1
    while at < len(raw) and raw[at] & 0x80:  # the codec, a varint
        at += 1
    multihash = raw[at + 1 :]
    # <hash code varint><length varint><digest>: the rest must be exactly that
    code_end = next((i for i, byte in enumerate(multihash) if not byte & 0x80), None)
    if code_end is None or code_end + 1 >= len(multihash) or multihash[code_end + 1] & 0x80:
        return None
    return multihash if len(multihash) == code_end + 2 + multihash[code_end + 1] else None


def cid_location(cid: CID) -> str:
    return PREFIX + cid.set(version=1).encode("base32")


def verify_cid(
    returned: str | CID, path: Path, requested: UnixFSParams = CIDV1_RAW_LEAVES, computed: CID | None = None
) -> CID:
    """Checks that `returned` is the CID of the file at `path`; returns it decoded.

    `computed` is the CID already computed under `requested` while uploading
    (saves a second read). A CID that implies another profile (CIDv0) is
    recomputed from the file under that profile. Raises StorageError on any
    mismatch.
    """
    cid = parse_cid(returned) if isinstance(returned, str) else returned
    try:
        profile = params_for(cid)
    except ValueError as e:
        raise StorageError(f"IPFS node returned CID {cid} for {path.name}: {e}") from e
    if profile.cid_version == requested.cid_version and computed is not None:
        expected = computed
    else:
        if profile.cid_version != requested.cid_version:
            profile = UnixFSParams(
                cid_version=profile.cid_version,
                raw_leaves=profile.raw_leaves,
                chunk_size=requested.chunk_size,
                max_links=requested.max_links,
            )
        expected = cid_of_file(path, profile)
    if bytes(expected) != bytes(cid):
        raise StorageError(
            f"IPFS node returned CID {cid} for {path.name}, but its bytes hash to {expected}; refusing it"
        )
    return cid


class IpfsStore:
    kind = "ipfs"
    params = CIDV1_RAW_LEAVES

    def __init__(self, config: StorageConfig) -> None:
        if not config.ipfs_api:
            raise StorageError("IPFS storage needs ipfs_api (the Kubo RPC URL, e.g. http://127.0.0.1:5001)")
        self.client = KuboClient(config.ipfs_api)

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> StoredObject:
        # content_type has no place in UnixFS; the key only names the upload
        check_key(key)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError as e:
            raise StorageError(f"cannot upload {path}: file not found") from e
        sha = hashlib.sha256()
        hasher = UnixFSHasher(self.params)
        counter = _Counter()
        ctype, length, body = _multipart(key.rsplit("/", 1)[-1], path, size, [sha.update, hasher.update, counter])
        params = {
            "cid-version": str(self.params.cid_version),
            "raw-leaves": "true" if self.params.raw_leaves else "false",
            "chunker": self.params.chunker,
            "hash": "sha2-256",
            "pin": "true",
            "progress": "false",
        }
        response = self.client.request("add", params, body, {"Content-Type": ctype, "Content-Length": str(length)})
        try:
            lines = response.read().decode().splitlines()
        finally:
            response.close()
        if counter.count != size:
            raise StorageError(f"{path} changed size while being added to IPFS as {key!r}")
        hashes = [json.loads(line) for line in lines if line.strip()]  # noqa: TID251 - the IPFS node's answers
        hashes = [h for h in hashes if isinstance(h, dict) and h.get("Hash")]
        if not hashes:
            raise StorageError(f"IPFS add of {key!r} returned no CID: {' '.join(lines)[:200]}")
        cid = verify_cid(hashes[-1]["Hash"], path, self.params, computed=hasher.finish())
        return StoredObject(location=cid_location(cid), size=size, sha256=sha.hexdigest())

    def _cid(self, location: str) -> CID:
        if not location.startswith(PREFIX):
            raise StorageError(f"location {location!r} is not an ipfs:// location")
        return parse_cid(location)

    def _size(self, cid: CID, what: str) -> int:
        try:
            stat = self.client.json("files/stat", {"arg": f"/ipfs/{cid}"})
        except KuboError as e:
            if any(h in e.message.lower() for h in _NOT_FOUND_HINTS):
                raise ObjectNotFound(f"no object at {what}") from e
            raise
        if stat.get("Type") not in (None, "file"):
            raise StorageError(f"{what} is a {stat.get('Type')}, not a file")
        return int(stat["Size"])

    def size(self, location: str) -> int:
        return self._size(self._cid(location), location)

    def read(self, location: str, offset: int = 0, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        cid = self._cid(location)
        if offset < 0:
            raise StorageError(f"negative offset {offset} for {location}")
        # the size lets us refuse bad offsets and detect a cut stream: Kubo
        # reports mid-stream errors only in an HTTP trailer http.client drops
        size = self._size(cid, location)
        if offset > size:
            raise StorageError(f"offset {offset} is past the end of {location} ({size} bytes)")
        if offset == size:
            return iter(())
        response = self.client.request("cat", {"arg": str(cid), "offset": str(offset)})
        return ChunkStream(_cat_chunks(response, chunk_size, size - offset, location), response.close)

    def delete(self, location: str) -> None:
        cid = self._cid(location)
        # a pin is keyed by the CID it was made with: try the v1 form we record,
        # then the v0 form an older node pinned under
        candidates = [str(cid)]
        if cid.codec.name == "dag-pb" and cid.hashfun.name == "sha2-256":
            candidates.append(str(cid.set(version=0, base="base58btc")))
        for candidate in candidates:
            try:
                self.client.json("pin/rm", {"arg": candidate, "recursive": "true"})
                return
            except KuboError as e:
                if "not pinned" not in e.message:
                    raise
        # pinned under neither form: already deleted (idempotent)

    def delete_prefix(self, key_prefix: str) -> int:
        # IPFS has no key namespace; manifest locations are deleted one by one
        return 0


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, block: bytes) -> None:
        self.count += len(block)


def _cat_chunks(response: http.client.HTTPResponse, chunk_size: int, expected: int, what: str) -> Iterator[bytes]:
    got = 0
    try:
        while block := response.read(chunk_size):
            got += len(block)
            yield block
    except (TimeoutError, OSError, http.client.HTTPException) as e:
        raise StorageError(f"reading {what} from IPFS broke after {got} bytes", transient=True) from e
    if got != expected:
        raise StorageError(f"IPFS returned {got} bytes for {what}, expected {expected}", transient=True)


def download_ipfs(
    config: StorageConfig,
    cid: str,
    dest: Path,
    max_bytes: int | None,
    *,
    on_size: Callable[[int], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
    chunk_bytes: int = _BLOCK,
    durable: bool = True,
    timeouts: tuple[float, float] | None = None,
) -> tuple[int, str]:
    """Streams the file a CID names into dest (atomic rename); returns (size, sha256 hex).

    `on_size`, `on_chunk`, `chunk_bytes`, `durable` and `timeouts` as for
    download_s3: the hooks are called with the file's size before the download
    and with each block's length before it is written, and either may raise to
    stop (the partial file is removed). http.client has one socket timeout, so
    the larger of the two applies to connecting and to each read.
    """
    if not config.ipfs_api:
        raise StorageError("IPFS download needs ipfs_api (the Kubo RPC URL)")
    parsed = parse_cid(cid)
    store = IpfsStore(config)
    if timeouts is not None:
        store.client.timeout = max(timeouts)
    what = f"ipfs://{parsed}"
    size = store._size(parsed, what)
    sink = SizedDownload(dest, max_bytes, what)
    try:
        sink.check_declared_size(size)
        if on_size is not None:
            on_size(size)
        response = store.client.request("cat", {"arg": str(parsed)})
        try:
            for block in _cat_chunks(response, chunk_bytes, size, what):
                if on_chunk is not None:
                    on_chunk(len(block))
                sink.write(block)
        finally:
            response.close()
        return sink.commit(durable)
    except BaseException:
        sink.discard()
        raise
