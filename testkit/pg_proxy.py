"""A TCP proxy in front of PostgreSQL that loses the reply to a COMMIT.

The fault a server restart or a network cut cannot stage on purpose: the
server committed, and the client, whose connection died before the reply
came, cannot tell whether it did. Once `arm()`ed, the proxy passes the next
COMMIT to the server, swallows what the server answers up to its
ReadyForQuery (so the commit is done, for certain), and closes both
connections. It reads the PostgreSQL wire protocol (v3): after the start-up
message every client message is a type byte and an int32 length (which counts
itself); psycopg2 commits with a simple query ('Q') "COMMIT". It refuses TLS
and GSS encryption (answers 'N', as a server without them does), so libpq
talks in the clear and the proxy can read it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

# The start-up codes a client sends before its StartupMessage to ask for encryption.
ENCRYPTION_REQUESTS = (80877103, 80877104)  # SSLRequest, GSSENCRequest


class CommitReplyCutter:
    """Listens on a free port of 127.0.0.1 and relays to `upstream` (host, port)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._armed = 0
        self._after = b""
        self._open: set[socket.socket] = set()
        self.commits = 0  # COMMITs relayed, cut or not
        self.cut = 0  # COMMITs whose reply the client never got
        self.cut_after: list[str] = []  # the statement before each cut COMMIT (whose it was)
        self.cut_happened = threading.Event()
        threading.Thread(target=self._accept, name="pg-proxy", daemon=True).start()

    def arm(self, times: int = 1, after: bytes = b"") -> None:
        """The next `times` COMMITs (of any connection) lose their replies; with `after`,
        only those of a transaction whose last statement contains it and changed a row."""
        with self._lock:
            self._armed += times
            self._after = after

    def disarm(self) -> int:
        """No more cuts; returns how many armed ones never came."""
        with self._lock:
            left, self._armed = self._armed, 0
        return left

    def url(self, database_url: str) -> str:
        """The database URL, through the proxy."""
        parts = urlsplit(database_url)
        user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._open:
                _shut(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), name="pg-proxy-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self._upstream)
        except OSError:  # the server is down (restarting): the client sees its connection refused
            _shut(client)
            return
        for sock in (client, server):  # a message a write: Nagle would hold each for the peer's delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._open.update((client, server))
        cutting = threading.Event()
        last = b""
        outcome = [b""]  # the server's CommandComplete tag for the last statement, e.g. b"UPDATE 1"
        try:
            if not self._start_up(client, server):
                return
            threading.Thread(target=self._replies, args=(server, client, cutting, outcome), daemon=True).start()
            for kind, message in _messages(client):
                query = message[5:].rstrip(b"\0").strip() if kind == b"Q" else b""
                if query.upper() == b"COMMIT":
                    with self._lock:
                        self.commits += 1
                        # (the client sends its COMMIT only once it has the statement's outcome)
                        if self._armed and (not self._after or (self._after in last and changed(outcome[0]))):
                            self._armed -= 1
                            self.cut_after.append(last[:120].decode(errors="replace"))
                            cutting.set()  # before the server can answer
                elif query:
                    last = query
                server.sendall(message)
        except OSError:
            pass
        finally:
            if not cutting.is_set():  # else _replies closes both once the commit is done
                self._drop(client, server)

    def _start_up(self, client: socket.socket, server: socket.socket) -> bool:
        """Relays the StartupMessage (refusing encryption first); False if the client left."""
        while True:
            head = _read(client, 8)
            if head is None:
                return False
            length, code = struct.unpack("!ii", head)
            if code in ENCRYPTION_REQUESTS:
                client.sendall(b"N")
                continue
            rest = _read(client, length - 8)
            if rest is None:
                return False
            server.sendall(head + rest)
            return True

    def _replies(
        self, server: socket.socket, client: socket.socket, cutting: threading.Event, outcome: list[bytes]
    ) -> None:
        try:
            for kind, message in _messages(server):
                if kind == b"C":
                    outcome[0] = message[5:].rstrip(b"\0")
                if not cutting.is_set():
                    client.sendall(message)
                elif kind == b"Z":  # ReadyForQuery: the COMMIT is done, and its reply swallowed
                    with self._lock:
                        self.cut += 1
                    self.cut_happened.set()
                    break
        except OSError:
            pass
        self._drop(client, server)

    def _drop(self, *sockets: socket.socket) -> None:
        with self._lock:
            for sock in sockets:
                _shut(sock)
                self._open.discard(sock)


def changed(tag: bytes) -> bool:
    """Whether a CommandComplete tag says rows changed ("UPDATE 2" yes, "UPDATE 0" no)."""
    count = tag.rsplit(b" ", 1)[-1]
    return count.isdigit() and int(count) > 0


def _read(sock: socket.socket, size: int) -> bytes | None:
    """Exactly `size` bytes, or None at the end of the stream."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _messages(sock: socket.socket) -> Iterator[tuple[bytes, bytes]]:
    """(type byte, whole message) for each typed message, until the stream ends."""
    while True:
        head = _read(sock, 5)
        if head is None:
            return
        body = _read(sock, struct.unpack("!i", head[1:])[0] - 4)
        if body is None:
            return
        yield head[:1], head + body


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@contextlib.contextmanager
def commit_reply_cutter(database_url: str) -> Iterator[CommitReplyCutter]:
    """A cutter in front of the server of `database_url`."""
    parts = urlsplit(database_url)
    proxy = CommitReplyCutter((parts.hostname or "127.0.0.1", parts.port or 5432))
    try:
        yield proxy
    finally:
        proxy.close()
