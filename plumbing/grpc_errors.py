"""Errors and gRPC statuses, both ways, for every service (AIP-193).

Out: domain errors become statuses for every RPC of every servicer. A client
mistake becomes INVALID_ARGUMENT, NOT_FOUND, ... with the domain's message
and a google.rpc.ErrorInfo detail: its reason in UPPER_SNAKE_CASE, its domain
naming the service (`c2d.provider`), its metadata; INVALID_ARGUMENT about a
named field also carries a google.rpc.BadRequest, UNAVAILABLE a
google.rpc.RetryInfo. Anything else is our bug: logged with its traceback,
answered INTERNAL with no internals in the message. A request that could not
be decoded (an UndecodableRequest) is answered INVALID_ARGUMENT naming the
method.

In: `downstream_error` turns a status another c2d service answered into the
domain error this service raises in turn, keeping its code, reason,
metadata, field and retry delay, so a consumer sees the reason of the
service that refused, whichever hop it came from.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, descriptor_pool, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from plumbing import database, errors

log = logging.getLogger("c2d.rpc")

STATUS_BY_KIND = {
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "out_of_range": grpc.StatusCode.OUT_OF_RANGE,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "already_exists": grpc.StatusCode.ALREADY_EXISTS,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "deadline_exceeded": grpc.StatusCode.DEADLINE_EXCEEDED,
    "aborted": grpc.StatusCode.ABORTED,
    "cancelled": grpc.StatusCode.CANCELLED,
    "unimplemented": grpc.StatusCode.UNIMPLEMENTED,
    "internal": grpc.StatusCode.INTERNAL,
}
ERROR_CLASS_BY_STATUS: dict[grpc.StatusCode, type[errors.ServiceError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: errors.OutOfRange,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.ABORTED: errors.Aborted,
    grpc.StatusCode.CANCELLED: errors.Cancelled,
    grpc.StatusCode.UNIMPLEMENTED: errors.Unimplemented,
}
DEFAULT_RETRY_S = 1.0
# A status travels in the trailers, which clients cap at 8 KiB (16 KiB hard), message and
# details together, non-ASCII message bytes percent-encoded (x3). Messages that quote a
# client's value (a 5000-character job id) are cut to fit; the fuzzer found them as
# RESOURCE_EXHAUSTED "metadata size exceeds", or INTERNAL one hop up.
MAX_MESSAGE_BYTES = 600
MAX_METADATA_BYTES = 200


def bounded(text: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """`text` if its UTF-8 form fits `limit` bytes, else its start and a mark of the cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 24].decode("utf-8", "ignore") + f"... ({len(raw)} bytes, cut)"


def reason_of(code: str) -> str:
    """The wire form of a domain error code: UPPER_SNAKE_CASE."""
    return code.upper().replace("-", "_").replace(".", "_")


def error_domain(service_name: str) -> str:
    """`c2d.provider.v1.AssetService` -> `c2d.provider`: the ErrorInfo domain."""
    parts = service_name.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else service_name


# -- reading a status --------------------------------------------------------------


def _details(error: grpc.RpcError) -> list[any_pb2.Any]:
    # An AioRpcError has all from_call reads (code, details, trailing metadata); the stubs ask for a grpc.Call.
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # details that contradict the code (gRPC replaced a status too big to receive)
        return []
    return list(status.details) if status is not None else []


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    for detail in _details(error):
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


def error_code(error: grpc.RpcError) -> str:
    """The ErrorInfo reason a c2d server put in an error's details ('' if none)."""
    info = error_info(error)
    return info.reason if info is not None else ""


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    """The request fields a BadRequest detail names."""
    for detail in _details(error):
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return [v.field for v in bad.field_violations]
    return []


def retry_delay_s(error: grpc.RpcError) -> float | None:
    """How long a RetryInfo detail says to wait before retrying."""
    for detail in _details(error):
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            return retry.retry_delay.ToTimedelta().total_seconds()
    return None


def downstream_error(exc: grpc.aio.AioRpcError, service: str) -> errors.ServiceError:
    """The error to raise when `service` (e.g. "the operator-service") answered
    `exc`: the same status and reason, so it reaches the consumer as it was
    meant. Three statuses are not passed on as they are: a refused service
    credential (UNAUTHENTICATED) and the downstream's own bugs (UNKNOWN,
    INTERNAL) are faults of this deployment, not the caller's, so they become
    INTERNAL naming the service; they are logged here."""
    code = exc.code()
    message = exc.details() or f"{service} answered {code.name}"
    info = error_info(exc)
    reason = info.reason if info is not None else ""
    metadata = {**(info.metadata if info is not None else {}), "service": service}
    fields = bad_request_fields(exc)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        log.error("%s refused this service's credentials: %s", service, message)
        return errors.Internal(
            f"{service} refused this server's service credentials; the operator must check C2D_SERVICE_TOKEN "
            "or the TLS certificates",
            reason or "downstream_unauthenticated",
            metadata=metadata,
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        delay = retry_delay_s(exc)
        return errors.Unavailable(
            f"{service} is unavailable: {message}",
            reason or "downstream_unavailable",
            retry_after_s=delay if delay is not None else DEFAULT_RETRY_S,
            metadata=metadata,
        )
    kind = ERROR_CLASS_BY_STATUS.get(code)
    if kind is None:  # UNKNOWN, INTERNAL, DATA_LOSS: their bug, reported as such
        log.error("%s failed with %s: %s", service, code.name, message)
        return errors.Internal(
            f"{service} failed ({code.name}); its log has details", reason or "downstream_failed", metadata=metadata
        )
    return kind(message, reason, field=fields[0] if fields else "", metadata=metadata)


# -- answering with a status -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UndecodableRequest:
    """Stands in for a request whose bytes are not a message of its method's
    type (a string field that is not UTF-8, a truncated message), or whose
    text holds a NUL character. The request
    deserializers plumbing.server installs hand it on instead of raising:
    gRPC answers an exception raised there UNKNOWN. The error mapping answers
    it INVALID_ARGUMENT naming the method."""

    method: str
    reason: str
    field: str = ""  # set when the message decoded but this text field holds a NUL character

    def error(self) -> errors.InvalidArgument:
        if self.field:
            return errors.InvalidArgument(
                f"{self.field} holds a NUL character (\\x00), which no text field of {self.method} accepts; remove it",
                "text_has_nul",
                field=self.field,
                metadata={"method": self.method},
            )
        return errors.InvalidArgument(
            f"the request to {self.method} could not be decoded ({self.reason}); "
            "send a serialized request message whose string fields hold UTF-8 text",
            "request_undecodable",
            metadata={"method": self.method},
        )


def _status_for(exc: BaseException) -> grpc.StatusCode | None:
    return STATUS_BY_KIND.get(getattr(exc, "kind", None) or "")


def status_of(exc: BaseException, domain: str) -> status_pb2.Status | None:
    """The google.rpc.Status for a mapped error; None for a bug."""
    status_code = _status_for(exc)
    if status_code is None:
        return None
    message = bounded(getattr(exc, "message", None) or str(exc))
    code = getattr(exc, "code", "") or ""
    details = []
    if code:
        metadata = {
            bounded(str(k), MAX_METADATA_BYTES): bounded(str(v), MAX_METADATA_BYTES)
            for k, v in (getattr(exc, "metadata", None) or {}).items()
        }
        details.append(error_details_pb2.ErrorInfo(reason=reason_of(code), domain=domain, metadata=metadata))
    field = getattr(exc, "field", "")
    if field and status_code == grpc.StatusCode.INVALID_ARGUMENT:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=bounded(field, MAX_METADATA_BYTES), description=message
                    )
                ]
            )
        )
    if status_code == grpc.StatusCode.UNAVAILABLE:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(1000 * getattr(exc, "retry_after_s", DEFAULT_RETRY_S)))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return status_pb2.Status(code=status_code.value[0], message=message, details=packed)


def _outage(exc: BaseException) -> BaseException:
    """A database that went away is an outage, worth a retry, not a bug of ours."""
    if not database.lost_connection(exc):
        return exc
    log.warning("the database is unreachable: %s", type(exc).__name__)
    return errors.Unavailable(
        "this service's database is unreachable (restarting, or cut off); retry in a moment",
        "database_unavailable",
        retry_after_s=2.0,
    )


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, domain: str) -> None:
    exc = _outage(exc)
    status = status_of(exc, domain)
    if status is None:
        log.exception("internal error in %s", getattr(context, "_rpc_name", "rpc"), exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; the operator's log has details")
        return
    await context.abort_with_status(rpc_status.to_status(status))


def _wrap_unary(behaviour: Callable[..., Awaitable[Any]], domain: str) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if type(request) is UndecodableRequest:
                raise request.error()
            return await behaviour(request, context)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:  # noqa: BLE001 - mapped or reported as INTERNAL
            await _abort(context, exc, domain)

    return handler


def _wrap_stream(behaviour: Callable[..., Any], domain: str) -> Callable[..., Any]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if type(request) is UndecodableRequest:
                raise request.error()
            async for item in behaviour(request, context):
                yield item
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort(context, exc, domain)

    return handler


def error_mapped(servicer: Any, service_name: str) -> Any:
    """The servicer with every RPC of the service wrapped in the error mapping.

    Wrapped once at registration rather than by a server interceptor: an
    interceptor costs every call a coroutine and a new handler (10-15% of a
    small RPC), and a port with no interceptor skips that machinery entirely."""
    service = descriptor_pool.Default().FindServiceByName(service_name)
    domain = error_domain(service_name)
    mapped = types.SimpleNamespace()
    for method in service.methods:
        wrap = _wrap_stream if method.server_streaming else _wrap_unary
        setattr(mapped, method.name, wrap(getattr(servicer, method.name), domain))
    return mapped
