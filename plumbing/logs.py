"""Logging for every server and pod: one JSON object a line, or text for a terminal.

Each record carries the time, level, logger, component (provider,
operator-service, operator-engine, pod_config, pod_publish), message, and,
when known, the job id and the trace id. Both come from context variables,
so they follow a job through the tasks it spawns without being passed down:
`bind(job_id=...)` in the task that works for the job, the trace id from the
current OpenTelemetry context (plumbing.tracing).

C2D_LOG_FORMAT picks the format: `json` (one object a line, what a log
collector parses), `text` (for people), or `auto`, the default: text when
stderr is a terminal (`c2d up` in a shell), JSON otherwise (a container, a
pipe, a pod's admin log file). C2D_LOG_LEVEL sets the level.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from opentelemetry import trace

FORMATS = ("auto", "json", "text")

_job_id: contextvars.ContextVar[str] = contextvars.ContextVar("c2d_job_id", default="")
_component: contextvars.ContextVar[str] = contextvars.ContextVar("c2d_component", default="")


def bind(*, job_id: str | None = None, component: str | None = None) -> None:
    """Tags this task's log lines (and those of the tasks it creates from now on)."""
    if job_id is not None:
        _job_id.set(job_id)
    if component is not None:
        _component.set(component)


def bind_job(job_id: str) -> contextvars.Token[str]:
    """Tags this task's log lines with the job id until `unbind_job`."""
    return _job_id.set(job_id)


def unbind_job(token: contextvars.Token[str]) -> None:
    _job_id.reset(token)


@contextmanager
def job(job_id: str) -> Iterator[None]:
    """Tags the log lines written inside the block with the job id."""
    token = bind_job(job_id)
    try:
        yield
    finally:
        unbind_job(token)


def current_job_id() -> str:
    return _job_id.get()


def trace_id() -> str:
    """The current trace id in W3C form (32 hex digits), '' outside any trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, component, message, and
    job_id, trace_id, span_id and exception when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "component": _component.get(),
            "message": record.getMessage(),
        }
        job_id = _job_id.get()
        if job_id:
            entry["job_id"] = job_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The human format, with the job and trace ids in brackets when known."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(c2d_context)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        tags = [f"job={job_id}"] if (job_id := _job_id.get()) else []
        if traced := trace_id():
            tags.append(f"trace={traced}")
        record.c2d_context = f" [{' '.join(tags)}]" if tags else ""
        return super().format(record)


def log_format(environ: dict[str, str] | None = None, stream: object = None) -> str:
    """json or text, from C2D_LOG_FORMAT (auto: text on a terminal)."""
    chosen = (environ if environ is not None else os.environ).get("C2D_LOG_FORMAT", "auto").strip().lower() or "auto"
    if chosen not in FORMATS:
        raise ValueError(f"C2D_LOG_FORMAT={chosen!r}: expected one of {', '.join(FORMATS)}")
    if chosen == "auto":
        isatty = getattr(stream if stream is not None else sys.stderr, "isatty", None)
        return "text" if isatty is not None and isatty() else "json"
    return chosen


def configure(component: str, default_level: str = "INFO") -> None:
    """Sets up the process's logging on stderr, replacing any earlier set-up
    (a forked pod inherits its helper's): the format from C2D_LOG_FORMAT,
    the level from C2D_LOG_LEVEL, `component` on every line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format() == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(os.environ.get("C2D_LOG_LEVEL", default_level).upper())
    bind(component=component)
