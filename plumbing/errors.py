"""The errors domain code raises; the gRPC layer maps each kind to a status.

Domain modules raise these (or any exception with `kind`, `code` and
`message` attributes, such as the provider's Refusal) and never import grpc.
`code` is a stable machine-readable reason put in the status details.
"""

from __future__ import annotations


class ServiceError(Exception):
    kind = "internal"

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class InvalidArgument(ServiceError):
    kind = "invalid_argument"


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
    kind = "unavailable"


class Aborted(ServiceError):
    kind = "aborted"


class Unimplemented(ServiceError):
    kind = "unimplemented"
