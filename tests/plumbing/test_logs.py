"""plumbing.logs: the format chosen, and what a line carries."""

from __future__ import annotations

import io
import json
import logging

import pytest

from plumbing import logs, tracing


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("setting", "stream", "chosen"),
    [
        ("", Terminal(), "text"),  # auto: people at a terminal
        ("auto", io.StringIO(), "json"),  # auto: a pipe, a file, a container's output
        ("json", Terminal(), "json"),
        ("TEXT", io.StringIO(), "text"),
    ],
)
def test_the_format_follows_the_setting_and_the_stream(setting, stream, chosen):
    assert logs.log_format({"C2D_LOG_FORMAT": setting}, stream) == chosen


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="C2D_LOG_FORMAT='xml'"):
        logs.log_format({"C2D_LOG_FORMAT": "xml"})


def record(message: str, exc_info=None) -> logging.LogRecord:  # type: ignore[no-untyped-def]
    return logging.LogRecord("c2d.engine", logging.WARNING, __file__, 1, message, (), exc_info)


def test_a_json_line_names_the_job_and_the_trace_it_was_written_for():
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with logs.job("job-1"), tracing.joined(f"00-{trace_id}-00f067aa0ba902b7-01"):
        line = logs.JsonFormatter().format(record('quote " and ünïcode'))
    entry = json.loads(line)
    assert entry["job_id"] == "job-1" and entry["trace_id"] == trace_id and entry["span_id"] == "00f067aa0ba902b7"
    assert entry["message"] == 'quote " and ünïcode' and entry["level"] == "WARNING" and entry["logger"] == "c2d.engine"
    assert "\n" not in line


def test_outside_a_job_a_line_has_no_job_or_trace_and_an_exception_stays_on_one_line():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        line = logs.JsonFormatter().format(record("failed", sys.exc_info()))
    entry = json.loads(line)
    assert "job_id" not in entry and "trace_id" not in entry
    assert "RuntimeError: boom" in entry["exception"] and "\n" not in line


def test_the_text_format_shows_the_job_and_trace_in_brackets():
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with logs.job("job-2"), tracing.joined(f"00-{trace_id}-00f067aa0ba902b7-01"):
        line = logs.TextFormatter().format(record("hello"))
    assert line.endswith(f"c2d.engine [job=job-2 trace={trace_id}]: hello")
    assert logs.TextFormatter().format(record("bare")).endswith("c2d.engine: bare")
