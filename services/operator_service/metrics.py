"""The operator-service's metrics: jobs by status, and each engine's state stream.

Both are gauges read when Prometheus scrapes: the jobs are counted by one
query on the status index, at most once per JOBS_COUNT_INTERVAL_S however
often the scraper asks; the stream's progress is read from each engine link.
"""

from __future__ import annotations

from collections.abc import Mapping

from plumbing import metrics
from plumbing.database import Database
from services.operator_service.domain.engine_links import EngineLink
from services.operator_service.persistence import jobs

# A count over millions of jobs takes a while: scrapers more eager than this share one.
JOBS_COUNT_INTERVAL_S = 5.0


def register(server_metrics: metrics.Metrics, db: Database, links: Mapping[str, EngineLink]) -> None:
    def jobs_by_status() -> metrics.Samples:
        counts = db.transaction(jobs.count_by_status)
        return [((str(status),), count) for status, count in sorted(counts.items())]

    server_metrics.gauge(
        "c2d_jobs",
        "jobs the operator-service holds, by status (Ocean's numbers)",
        ("status",),
        metrics.throttled(jobs_by_status, JOBS_COUNT_INTERVAL_S),
    )
    server_metrics.gauge(
        "c2d_engine_stream_emitted_sequence",
        "the last state change each engine has recorded, as its stream told",
        ("engine",),
        lambda: [((engine_id,), link.last_emitted) for engine_id, link in links.items()],
    )
    server_metrics.gauge(
        "c2d_engine_stream_applied_sequence",
        "the last state change of each engine applied to the jobs here",
        ("engine",),
        lambda: [((engine_id,), link.last_applied) for engine_id, link in links.items()],
    )
    server_metrics.gauge(
        "c2d_engine_stream_lag",
        "state changes each engine has recorded that are not applied here yet (emitted - applied)",
        ("engine",),
        lambda: [((engine_id,), max(0, link.last_emitted - link.last_applied)) for engine_id, link in links.items()],
    )
