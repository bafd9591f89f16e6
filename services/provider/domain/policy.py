"""The compute policy: may this consumer run this algorithm on these datasets?

Pure checks that InitializeCompute and StartCompute run, in this order, over
DDOs already passed through ``validate_ddo``:

1. ``check_dataset`` for each dataset DID and service id;
2. ``check_credentials`` for each dataset and for the algorithm asset;
3. ``check_algorithm_allowed`` for each dataset's compute service;
4. ``check_network`` over all the datasets' compute services;
5. ``validate_consumer_parameters`` against the algorithm's parameters.

Orders, balances and environments are checked elsewhere (the ledger and the
operator); signatures in ``identity``.

Trust-list semantics (Ocean DDO v4, made explicit):

- A raw algorithm (code sent with the request, no DDO) runs only if the
  service sets ``allowRawAlgorithm``; the trust lists do not apply to it,
  since it has no DID or publisher to match.
- A registered algorithm must be an ``algorithm`` asset. Then:
  - a non-empty ``publisherTrustedAlgorithms`` list admits only listed DIDs,
    and each listed entry pins the container section (always) and the files
    (when the entry and the caller both know a files checksum);
  - a non-empty ``publisherTrustedAlgorithmPublishers`` list admits only
    algorithms whose publisher (``nft.owner``) is listed;
  - when both lists are non-empty the algorithm must pass both;
  - when BOTH lists are empty, every published algorithm is allowed. This
    is Ocean's rule; ``validate_ddo`` requires both keys to be written, so
    a publisher opts in to it explicitly with ``[]`` and never by omission.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from plumbing.assets import container_checksum

from .ddos import (
    ComputeOptions,
    ConsumerParameter,
    Ddo,
    Service,
    TrustedAlgorithm,
    parameter_value_problem,
)
from .errors import (
    ALGORITHM_CHECKSUM_MISMATCH,
    CONSUMER_PARAMETERS_INVALID,
    CONTAINER_CHECKSUM_MISMATCH,
    CREDENTIALS_DENIED,
    DATASET_IS_ALGORITHM,
    NETWORK_ACCESS_NOT_ALLOWED,
    NO_RAW_ALGO_ALLOWED,
    NOT_ALGORITHM,
    NOT_COMPUTE_SERVICE,
    NOT_TRUSTED_ALGO,
    NOT_TRUSTED_PUBLISHER,
    SERVICE_NOT_FOUND,
    Refusal,
)
from .identity import normalize_address


def _asset_name(ddo: Ddo) -> str:
    return ddo.id or f"asset {ddo.metadata.name!r}"


def check_dataset(ddo: Ddo, service_id: str) -> Service:
    """Return the dataset's compute service ``service_id``.

    Rule: the asset is a dataset (dataset_is_algorithm), it has a service with
    that id (service_not_found), and that service is a compute service
    (not_compute_service).
    """
    name = _asset_name(ddo)
    if ddo.metadata.type != "dataset":
        raise Refusal(
            DATASET_IS_ALGORITHM,
            f"{name} is an algorithm, not a dataset: pass it as the algorithm",
        )
    service = ddo.service(service_id)
    if service is None:
        known = ", ".join(repr(s.id) for s in ddo.services)
        raise Refusal(
            SERVICE_NOT_FOUND,
            f"{name} has no service {service_id!r}; its services are {known}",
        )
    if service.type != "compute" or service.compute is None:
        raise Refusal(
            NOT_COMPUTE_SERVICE,
            f"service {service_id!r} of {name} is an {service.type} service; choose one of its compute services",
        )
    return service


def check_credentials(ddo: Ddo, consumer_address: str) -> None:
    """Refuse (credentials_denied) a consumer the asset's credentials exclude.

    Rule: a consumer on the deny list is refused, whatever the allow list
    says. If the allow list names any address, only those addresses are
    admitted; an empty allow list restricts nobody (Ocean). Addresses are
    compared by value, not spelling.
    """
    consumer = normalize_address(consumer_address)
    name = _asset_name(ddo)
    if consumer in ddo.credentials.deny:
        raise Refusal(CREDENTIALS_DENIED, f"{consumer} is on the deny list of {name}")
    if ddo.credentials.allow and consumer not in ddo.credentials.allow:
        raise Refusal(
            CREDENTIALS_DENIED,
            f"{consumer} is not on the allow list of {name}: ask its publisher for access",
        )


def find_trusted_algorithm(dataset_service: Service, algorithm_did: str) -> TrustedAlgorithm | None:
    """The service's trusted-algorithm entry for this DID, if listed.

    Servers use it to learn whether the files are pinned (and so whether to
    compute the algorithm's files checksum before ``check_algorithm_allowed``).
    """
    if dataset_service.compute is None:
        return None
    for entry in dataset_service.compute.publisher_trusted_algorithms:
        if entry.did == algorithm_did:
            return entry
    return None


def _compute_options(service: Service) -> ComputeOptions:
    if service.type != "compute" or service.compute is None:
        raise Refusal(
            NOT_COMPUTE_SERVICE,
            f"service {service.id!r} is an {service.type} service; choose a compute service",
        )
    return service.compute


def check_algorithm_allowed(
    dataset_service: Service,
    algorithm: Ddo | None,
    algorithm_files_checksum: str | None,
    raw: bool,
) -> None:
    """Refuse an algorithm the dataset's compute service does not admit.

    Rules (see the module docstring for the trust-list semantics):
    - raw: the service must allow raw algorithms (no_raw_algo_allowed);
    - registered: the asset must be an algorithm (not_algorithm); with a
      non-empty trusted list its DID must be listed (not_trusted_algo), the
      listed filesChecksum must equal ``algorithm_files_checksum`` when both
      are known (algorithm_checksum_mismatch) and the listed
      containerSectionChecksum must equal ``container_checksum`` of its
      container (container_checksum_mismatch); with a non-empty trusted
      publisher list its publisher must be listed (not_trusted_publisher).

    ``algorithm`` must be None exactly when ``raw`` is true (ValueError
    otherwise: that is a bug in the caller, not in the request).
    """
    options = _compute_options(dataset_service)
    service_name = f"service {dataset_service.id!r}"

    if raw:
        if algorithm is not None:
            raise ValueError("a raw algorithm has no DDO: pass algorithm=None")
        if not options.allow_raw_algorithm:
            raise Refusal(
                NO_RAW_ALGO_ALLOWED,
                f"{service_name} does not allow raw algorithms: use a published algorithm",
            )
        return
    if algorithm is None:
        raise ValueError("a registered algorithm needs its DDO (or pass raw=True)")

    name = _asset_name(algorithm)
    if algorithm.metadata.type != "algorithm" or algorithm.metadata.algorithm is None:
        raise Refusal(NOT_ALGORITHM, f"{name} is a dataset, not an algorithm")

    if options.publisher_trusted_algorithms:
        entry = find_trusted_algorithm(dataset_service, algorithm.id) if algorithm.id else None
        if entry is None:
            raise Refusal(
                NOT_TRUSTED_ALGO,
                f"{name} is not on the trusted-algorithm list of {service_name}:"
                " choose a listed algorithm or ask the publisher to add it",
            )
        if (
            entry.files_checksum is not None
            and algorithm_files_checksum is not None
            and entry.files_checksum != algorithm_files_checksum
        ):
            raise Refusal(
                ALGORITHM_CHECKSUM_MISMATCH,
                f"the files of {name} changed since {service_name} trusted them:"
                " the publisher must re-approve this version",
            )
        if entry.container_section_checksum != container_checksum(algorithm.metadata.algorithm.container):
            raise Refusal(
                CONTAINER_CHECKSUM_MISMATCH,
                f"the container of {name} changed since {service_name} trusted it:"
                " the publisher must re-approve this version",
            )

    publishers = options.publisher_trusted_algorithm_publishers
    if publishers and algorithm.owner not in publishers:
        who = algorithm.owner or "an unknown publisher"
        raise Refusal(
            NOT_TRUSTED_PUBLISHER,
            f"{name} is published by {who}, who is not a trusted publisher of {service_name}",
        )


def check_network(dataset_services: Sequence[Service], requested: bool) -> bool:
    """Return whether the job may use the network.

    Rule: a request for network access is refused (network_access_not_allowed)
    if any dataset's compute service disallows it. The job gets network
    access only if it asked AND every dataset allows it; with no datasets
    there is nothing to protect and the request decides.
    """
    for service in dataset_services:
        options = _compute_options(service)
        if requested and not options.allow_network_access:
            raise Refusal(
                NETWORK_ACCESS_NOT_ALLOWED,
                f"service {service.id!r} does not allow network access: run without it",
            )
    return bool(requested)


def validate_consumer_parameters(params_spec: Sequence[ConsumerParameter], given: Mapping[str, Any]) -> dict[str, Any]:
    """Return the algorithm's parameters, checked and with defaults filled.

    Rules (consumer_parameters_invalid, naming the parameter):
    - every key given must be a declared parameter;
    - each value must fit its type: text a string, number a finite number
      (not a boolean), boolean true/false, select one of the option values;
    - a missing (or null) parameter takes its default; if it has none and is
      required it is refused (an empty string does not satisfy a required
      text or select); if optional it is left out of the result.
    """
    if not isinstance(given, Mapping):
        raise Refusal(CONSUMER_PARAMETERS_INVALID, "algorithm parameters must be an object")
    declared = {p.name: p for p in params_spec}
    for key in given:
        if key not in declared:
            takes = ", ".join(repr(n) for n in declared) if declared else "no parameters"
            raise Refusal(
                CONSUMER_PARAMETERS_INVALID,
                f"unknown parameter {key!r}: this algorithm takes {takes}",
            )

    result: dict[str, Any] = {}
    for param in params_spec:
        value = given.get(param.name)
        if value is None:
            if param.default is not None:
                result[param.name] = param.default
            elif param.required:
                raise Refusal(
                    CONSUMER_PARAMETERS_INVALID,
                    f"parameter {param.name!r} ({param.label}) is required",
                )
            continue
        problem = parameter_value_problem(param.type, param.options, value)
        if problem:
            raise Refusal(CONSUMER_PARAMETERS_INVALID, f"parameter {param.name!r} {problem}")
        if param.required and value == "" and param.type in ("text", "select"):
            raise Refusal(
                CONSUMER_PARAMETERS_INVALID,
                f"parameter {param.name!r} ({param.label}) is required and cannot be empty",
            )
        result[param.name] = value
    return result
