"""In-process fan-out of applied job changes to WatchJobs streams."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable
from typing import Generic, TypeVar, cast

from services.operator_service.domain.ports import JobRecord

# Any JobRecord; not a bound, which mypy cannot check against SQLAlchemy's Mapped columns.
Job = TypeVar("Job")


class Broker(Generic[Job]):
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
            for queue in self._subscribers.get(cast(JobRecord, job).job_id, ()):
                queue.put_nowait(job)
