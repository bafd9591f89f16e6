"""A trusted algorithm's files, fetched by the provider to check the
filesChecksum a dataset pins before the consumer pays (InitializeCompute),
as Ocean's provider does. pod_config checks it again when it stages the job.

The files are fetched with plumbing/fetching.py's fetchers, pod_config's own:
the same SSRF guard (C2D_STAGING_ALLOW_HOSTS, C2D_STAGING_BLOCKED_CIDRS),
timeouts, retries and size limits. They stream into a scratch file that is
removed at once; only their sha256 digests are kept. A computed checksum is
remembered for a short while per algorithm and sealed file list, so repeated
InitializeCompute calls do not make the provider fetch the same files again.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from plumbing import assets
from plumbing.fetching import ByteBudget, Fetcher, FetchError, FileSource, StagingLimits

__all__ = ["AlgorithmFiles", "FetchError"]

CACHED_ALGORITHMS = 1024


class AlgorithmFiles:
    def __init__(self, fetchers: Mapping[str, Fetcher], limits: StagingLimits, cache_s: float) -> None:
        self._fetchers = dict(fetchers)
        self._limits = limits
        self._cache_s = cache_s
        self._checked: collections.OrderedDict[str, tuple[float, str | None]] = collections.OrderedDict()
        self._in_flight: dict[str, asyncio.Future[str | None]] = {}

    async def files_checksum(self, key: str, sources: Sequence[FileSource]) -> str | None:
        """The filesChecksum of `sources` (the algorithm named by `key`, e.g.
        its DID and sealed files), or None when one is of a type this provider
        cannot fetch (pod_config still checks it). Raises FetchError."""
        key = hashlib.sha256(key.encode()).hexdigest()
        cached = self._checked.get(key)
        if cached is not None and time.monotonic() - cached[0] < self._cache_s:
            return cached[1]
        running = self._in_flight.get(key)
        if running is not None:  # the same algorithm checked by concurrent requests: fetched once
            return await asyncio.shield(running)
        future = asyncio.ensure_future(self._fetch(sources))
        self._in_flight[key] = future
        try:
            checksum = await asyncio.shield(future)
        finally:
            if future.done():
                self._in_flight.pop(key, None)
            else:
                future.add_done_callback(lambda _: self._in_flight.pop(key, None))
        self._checked[key] = (time.monotonic(), checksum)
        self._checked.move_to_end(key)
        if len(self._checked) > CACHED_ALGORITHMS:
            self._checked.popitem(last=False)
        return checksum

    async def _fetch(self, sources: Sequence[FileSource]) -> str | None:
        if any(source.type not in self._fetchers for source in sources):
            return None
        budget = ByteBudget(self._limits.max_total_bytes)
        digests = []
        with tempfile.TemporaryDirectory(prefix="c2d-algorithm-check-") as scratch:
            for index, source in enumerate(sources):
                destination = Path(scratch) / str(index)
                _, digest = await self._fetchers[source.type].fetch(source, destination, self._limits, budget)
                destination.unlink(missing_ok=True)  # a scratch file: only its digest is kept
                digests.append(digest.lower())
        return assets.files_checksum(digests)
