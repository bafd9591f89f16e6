"""Local recomputation of the CID Kubo assigns to a file added with `ipfs add`.

Used to verify, byte for byte, that the CID an IPFS node returns for an upload
addresses exactly the bytes we sent. Implements the UnixFS importer as
Kubo/boxo does it: fixed-size chunker, balanced layout, at most 174 links per
node, sha2-256, and either raw leaves (CIDv1 raw codec) or dag-pb leaves
(UnixFS File nodes carrying the data). The dag-pb PBNode/PBLink and UnixFS
Data protobufs are hand-encoded: they are tiny and their canonical byte order
matters for the hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from multiformats import CID, multihash

DEFAULT_CHUNK_SIZE = 262144  # Kubo's "size-262144" chunker
DEFAULT_MAX_LINKS = 174  # boxo helpers.DefaultLinksPerBlock (8192 / 47)

_CODEC_RAW = 0x55
_CODEC_DAG_PB = 0x70
_UNIXFS_FILE = 2


@dataclass(frozen=True)
class UnixFSParams:
    """The `ipfs add` parameters that determine a file's CID."""

    cid_version: int = 1
    raw_leaves: bool = True
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_links: int = DEFAULT_MAX_LINKS

    def __post_init__(self) -> None:
        if self.cid_version not in (0, 1):
            raise ValueError("cid_version must be 0 or 1")
        if self.chunk_size <= 0 or self.max_links < 2:
            raise ValueError("chunk_size must be > 0 and max_links >= 2")

    @property
    def chunker(self) -> str:
        return f"size-{self.chunk_size}"


# Kubo's defaults for `add --cid-version=1` (raw leaves are implied by v1).
CIDV1_RAW_LEAVES = UnixFSParams(cid_version=1, raw_leaves=True)
# Kubo's historic defaults for a plain `add` (CIDv0, dag-pb leaves).
CIDV0_LEGACY = UnixFSParams(cid_version=0, raw_leaves=False)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def _field_varint(field: int, value: int) -> bytes:
    return _varint(field << 3 | 0) + _varint(value)


def unixfs_file_data(data: bytes | None, filesize: int, blocksizes: list[int]) -> bytes:
    """UnixFS `Data` message for a File node (fields: Type=1, Data=2, filesize=3, blocksizes=4)."""
    out = _field_varint(1, _UNIXFS_FILE)
    if data:  # boxo leaves the field unset for internal and empty nodes
        out += _field_bytes(2, data)
    out += _field_varint(3, filesize)
    for size in blocksizes:  # proto2 repeated uint64: not packed
        out += _field_varint(4, size)
    return out


def pb_node(links: list[tuple[bytes, int]], data: bytes) -> bytes:
    """dag-pb PBNode in canonical order: Links (field 2) before Data (field 1).

    Each PBLink is Hash=1, Name=2 (boxo always writes the empty name), Tsize=3.
    """
    out = b""
    for cid_bytes, tsize in links:
        link = _field_bytes(1, cid_bytes) + _field_bytes(2, b"") + _field_varint(3, tsize)
        out += _field_bytes(2, link)
    return out + _field_bytes(1, data)


@dataclass(frozen=True)
class _Node:
    cid: CID
    tsize: int  # cumulative serialized size of the sub-DAG (PBLink.Tsize)
    filesize: int  # file bytes below this node (UnixFS blocksizes entry)


class UnixFSHasher:
    """Streams a file's bytes and computes the root CID `ipfs add` would give.

    Memory is bounded: one chunk buffer plus at most max_links pending nodes
    per tree level. The bottom-up grouping below yields the same tree as
    boxo's balanced builder (which grows the root one level whenever the
    current tree is full and more data follows).
    """

    def __init__(self, params: UnixFSParams = CIDV1_RAW_LEAVES) -> None:
        self.params = params
        self._buf = bytearray()
        self._levels: list[list[_Node]] = [[]]
        self._leaves = 0
        self._done = False

    def _cid(self, codec: int, block: bytes) -> CID:
        digest = multihash.digest(block, "sha2-256")
        if self.params.cid_version == 0 and codec == _CODEC_DAG_PB:
            return CID("base58btc", 0, "dag-pb", digest)
        # raw leaves are always CIDv1 (a CIDv0 can only name dag-pb)
        return CID("base32", 1, "raw" if codec == _CODEC_RAW else "dag-pb", digest)

    def _leaf(self, chunk: bytes) -> _Node:
        if self.params.raw_leaves:
            return _Node(self._cid(_CODEC_RAW, chunk), len(chunk), len(chunk))
        block = pb_node([], unixfs_file_data(chunk, len(chunk), []))
        return _Node(self._cid(_CODEC_DAG_PB, block), len(block), len(chunk))

    def _parent(self, children: list[_Node]) -> _Node:
        filesize = sum(c.filesize for c in children)
        data = unixfs_file_data(None, filesize, [c.filesize for c in children])
        block = pb_node([(bytes(c.cid), c.tsize) for c in children], data)
        tsize = len(block) + sum(c.tsize for c in children)
        return _Node(self._cid(_CODEC_DAG_PB, block), tsize, filesize)

    def _push(self, level: int, node: _Node) -> None:
        if level == len(self._levels):
            self._levels.append([])
        pending = self._levels[level]
        pending.append(node)
        if len(pending) == self.params.max_links:
            # a full node at this level: emit its parent right away
            self._levels[level] = []
            self._push(level + 1, self._parent(pending))

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._done:
            raise RuntimeError("UnixFSHasher already finished")
        self._buf += data
        size = self.params.chunk_size
        # keep a full chunk buffered: whether it is the last one decides the layout
        while len(self._buf) > size:
            chunk = bytes(self._buf[:size])
            del self._buf[:size]
            self._leaves += 1
            self._push(0, self._leaf(chunk))

    def finish(self) -> CID:
        if self._done:
            raise RuntimeError("UnixFSHasher already finished")
        self._done = True
        if self._buf or self._leaves == 0:
            # last chunk, or the single empty leaf of an empty file
            self._leaves += 1
            self._push(0, self._leaf(bytes(self._buf)))
            self._buf.clear()
        if self._leaves == 1:
            # a one-chunk file is its leaf; no wrapping node
            for pending in self._levels:
                if pending:
                    return pending[0].cid
        # depth of the balanced tree: smallest d with max_links**d >= leaves
        depth, capacity = 0, 1
        while capacity < self._leaves:
            depth += 1
            capacity *= self.params.max_links
        for level in range(depth):
            if level >= len(self._levels):
                self._levels.append([])
            pending = self._levels[level]
            if pending:
                self._levels[level] = []
                if level + 1 == len(self._levels):
                    self._levels.append([])
                self._levels[level + 1].append(self._parent(pending))
        root = self._levels[depth]
        assert len(root) == 1, "balanced layout produced several roots"
        return root[0].cid


def cid_of_stream(stream: BinaryIO, params: UnixFSParams = CIDV1_RAW_LEAVES) -> CID:
    hasher = UnixFSHasher(params)
    while block := stream.read(1 << 20):
        hasher.update(block)
    return hasher.finish()


def cid_of_file(path: Path, params: UnixFSParams = CIDV1_RAW_LEAVES) -> CID:
    with open(path, "rb") as f:
        return cid_of_stream(f, params)


def params_for(cid: CID) -> UnixFSParams:
    """The add profile a returned CID implies, or ValueError if it fits none we verify.

    A CIDv0 can only come from the legacy profile (dag-pb leaves); a CIDv1
    (raw or dag-pb root) is checked against the raw-leaves profile we request.
    """
    if cid.hashfun.name != "sha2-256":
        raise ValueError(f"CID {cid} uses hash {cid.hashfun.name}, expected sha2-256")
    if cid.version == 0:
        return CIDV0_LEGACY
    if cid.codec.name in ("raw", "dag-pb"):
        return CIDV1_RAW_LEAVES
    raise ValueError(f"CID {cid} has codec {cid.codec.name}, expected raw or dag-pb")
