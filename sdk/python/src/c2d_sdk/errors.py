"""What goes wrong, as exceptions a program can act on without parsing messages.

``Refused`` carries the provider's answer as it sent it: the gRPC status
name, the ErrorInfo ``reason`` (UPPER_SNAKE_CASE) and, when a field was
wrong, the BadRequest field path.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"
# Statuses that say the server could not be reached or did not answer: worth another try later.
UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class C2DError(Exception):
    """Every error the SDK raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidDescription(C2DError):
    """An asset description (or a file it names) cannot be published; ``field`` says which part."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class Unreachable(C2DError):
    """The provider did not answer (down, wrong address, or too slow)."""


class Refused(C2DError):
    """The provider answered with an error status."""

    def __init__(self, message: str, code: str, reason: str = "", field: str = "") -> None:
        super().__init__(message)
        self.code = code  # the gRPC status name, e.g. "PERMISSION_DENIED"
        self.reason = reason  # ErrorInfo.reason, e.g. "ORDER_MISSING"
        self.field = field  # BadRequest's field path, e.g. "spec.environment_id"


class IntegrityError(C2DError):
    """Downloaded bytes or a results manifest do not match what the provider signed."""


def from_rpc_error(exc: grpc.RpcError, target: str = "the provider") -> C2DError:
    """The SDK's error for a failed call (grpc.RpcError and grpc.aio.AioRpcError alike)."""
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    message: str = exc.details() or code.name  # type: ignore[attr-defined]
    if code in UNREACHABLE_CODES:
        return Unreachable(f"{target} is unreachable ({code.name}): {message}")
    reason = field = ""
    for key, value in exc.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                field = bad.field_violations[0].field if bad.field_violations else ""
    return Refused(message, code.name, reason, field)
