"""The compute policy, rule by rule."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from plumbing.assets import container_checksum
from services.provider.domain.ddos import (
    ConsumerParameter,
    Ddo,
    SelectOption,
    Service,
    validate_ddo,
)
from services.provider.domain.errors import Refusal
from services.provider.domain.policy import (
    check_algorithm_allowed,
    check_credentials,
    check_dataset,
    check_network,
    find_trusted_algorithm,
    validate_consumer_parameters,
)

from .domain_samples import (
    ALGO_DID,
    CONSUMER,
    OTHER,
    PUBLISHER,
    algorithm_ddo,
    dataset_ddo,
    mutated,
)

ALGO = validate_ddo(algorithm_ddo())
ALGO_CONTAINER_SUM = container_checksum(ALGO.metadata.algorithm.container)  # type: ignore[union-attr]
FILES_SUM = "f1" * 32


def _refused(code: str, call: Any, *args: Any) -> Refusal:
    with pytest.raises(Refusal) as info:
        call(*args)
    assert info.value.code == code, info.value.message
    assert info.value.message
    return info.value


# --- check_dataset ---------------------------------------------------------------


def test_check_dataset_returns_the_compute_service() -> None:
    service = check_dataset(validate_ddo(dataset_ddo()), "compute-1")
    assert service.id == "compute-1" and service.type == "compute"


@pytest.mark.parametrize(
    "ddo, service_id, code",
    [
        (algorithm_ddo(), "algo-access", "dataset_is_algorithm"),
        (dataset_ddo(), "compute-9", "service_not_found"),
        (dataset_ddo(), "access-1", "not_compute_service"),
    ],
)
def test_check_dataset_refuses(ddo: dict[str, Any], service_id: str, code: str) -> None:
    _refused(code, check_dataset, validate_ddo(ddo), service_id)


def test_service_not_found_lists_the_services() -> None:
    refusal = _refused("service_not_found", check_dataset, validate_ddo(dataset_ddo()), "x")
    assert "'compute-1'" in refusal.message and "'access-1'" in refusal.message
    assert refusal.kind == "not_found"


# --- check_credentials -------------------------------------------------------------


def _with_credentials(allow: list[str] | None, deny: list[str] | None) -> Ddo:
    credentials: dict[str, Any] = {}
    if allow is not None:
        credentials["allow"] = [{"type": "address", "values": allow}]
    if deny is not None:
        credentials["deny"] = [{"type": "address", "values": deny}]
    return validate_ddo(mutated(dataset_ddo(), ("credentials",), credentials))


CREDENTIALS = [
    # (allow, deny, consumer, allowed)
    (None, None, CONSUMER, True),  # no lists: everyone
    ([], [], CONSUMER, True),  # empty lists restrict nobody (Ocean)
    ([CONSUMER], None, CONSUMER, True),
    ([CONSUMER.lower()], None, CONSUMER, True),  # compared by value, not spelling
    ([CONSUMER], None, CONSUMER.lower(), True),
    ([OTHER], None, CONSUMER, False),  # allow list exists and lacks the consumer
    (None, [CONSUMER], CONSUMER, False),
    (None, [OTHER], CONSUMER, True),
    ([CONSUMER], [CONSUMER], CONSUMER, False),  # deny wins
]


@pytest.mark.parametrize("allow, deny, consumer, allowed", CREDENTIALS)
def test_check_credentials(allow: list[str] | None, deny: list[str] | None, consumer: str, allowed: bool) -> None:
    ddo = _with_credentials(allow, deny)
    if allowed:
        check_credentials(ddo, consumer)
    else:
        assert _refused("credentials_denied", check_credentials, ddo, consumer).kind == "permission_denied"


def test_check_credentials_refuses_a_malformed_consumer() -> None:
    _refused("address_invalid", check_credentials, validate_ddo(dataset_ddo()), "consumer")


# --- check_algorithm_allowed ----------------------------------------------------------


def _service(
    raw: bool = False,
    network: bool = False,
    trusted: list[dict[str, Any]] | None = None,
    publishers: list[str] | None = None,
) -> Service:
    compute = {
        "allowRawAlgorithm": raw,
        "allowNetworkAccess": network,
        "publisherTrustedAlgorithms": trusted or [],
        "publisherTrustedAlgorithmPublishers": publishers or [],
    }
    return validate_ddo(mutated(dataset_ddo(), ("services", 0, "compute"), compute)).services[0]


def _entry(did: str = ALGO_DID, files: str | None = FILES_SUM, container: str = ALGO_CONTAINER_SUM) -> dict[str, Any]:
    entry = {"did": did, "containerSectionChecksum": container}
    if files is not None:
        entry["filesChecksum"] = files
    return entry


def _algo(**changes: Any) -> Ddo:
    return replace(ALGO, **changes)


DATASET_AS_ALGO = validate_ddo(dataset_ddo())
OTHER_DID = "did:op:" + "b" * 64

ALLOWED = [
    # (case, service, algorithm, files checksum, raw)
    ("both lists empty: any published algorithm", _service(), ALGO, None, False),
    ("raw allowed", _service(raw=True), None, None, True),
    ("raw allowed ignores trust lists", _service(raw=True, trusted=[_entry(did=OTHER_DID)]), None, None, True),
    ("listed, checksums match", _service(trusted=[_entry()]), ALGO, FILES_SUM, False),
    ("listed, files not yet known", _service(trusted=[_entry()]), ALGO, None, False),
    ("listed, files not pinned", _service(trusted=[_entry(files=None)]), ALGO, "00" * 32, False),
    ("listed among others", _service(trusted=[_entry(did=OTHER_DID), _entry()]), ALGO, FILES_SUM, False),
    ("trusted publisher", _service(publishers=[PUBLISHER]), ALGO, None, False),
    ("listed and trusted publisher", _service(trusted=[_entry()], publishers=[PUBLISHER]), ALGO, FILES_SUM, False),
]


@pytest.mark.parametrize("service, algorithm, files_sum, raw", [c[1:] for c in ALLOWED], ids=[c[0] for c in ALLOWED])
def test_algorithm_allowed(service: Service, algorithm: Ddo | None, files_sum: str | None, raw: bool) -> None:
    check_algorithm_allowed(service, algorithm, files_sum, raw)


REFUSED = [
    # (case, service, algorithm, files checksum, raw, code)
    ("raw not allowed", _service(), None, None, True, "no_raw_algo_allowed"),
    ("a dataset as algorithm", _service(), DATASET_AS_ALGO, None, False, "not_algorithm"),
    ("not listed", _service(trusted=[_entry(did=OTHER_DID)]), ALGO, FILES_SUM, False, "not_trusted_algo"),
    (
        "unpublished algorithm, list non-empty",
        _service(trusted=[_entry()]),
        _algo(id=None),
        None,
        False,
        "not_trusted_algo",
    ),
    ("files changed", _service(trusted=[_entry()]), ALGO, "00" * 32, False, "algorithm_checksum_mismatch"),
    # one spelling of a digest (plumbing/assets.py): another spelling is another checksum
    (
        "files checksum in uppercase",
        _service(trusted=[_entry()]),
        ALGO,
        FILES_SUM.upper(),
        False,
        "algorithm_checksum_mismatch",
    ),
    (
        "container changed",
        _service(trusted=[_entry(container="00" * 32)]),
        ALGO,
        FILES_SUM,
        False,
        "container_checksum_mismatch",
    ),
    ("publisher not trusted", _service(publishers=[OTHER]), ALGO, None, False, "not_trusted_publisher"),
    ("publisher unknown", _service(publishers=[PUBLISHER]), _algo(owner=None), None, False, "not_trusted_publisher"),
    (
        "listed but publisher not trusted",
        _service(trusted=[_entry()], publishers=[OTHER]),
        ALGO,
        FILES_SUM,
        False,
        "not_trusted_publisher",
    ),
    (
        "trusted publisher but not listed",
        _service(trusted=[_entry(did=OTHER_DID)], publishers=[PUBLISHER]),
        ALGO,
        None,
        False,
        "not_trusted_algo",
    ),
    ("access service", validate_ddo(dataset_ddo()).services[1], ALGO, None, False, "not_compute_service"),
]


@pytest.mark.parametrize(
    "service, algorithm, files_sum, raw, code", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_algorithm_refused(
    service: Service, algorithm: Ddo | None, files_sum: str | None, raw: bool, code: str
) -> None:
    _refused(code, check_algorithm_allowed, service, algorithm, files_sum, raw)


@pytest.mark.parametrize("algorithm, raw", [(ALGO, True), (None, False)])
def test_contradictory_algorithm_arguments_are_a_programming_error(algorithm: Ddo | None, raw: bool) -> None:
    with pytest.raises(ValueError):
        check_algorithm_allowed(_service(raw=True), algorithm, None, raw)


def test_find_trusted_algorithm() -> None:
    service = _service(trusted=[_entry(did=OTHER_DID), _entry()])
    entry = find_trusted_algorithm(service, ALGO_DID)
    assert entry is not None and entry.files_checksum == FILES_SUM
    assert find_trusted_algorithm(service, "did:op:" + "c" * 64) is None
    assert find_trusted_algorithm(validate_ddo(dataset_ddo()).services[1], ALGO_DID) is None


# --- check_network -------------------------------------------------------------------

OPEN, CLOSED = _service(network=True), _service(network=False)

NETWORK = [
    # (services, requested, result or refusal code)
    ([OPEN], True, True),
    ([OPEN], False, False),  # allowed but not asked for: no network
    ([CLOSED], False, False),
    ([OPEN, OPEN], True, True),
    ([CLOSED], True, "network_access_not_allowed"),
    ([OPEN, CLOSED], True, "network_access_not_allowed"),  # one dataset says no
    ([OPEN, CLOSED], False, False),
    ([], True, True),
    ([validate_ddo(dataset_ddo()).services[1]], False, "not_compute_service"),
]


@pytest.mark.parametrize("services, requested, expected", NETWORK)
def test_check_network(services: list[Service], requested: bool, expected: bool | str) -> None:
    if isinstance(expected, str):
        _refused(expected, check_network, services, requested)
    else:
        assert check_network(services, requested) is expected


# --- validate_consumer_parameters ----------------------------------------------------------

SPEC = ALGO.metadata.algorithm.consumer_parameters  # type: ignore[union-attr]
REQUIRED_TEXT = ConsumerParameter(name="city", type="text", label="City", required=True, default=None)
REQUIRED_SELECT = ConsumerParameter(
    name="mode",
    type="select",
    label="Mode",
    required=True,
    default=None,
    options=(SelectOption("fast", "Fast"), SelectOption("exact", "Exact")),
)

PARAMETERS_OK = [
    # (spec, given, expected)
    (SPEC, {}, {"window": 24, "unit": "C", "verbose": False}),  # defaults filled, optional "note" left out
    (
        SPEC,
        {"window": 6, "unit": "F", "note": "hi", "verbose": True},
        {"window": 6, "unit": "F", "note": "hi", "verbose": True},
    ),
    (SPEC, {"window": 1.5}, {"window": 1.5, "unit": "C", "verbose": False}),
    (SPEC, {"window": None}, {"window": 24, "unit": "C", "verbose": False}),  # null is missing
    (SPEC, {"note": ""}, {"window": 24, "unit": "C", "note": "", "verbose": False}),  # optional text may be empty
    ((), {}, {}),
    ((REQUIRED_TEXT, REQUIRED_SELECT), {"city": "Oslo", "mode": "exact"}, {"city": "Oslo", "mode": "exact"}),
]


@pytest.mark.parametrize("spec, given, expected", PARAMETERS_OK)
def test_consumer_parameters_accepted(
    spec: tuple[ConsumerParameter, ...], given: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert validate_consumer_parameters(spec, given) == expected


PARAMETERS_REFUSED = [
    # (spec, given, fragment of the message)
    (SPEC, {"windw": 3}, "unknown parameter 'windw'"),
    ((), {"x": 1}, "this algorithm takes no parameters"),
    (SPEC, {"window": "24"}, "parameter 'window' must be a finite number"),
    (SPEC, {"window": True}, "parameter 'window' must be a finite number"),
    (SPEC, {"window": float("nan")}, "parameter 'window' must be a finite number"),
    (SPEC, {"window": float("inf")}, "parameter 'window' must be a finite number"),
    (SPEC, {"unit": "K"}, "parameter 'unit' must be one of 'C', 'F'"),
    (SPEC, {"unit": "Celsius"}, "parameter 'unit' must be one of"),  # labels are not values
    (SPEC, {"note": 3}, "parameter 'note' must be a string"),
    (SPEC, {"verbose": "true"}, "parameter 'verbose' must be true or false"),
    (SPEC, {"verbose": 1}, "parameter 'verbose' must be true or false"),
    ((REQUIRED_TEXT,), {}, "parameter 'city' (City) is required"),
    ((REQUIRED_TEXT,), {"city": None}, "parameter 'city' (City) is required"),
    ((REQUIRED_TEXT,), {"city": ""}, "parameter 'city' (City) is required and cannot be empty"),
    ((REQUIRED_SELECT,), {}, "parameter 'mode' (Mode) is required"),
    (SPEC, ["window"], "algorithm parameters must be an object"),
]


@pytest.mark.parametrize("spec, given, fragment", PARAMETERS_REFUSED)
def test_consumer_parameters_refused(spec: tuple[ConsumerParameter, ...], given: Any, fragment: str) -> None:
    refusal = _refused("consumer_parameters_invalid", validate_consumer_parameters, spec, given)
    assert fragment in refusal.message
    assert refusal.kind == "invalid_argument"
