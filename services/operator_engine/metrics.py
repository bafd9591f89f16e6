"""The engine's metrics, and the adapter that measures the stages.

Every state change of every job passes through the event log, so the stages
are measured there (`MeasuredEventLog`, wrapped around the log the
orchestrator writes to): a stage starts with the change that announces it
and ends with the next one that announces a stage or ends the job. The
results manifest of a finished job gives the bytes published. The queue and
the running jobs are read from the orchestrator when Prometheus scrapes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from plumbing import logs, metrics, tracing
from plumbing.statuses import EndReason, Status, is_terminal
from services.operator_engine.domain.changes import StateChange
from services.operator_engine.domain.orchestrator import Orchestrator
from services.operator_engine.domain.ports import EventLog

log = logging.getLogger("c2d.engine")


class EngineMetrics:
    def __init__(self, server_metrics: metrics.Metrics, events: Any) -> None:
        self._server_metrics = server_metrics
        self.stage_seconds = server_metrics.histogram(
            "c2d_engine_stage_duration_seconds",
            "how long each stage of a job ran, by stage and how it ended",
            ("stage", "outcome"),
            buckets=metrics.STAGE_BUCKETS,
        )
        self.staged_bytes = server_metrics.counter(
            "c2d_engine_staged_bytes", "bytes pod_config staged into jobs' /data (its success reports)"
        )
        self.published_bytes = server_metrics.counter(
            "c2d_engine_published_bytes", "bytes of results pod_publish published (finished jobs' manifests)"
        )
        server_metrics.gauge(
            "c2d_engine_last_sequence",
            "the sequence number of the last state change the engine recorded (what it streams up to)",
            (),
            lambda: [((), events.latest)],
        )

    def watch(self, orchestrator: Orchestrator) -> None:
        """The queue and the running jobs, by environment, read at each scrape."""
        server_metrics = self._server_metrics
        environment = orchestrator.environment.id  # one environment per engine today
        server_metrics.gauge(
            "c2d_engine_queued_jobs",
            "jobs waiting for room in their environment",
            ("environment",),
            lambda: [((environment,), orchestrator.queued_jobs)],
        )
        server_metrics.gauge(
            "c2d_engine_running_jobs",
            "jobs running in their environment",
            ("environment",),
            lambda: [((environment,), orchestrator.running_jobs)],
        )


@dataclass
class _OpenStage:
    name: str
    started: float
    span: Any  # the stage's span (a no-op one when tracing is off)


class MeasuredEventLog:
    """The orchestrator's event log, with each stage's duration and span, the
    bytes a finished job published, and one log line per job that ends."""

    def __init__(self, inner: EventLog, engine_metrics: EngineMetrics) -> None:
        self._inner = inner
        self._metrics = engine_metrics
        self._open: dict[str, _OpenStage] = {}  # job id -> its running stage
        self._started: dict[str, float] = {}  # job id -> when it left the queue

    async def append(self, change: StateChange, stage: str | None = None, workflow: bytes | None = None) -> int:
        sequence = await self._inner.append(change, stage, workflow)
        now = time.monotonic()
        job_id = change.job_id
        if change.status == Status.STARTED:
            self._started[job_id] = now
        if stage is not None:
            self._close(job_id, "succeeded", now)  # the stage before it, if any, went well
            # Called from the job's own task, whose context holds its trace: the span joins it.
            self._open[job_id] = _OpenStage(stage, now, tracing.tracer.start_span(f"stage {stage}"))
        elif is_terminal(Status(change.status)):
            reason = EndReason(change.end_reason)
            self._close(job_id, "succeeded" if reason == EndReason.COMPLETED else reason.name.lower(), now)
            if change.results:
                self._metrics.published_bytes.inc(sum(int(f.get("size", 0)) for f in change.results.get("files", ())))
            started = self._started.pop(job_id, None)
            with logs.job(job_id):  # also when the job is ended from another task (a stop, the queue's expiry)
                log.info(
                    "job %s ended: status %d (%s)%s",
                    job_id,
                    change.status,
                    reason.name.lower(),
                    f" after {now - started:.2f} s" if started is not None else "",
                )
        return sequence

    def _close(self, job_id: str, outcome: str, now: float) -> None:
        open_stage = self._open.pop(job_id, None)
        if open_stage is None:
            return
        self._metrics.stage_seconds.labels(open_stage.name, outcome).observe(now - open_stage.started)
        tracing.end_span(open_stage.span, error="" if outcome == "succeeded" else outcome)
