"""Refusal codes are stable strings, each with the kind the gRPC layer maps."""

from __future__ import annotations

import pickle

import pytest

from services.provider.domain import errors
from services.provider.domain.errors import Refusal

# code -> kind. The codes are a published contract; this table is its copy.
EXPECTED = [
    ("address_invalid", "invalid_argument"),
    ("did_invalid", "invalid_argument"),
    ("did_not_found", "not_found"),
    ("ddo_invalid", "invalid_argument"),
    ("signature_invalid", "permission_denied"),
    ("nonce_invalid", "permission_denied"),
    ("not_owner", "permission_denied"),
    ("service_not_found", "not_found"),
    ("not_compute_service", "failed_precondition"),
    ("not_algorithm", "failed_precondition"),
    ("dataset_is_algorithm", "failed_precondition"),
    ("credentials_denied", "permission_denied"),
    ("not_trusted_algo", "permission_denied"),
    ("not_trusted_publisher", "permission_denied"),
    ("algorithm_checksum_mismatch", "permission_denied"),
    ("container_checksum_mismatch", "permission_denied"),
    ("algorithm_files_unreachable", "failed_precondition"),
    ("no_raw_algo_allowed", "permission_denied"),
    ("network_access_not_allowed", "permission_denied"),
    ("consumer_parameters_invalid", "invalid_argument"),
    ("order_invalid", "failed_precondition"),
    ("order_used", "failed_precondition"),
    ("order_expired", "failed_precondition"),
    ("order_missing", "failed_precondition"),
    ("insufficient_balance", "failed_precondition"),
    ("environment_unavailable", "failed_precondition"),
    ("environment_unknown", "not_found"),
    ("environment_full", "resource_exhausted"),
]


@pytest.mark.parametrize("code, kind", EXPECTED)
def test_code_constant_and_default_kind(code: str, kind: str) -> None:
    assert getattr(errors, code.upper()) == code
    refusal = Refusal(code, "something a person can act on")
    assert (refusal.code, refusal.kind, refusal.message) == (code, kind, "something a person can act on")


def test_every_code_is_listed() -> None:
    assert {code for code, _ in EXPECTED} == errors.CODES


def test_kind_can_be_overridden() -> None:
    assert Refusal("ddo_invalid", "m", kind="failed_precondition").kind == "failed_precondition"


@pytest.mark.parametrize(
    "code, kind",
    [("no_such_code", None), ("ddo_invalid", "unauthenticated")],
)
def test_unknown_code_or_kind_is_a_programming_error(code: str, kind: str | None) -> None:
    with pytest.raises(ValueError):
        Refusal(code, "m", kind)


def test_refusal_is_an_exception_that_reads_well_and_pickles() -> None:
    refusal = Refusal("order_used", "this order already paid for a job")
    assert isinstance(refusal, Exception)
    assert str(refusal) == "order_used: this order already paid for a job"
    copy = pickle.loads(pickle.dumps(refusal))
    assert (copy.code, copy.message, copy.kind) == (refusal.code, refusal.message, refusal.kind)
