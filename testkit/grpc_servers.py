"""Finds grpc.aio servers left serving after their event loop closed.

Such a server can never be stopped any more, and when the garbage collector
frees it (pytest collects garbage as the run ends) gRPC shuts its completion
queue down and joins its poller thread, which never returns: the test process
hangs after its summary. ``track()`` remembers each server made from then on,
``orphans()`` says which ones outlived their loop, and ``keep()`` holds them
so that no collection frees them (the process then exits normally).
"""

from __future__ import annotations

import weakref
from typing import Any

import grpc

_made: weakref.WeakSet[grpc.aio.Server] = weakref.WeakSet()
_kept: list[grpc.aio.Server] = []


def track() -> None:
    """From now on, every ``grpc.aio.server(...)`` is remembered (weakly)."""
    make = grpc.aio.server
    if getattr(make, "tracked", False):
        return

    def server(*args: Any, **kwargs: Any) -> grpc.aio.Server:
        made = make(*args, **kwargs)
        _made.add(made)
        return made

    server.tracked = True  # type: ignore[attr-defined]
    grpc.aio.server = server


def orphans() -> list[grpc.aio.Server]:
    """The servers still serving whose event loop is closed (nothing can stop them now)."""
    return [s for s in list(_made) if s._loop.is_closed() and s._server.is_running()]


def keep(servers: list[grpc.aio.Server]) -> None:
    """Held until the process exits, so that no garbage collection frees them."""
    _kept.extend(servers)
    for server in servers:
        _made.discard(server)  # reported once
