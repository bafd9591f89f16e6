"""The errors domain code raises; the gRPC layer maps each kind to a status.

Domain modules raise these (or any exception with `kind`, `code` and
`message` attributes, such as the provider's Refusal) and never import grpc.
`code` is a stable machine-readable reason: it goes on the wire as the
google.rpc.ErrorInfo reason, in UPPER_SNAKE_CASE (AIP-193). `field` names
the request field an InvalidArgument is about (a google.rpc.BadRequest
detail); `metadata` adds facts a client may act on (ErrorInfo.metadata).
"""

from __future__ import annotations

from collections.abc import Mapping


class ServiceError(Exception):
    kind = ""  # each subclass names the status it maps to

    def __init__(
        self,
        message: str,
        code: str = "",
        *,
        field: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field
        self.metadata = dict(metadata or {})


class InvalidArgument(ServiceError):
    kind = "invalid_argument"


class OutOfRange(ServiceError):
    kind = "out_of_range"


class NotFound(ServiceError):
    kind = "not_found"


class AlreadyExists(ServiceError):
    kind = "already_exists"


class PermissionDenied(ServiceError):
    kind = "permission_denied"


class Unauthenticated(ServiceError):
    kind = "unauthenticated"


class FailedPrecondition(ServiceError):
    kind = "failed_precondition"


class ResourceExhausted(ServiceError):
    kind = "resource_exhausted"


class Unavailable(ServiceError):
    """Worth a retry: carries how long to wait (a google.rpc.RetryInfo detail)."""

    kind = "unavailable"

    def __init__(
        self,
        message: str,
        code: str = "",
        *,
        retry_after_s: float = 1.0,
        field: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, code, field=field, metadata=metadata)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ServiceError):
    kind = "deadline_exceeded"


class Aborted(ServiceError):
    kind = "aborted"


class Cancelled(ServiceError):
    kind = "cancelled"


class Unimplemented(ServiceError):
    kind = "unimplemented"


class Internal(ServiceError):
    """A failure that is not the caller's doing and not ours to hide, e.g. a
    downstream service's INTERNAL passed on: answered INTERNAL with its message."""

    kind = "internal"
