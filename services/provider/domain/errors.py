"""Refusals: the one exception type the domain raises at a caller.

A ``Refusal`` carries a stable snake_case ``code`` (clients branch on it), a
``message`` a person can act on, and a ``kind`` that the gRPC layer maps to a
status code. ``code`` goes into the status details, so codes never change
meaning once published.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# Kinds: named after the gRPC status codes they map to.
INVALID_ARGUMENT = "invalid_argument"
NOT_FOUND = "not_found"
PERMISSION_DENIED = "permission_denied"
FAILED_PRECONDITION = "failed_precondition"
RESOURCE_EXHAUSTED = "resource_exhausted"

KINDS = frozenset({INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION, RESOURCE_EXHAUSTED})

# Codes.
ADDRESS_INVALID = "address_invalid"
DID_INVALID = "did_invalid"
DID_NOT_FOUND = "did_not_found"
DDO_INVALID = "ddo_invalid"
SIGNATURE_INVALID = "signature_invalid"
NONCE_INVALID = "nonce_invalid"
NOT_OWNER = "not_owner"
SERVICE_NOT_FOUND = "service_not_found"
NOT_COMPUTE_SERVICE = "not_compute_service"
NOT_ALGORITHM = "not_algorithm"
DATASET_IS_ALGORITHM = "dataset_is_algorithm"
CREDENTIALS_DENIED = "credentials_denied"
NOT_TRUSTED_ALGO = "not_trusted_algo"
NOT_TRUSTED_PUBLISHER = "not_trusted_publisher"
ALGORITHM_CHECKSUM_MISMATCH = "algorithm_checksum_mismatch"
CONTAINER_CHECKSUM_MISMATCH = "container_checksum_mismatch"
ALGORITHM_FILES_UNREACHABLE = "algorithm_files_unreachable"
NO_RAW_ALGO_ALLOWED = "no_raw_algo_allowed"
NETWORK_ACCESS_NOT_ALLOWED = "network_access_not_allowed"
CONSUMER_PARAMETERS_INVALID = "consumer_parameters_invalid"
ORDER_INVALID = "order_invalid"
ORDER_USED = "order_used"
ORDER_EXPIRED = "order_expired"
ORDER_MISSING = "order_missing"
INSUFFICIENT_BALANCE = "insufficient_balance"
ENVIRONMENT_UNAVAILABLE = "environment_unavailable"
ENVIRONMENT_UNKNOWN = "environment_unknown"
ENVIRONMENT_FULL = "environment_full"

# The kind each code is raised with unless a caller says otherwise. Rules of
# thumb: malformed input -> invalid_argument; a thing that is absent ->
# not_found; who you are or what the publisher's policy forbids ->
# permission_denied; state of assets, orders, balances, environments ->
# failed_precondition; capacity -> resource_exhausted.
DEFAULT_KIND: Mapping[str, str] = MappingProxyType(
    {
        ADDRESS_INVALID: INVALID_ARGUMENT,
        DID_INVALID: INVALID_ARGUMENT,
        DID_NOT_FOUND: NOT_FOUND,
        DDO_INVALID: INVALID_ARGUMENT,
        # gRPC would say UNAUTHENTICATED; the layer maps only these five kinds.
        SIGNATURE_INVALID: PERMISSION_DENIED,
        NONCE_INVALID: PERMISSION_DENIED,
        NOT_OWNER: PERMISSION_DENIED,
        SERVICE_NOT_FOUND: NOT_FOUND,
        NOT_COMPUTE_SERVICE: FAILED_PRECONDITION,
        NOT_ALGORITHM: FAILED_PRECONDITION,
        DATASET_IS_ALGORITHM: FAILED_PRECONDITION,
        CREDENTIALS_DENIED: PERMISSION_DENIED,
        NOT_TRUSTED_ALGO: PERMISSION_DENIED,
        NOT_TRUSTED_PUBLISHER: PERMISSION_DENIED,
        ALGORITHM_CHECKSUM_MISMATCH: PERMISSION_DENIED,
        CONTAINER_CHECKSUM_MISMATCH: PERMISSION_DENIED,
        ALGORITHM_FILES_UNREACHABLE: FAILED_PRECONDITION,
        NO_RAW_ALGO_ALLOWED: PERMISSION_DENIED,
        NETWORK_ACCESS_NOT_ALLOWED: PERMISSION_DENIED,
        CONSUMER_PARAMETERS_INVALID: INVALID_ARGUMENT,
        ORDER_INVALID: FAILED_PRECONDITION,
        ORDER_USED: FAILED_PRECONDITION,
        ORDER_EXPIRED: FAILED_PRECONDITION,
        ORDER_MISSING: FAILED_PRECONDITION,
        INSUFFICIENT_BALANCE: FAILED_PRECONDITION,
        ENVIRONMENT_UNAVAILABLE: FAILED_PRECONDITION,
        ENVIRONMENT_UNKNOWN: NOT_FOUND,
        ENVIRONMENT_FULL: RESOURCE_EXHAUSTED,
    }
)

CODES = frozenset(DEFAULT_KIND)


class Refusal(Exception):
    """The provider refuses a request, for a reason the caller can act on."""

    code: str
    message: str
    kind: str

    def __init__(self, code: str, message: str, kind: str | None = None) -> None:
        # Unknown codes or kinds are programming errors: fail loudly here
        # rather than send an unmappable status to a client.
        if code not in DEFAULT_KIND:
            raise ValueError(f"unknown refusal code {code!r}")
        resolved = DEFAULT_KIND[code] if kind is None else kind
        if resolved not in KINDS:
            raise ValueError(f"unknown refusal kind {resolved!r}")
        super().__init__(code, message, resolved)
        self.code = code
        self.message = message
        self.kind = resolved

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"Refusal(code={self.code!r}, message={self.message!r}, kind={self.kind!r})"
