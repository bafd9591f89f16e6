"""In-process fan-out of applied job changes to WatchJobs streams."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable

from services.operator_service.persistence.models import Job


class Broker:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[Job]]] = collections.defaultdict(set)

    def subscribe(self, job_ids: Iterable[str]) -> asyncio.Queue[Job]:
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job_id in job_ids:
            self._subscribers[job_id].add(queue)
        return queue

    def unsubscribe(self, job_ids: Iterable[str], queue: asyncio.Queue[Job]) -> None:
        for job_id in job_ids:
            queues = self._subscribers.get(job_id)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._subscribers[job_id]

    def publish(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            for queue in self._subscribers.get(job.job_id, ()):
                queue.put_nowait(job)
