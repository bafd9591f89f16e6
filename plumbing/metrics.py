"""Prometheus metrics: one registry per server, served on an HTTP port of its own.

A server makes its `Metrics` in server.py, hands it to
plumbing.server.start_server (which records every RPC: `RpcMetrics`) and
registers its own: counters and histograms it updates where things happen,
and gauges read when Prometheus scrapes (`gauge`), so a quiet server does
no work for them. One registry per server, not the process's global one:
`c2d up` runs the three servers in one process, and each port shows its own
server's metrics only.

Each server's setting METRICS_ADDRESS (C2D_PROVIDER_METRICS_ADDRESS, ...)
says where /metrics is served; empty turns the endpoint and the RPC
measurement off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("c2d.metrics")

# Seconds: from a fast RPC (sub-millisecond) to a long stream or stage (an hour).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0)
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0)

# Labels and their values for one sample of a gauge read at scrape time.
Samples = Iterable[tuple[Sequence[str], float]]


class Metrics:
    """One server's metrics: its registry, with the process's own figures
    (CPU, memory, open files, garbage collector) included."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.registry.register(_Delegate(GC_COLLECTOR))
        self.rpc = RpcMetrics(self.registry)

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def histogram(
        self, name: str, documentation: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> Histogram:
        return Histogram(name, documentation, labels, registry=self.registry, buckets=buckets)

    def gauge(self, name: str, documentation: str, labels: Sequence[str], read: Callable[[], Samples]) -> None:
        """A gauge whose samples `read` returns when Prometheus scrapes (in the
        HTTP server's thread: `read` must be safe to call from there)."""
        self.registry.register(_ReadGauge(name, documentation, tuple(labels), read))


class RpcMetrics:
    """Every RPC a server answers, by service, method and status code (the
    names of the go-grpc-prometheus convention, which dashboards know)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("grpc_service", "grpc_method", "grpc_code")
        self.handled = Counter(
            "grpc_server_handled", "RPCs completed on the server, whatever their status", labels, registry=registry
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "time from receiving an RPC to its status (a stream's whole life)",
            labels,
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )

    def method(self, service: str, method: str) -> MethodMetrics:
        return MethodMetrics(self, service, method)


class MethodMetrics:
    """One method's series, found once per status code rather than at every call."""

    __slots__ = ("_by_code", "_method", "_rpc", "_service")

    def __init__(self, rpc: RpcMetrics, service: str, method: str) -> None:
        self._rpc, self._service, self._method = rpc, service, method
        self._by_code: dict[Any, tuple[Any, Any]] = {}

    def record(self, code: Any, seconds: float) -> None:
        series = self._by_code.get(code)
        if series is None:
            labels = (self._service, self._method, code.name)
            series = self._by_code[code] = (self._rpc.handled.labels(*labels), self._rpc.seconds.labels(*labels))
        series[0].inc()
        series[1].observe(seconds)


class _ReadGauge(Collector):
    def __init__(self, name: str, documentation: str, labels: tuple[str, ...], read: Callable[[], Samples]) -> None:
        self._name, self._documentation, self._labels, self._read = name, documentation, labels, read

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self._name, self._documentation, labels=self._labels)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labels)
        try:
            for values, value in self._read():
                family.add_metric(list(values), value)
        except Exception:
            log.warning("metric %s could not be read", self._name, exc_info=True)
            return
        yield family


class _Delegate(Collector):
    """A process-wide collector shown in a server's own registry."""

    def __init__(self, inner: Collector) -> None:
        self._inner = inner

    def collect(self) -> Iterable[Metric]:
        return self._inner.collect()


def throttled(read: Callable[[], Samples], interval_s: float) -> Callable[[], Samples]:
    """`read`, called at most once per `interval_s`: what costs a query is not
    run again for a scraper that asks more often."""
    lock = threading.Lock()
    last: list[Any] = [float("-inf"), []]

    def cached() -> Samples:
        with lock:
            if time.monotonic() - last[0] >= interval_s:
                last[1] = list(read())
                last[0] = time.monotonic()
            return last[1]

    return cached


@dataclass
class MetricsEndpoint:
    """/metrics being served over HTTP, in a thread of its own."""

    port: int
    _server: Any

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(address: str, metrics: Metrics) -> MetricsEndpoint:
    """Serves the registry on http://address/metrics (port 0: any free port)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        server, _thread = start_http_server(int(port), host, metrics.registry)
    except ValueError:
        raise ValueError(f"metrics address {address!r}: expected host:port") from None
    return MetricsEndpoint(server.server_port, server)
