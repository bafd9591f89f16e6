"""The one gRPC server bootstrap: health, reflection, interceptors, shutdown.

Each service passes its servicers; this module serves them on a port with
grpc.health.v1 and server reflection (so `grpcurl -plaintext HOST:PORT list`
works) and stops gracefully on SIGTERM/SIGINT. Every servicer's RPCs are
error-mapped (plumbing.grpc_errors), and a request that cannot be decoded is
answered INVALID_ARGUMENT rather than gRPC's UNKNOWN.

Every RPC is also observed (`_observed`), in the same wrapping rather than by
an interceptor: counted and timed by status code when the server has
metrics, in a server span when tracing is on (plumbing.tracing), and with
its log lines tagged with the request's job id and the caller's trace id.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import functools
import gc
import logging
import os
import signal
import time
import types
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import context as otel_context
from opentelemetry import trace

from plumbing import logs, metrics, tracing, untrusted
from plumbing.grpc_errors import UndecodableRequest, error_mapped

log = logging.getLogger("c2d.server")


@dataclass
class Registration:
    """A servicer and the full name of the service it implements."""

    name: str
    add: Callable[[Any, grpc.aio.Server], None]
    servicer: Any


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Run before the port closes, while in-flight calls can still finish (e.g. the
    # engine stops starting jobs whose pods could no longer call it back).
    on_stopping: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    metrics_endpoint: metrics.MetricsEndpoint | None = None

    @property
    def metrics_port(self) -> int | None:
        """Where /metrics answers; None when the server serves no metrics."""
        return self.metrics_endpoint.port if self.metrics_endpoint else None

    async def stop(self, grace: float = 5.0) -> None:
        for callback in self.on_stopping:
            await callback()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for callback in reversed(self.on_stop):
            await callback()
        if self.metrics_endpoint is not None:
            await asyncio.to_thread(self.metrics_endpoint.close)


# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.cache
def reuse_freed_memory() -> None:
    """Makes glibc keep freed heap for reuse instead of returning it to the kernel.

    A streamed chunk is copied into a few fresh buffers on its way out (the
    read, the message, its serialization, gRPC's slice); with glibc's
    adaptive thresholds each is handed back to the kernel when freed and
    page-faulted in again for the next chunk, which costs more CPU than the
    copies (the provider used 1.5 CPU-seconds per GiB of results sent, 0.6
    with this). Process-wide, once: up to 64 MiB of freed heap stays mapped.
    Nothing happens on a C library without mallopt (musl, macOS).
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_TRIM_THRESHOLD, 64 << 20)
        mallopt(_M_MMAP_THRESHOLD, 8 << 20)  # buffers under 8 MiB come from the heap


async def start_server(
    address: str,
    registrations: Sequence[Registration],
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
    server_metrics: metrics.Metrics | None = None,
    metrics_address: str = "",
) -> RunningServer:
    """Serves the registrations on `address`; with `metrics_address`, also
    `server_metrics` (every RPC counted and timed) on http://metrics_address/metrics."""
    reuse_freed_memory()
    server = grpc.aio.server(
        interceptors=list(interceptors),
        options=[("grpc.so_reuseport", 0)],
    )
    rpc_metrics = server_metrics.rpc if server_metrics is not None and metrics_address else None
    for reg in registrations:
        # The guard stands in for the server: add_*_to_server only registers handlers on it.
        reg.add(
            _observed(error_mapped(reg.servicer, reg.name), reg.name, rpc_metrics),
            _DecodingGuard(server),  # type: ignore[arg-type]
        )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [reg.name for reg in registrations]
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    endpoint = None
    if server_metrics is not None and metrics_address:
        try:
            endpoint = metrics.serve(metrics_address, server_metrics)
        except BaseException:
            await server.stop(None)
            raise
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer, metrics_endpoint=endpoint)


# -- every RPC observed --------------------------------------------------------------

MAX_JOB_ID = 64


def _observed(mapped: Any, service_name: str, rpc_metrics: metrics.RpcMetrics | None) -> Any:
    """The error-mapped servicer with each RPC observed: its log lines tagged
    with the job id its request names (when it has a job_id field) and the
    caller's trace, a server span when tracing is on, and its status code
    and duration counted when the server has metrics."""
    service = descriptor_pool.Default().FindServiceByName(service_name)
    observed = types.SimpleNamespace()
    for method in service.methods:
        watch = _Watch(
            f"{service_name}/{method.name}",
            {"rpc.system": "grpc", "rpc.service": service_name, "rpc.method": method.name},
            rpc_metrics.method(service_name, method.name) if rpc_metrics else None,
            "job_id" in method.input_type.fields_by_name,
        )
        wrap = _observe_stream if method.server_streaming else _observe_unary
        setattr(observed, method.name, wrap(getattr(mapped, method.name), watch))
    return observed


@dataclass(frozen=True, slots=True)
class _Watch:
    """What is observed of one method, decided once at registration."""

    span_name: str
    span_attributes: dict[str, str]
    metrics: metrics.MethodMetrics | None
    has_job_id: bool

    def enter(self, request: Any, context: grpc.aio.ServicerContext) -> tuple[Any, Any]:
        """Tags the call's task with its job and trace; what `leave` undoes."""
        names_job = self.has_job_id and type(request) is not UndecodableRequest
        # Cut to the longest id a service issues: a client's id is not validated yet.
        job_token = logs.bind_job(request.job_id[:MAX_JOB_ID]) if names_job else None
        parent = tracing.context_from_metadata(context.invocation_metadata())
        if tracing.enabled():
            span = tracing.tracer.start_span(
                self.span_name, context=parent, kind=trace.SpanKind.SERVER, attributes=self.span_attributes
            )
            return job_token, (span, otel_context.attach(trace.set_span_in_context(span, parent)))
        return job_token, (None, otel_context.attach(parent) if parent is not None else None)

    def leave(self, tokens: tuple[Any, Any], context: grpc.aio.ServicerContext, code: Any, started: float) -> None:
        if self.metrics is not None:
            self.metrics.record(code, time.perf_counter() - started)
        job_token, (span, trace_token) = tokens
        if span is not None:
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(trace.StatusCode.ERROR, f"{code.name}: {context.details() or ''}")
            span.end()
        if trace_token is not None:
            otel_context.detach(trace_token)
        if job_token is not None:
            logs.unbind_job(job_token)


def _final_code(context: grpc.aio.ServicerContext, raised: BaseException | None) -> grpc.StatusCode:
    if isinstance(raised, (asyncio.CancelledError, GeneratorExit)):  # the client went away
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK if raised is None else grpc.StatusCode.UNKNOWN


def _observe_unary(behaviour: Callable[..., Awaitable[Any]], watch: _Watch) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        tokens = watch.enter(request, context)
        raised: BaseException | None = None
        try:
            return await behaviour(request, context)
        except BaseException as exc:
            raised = exc
            raise
        finally:
            watch.leave(tokens, context, _final_code(context, raised), started)

    return handler


def _observe_stream(behaviour: Callable[..., Any], watch: _Watch) -> Callable[..., Any]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        tokens = watch.enter(request, context)
        raised: BaseException | None = None
        try:
            async for item in behaviour(request, context):
                yield item
        except BaseException as exc:
            raised = exc
            raise
        finally:
            watch.leave(tokens, context, _final_code(context, raised), started)

    return handler


class _DecodingGuard:
    """Stands in for the server while a generated add_*_to_server registers a
    service, and makes each handler's request deserializer hand a request that
    cannot be decoded (bytes that are not UTF-8 in a string field, a truncated
    message) on as an UndecodableRequest, which the error mapping answers
    INVALID_ARGUMENT naming the method. Raised from the deserializer, protobuf's
    DecodeError reaches the client as UNKNOWN. A request whose text holds a
    NUL character is handed on the same way, naming the field."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        guarded = {name: _decoding_guarded(f"/{service}/{name}", handler) for name, handler in handlers.items()}
        self._server.add_registered_method_handlers(service, guarded)

    def add_generic_rpc_handlers(self, generic_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers([_GuardedGenericHandler(handler) for handler in generic_handlers])


class _GuardedGenericHandler(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        return handler and _decoding_guarded(handler_call_details.method, handler)


def _decoding_guarded(method: str, handler: Any) -> Any:
    decode = handler.request_deserializer
    if decode is None or handler.request_streaming:  # c2d's RPCs each take one request message
        return handler

    def deserialize(raw: bytes) -> Any:
        try:
            request = decode(raw)
        except DecodeError as exc:
            return UndecodableRequest(method, str(exc))
        # A request with no zero byte has no NUL in its text: most are never walked.
        field = untrusted.nul_field(request) if b"\x00" in raw else ""
        return UndecodableRequest(method, "a NUL character", field) if field else request

    return handler._replace(request_deserializer=deserialize)


def local_address(listen_address: str, port: int | None = None) -> str:
    """Where a client on this host reaches a server listening on
    `listen_address` (on every interface: at 127.0.0.1), on `port` if given
    (the one port 0 became)."""
    host, listen_port = listen_address.rsplit(":", 1)
    return f"{'127.0.0.1' if host in ('', '0.0.0.0', '[::]') else host}:{port if port is not None else listen_port}"


def freeze_startup_heap() -> None:
    """For a server process, once its servers are up: what is alive then
    (modules, descriptors, tables: ~140k objects in the provider) lives as long
    as the process, and frozen, the collector's full passes stop walking it
    (under load they paused the event loop up to 77 ms: the provider's p99).
    Collected first, so no garbage is frozen with it."""
    gc.collect()
    gc.freeze()


async def serve_until_signalled(running: RunningServer, name: str, stop_within_s: float | None = None) -> None:
    """Blocks until SIGTERM or SIGINT, then drains in-flight calls and stops.
    With `stop_within_s`, the process ends within that many seconds of the
    signal whatever its cleanup still waits for (exit code 1 then): a
    supervisor's stop timeout is not the place to find out."""
    freeze_startup_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signalled_at = 0.0

    def signalled() -> None:
        nonlocal signalled_at
        if not stop.is_set():
            signalled_at = time.monotonic()
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled)
    log.info("%s listening on port %d", name, running.port)
    await stop.wait()
    log.info("%s stopping", name)
    # The stop as this process lived it, to its last moment (after the event loop and the
    # threads it joins): a test checks the grace on this clock, which load on it does not stretch.
    atexit.register(lambda: log.info("%s exiting %.3f s after the signal", name, time.monotonic() - signalled_at))
    if stop_within_s is None:
        await running.stop()
        return
    try:
        # Half the time for in-flight calls (long streams are cut then), the rest for cleanup.
        await asyncio.wait_for(running.stop(stop_within_s / 2), stop_within_s)
    except TimeoutError:
        log.error("%s did not stop within %g s; exiting anyway", name, stop_within_s)
        logging.shutdown()
        os._exit(1)


def configure_observability(component: str, default_level: str = "INFO") -> None:
    """A server's or pod's process: its logging (plumbing.logs: C2D_LOG_FORMAT,
    C2D_LOG_LEVEL) and, when the OTEL_* variables turn it on, its tracing."""
    logs.configure(component, default_level)
    tracing.configure(f"c2d-{component}")
