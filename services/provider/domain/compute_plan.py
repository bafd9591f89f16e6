"""The compute plan: every check a compute request passes before its orders.

InitializeCompute and StartCompute both plan a request: its datasets'
compute services and credentials, the algorithm (a published one the
datasets admit, or raw code where they allow it), network access, the files
checksum the datasets pin, the consumer's algorithm parameters and the
environment. The plan says what the job will run; the API layer turns it
into the operator-service's workflow. StartCompute then claims the plan's
orders under the request key derived from them.

The published assets and the environments are read through two ports,
`AssetCatalog` and `EnvironmentDirectory`, which server.py wires to the
persistence layer and to the operator-service client.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from plumbing import errors, untrusted

from . import ddos, policy
from . import errors as codes
from .errors import Refusal


@dataclass(frozen=True)
class AssetChoice:
    """An asset a request names: the service it uses and the order that pays for it."""

    did: str
    service_id: str
    order_id: str = ""


@dataclass(frozen=True)
class RawAlgorithm:
    code: str
    container: ddos.AlgorithmContainer


@dataclass(frozen=True)
class ComputeRequest:
    """What a consumer asks to run (a ComputeSpec, as the rules read it)."""

    dataset: AssetChoice | None
    additional_datasets: tuple[AssetChoice, ...] = ()
    algorithm_asset: AssetChoice | None = None
    raw_algorithm: RawAlgorithm | None = None
    environment_id: str = ""
    max_duration_seconds: int = 0
    allow_network: bool = False
    algorithm_parameters_json: str = ""


@dataclass(frozen=True)
class PlannedAsset:
    choice: AssetChoice
    asset: ddos.PublishedAsset

    @property
    def did(self) -> str:
        return self.asset.ddo.id or self.choice.did


@dataclass(frozen=True)
class Plan:
    """A compute request that passed every check but the orders."""

    consumer: str
    assets: tuple[PlannedAsset, ...]  # the datasets, then a published algorithm
    container: ddos.AlgorithmContainer
    raw_algorithm_code: str  # "" for a published algorithm
    allow_network: bool
    algorithm_files_checksum: str  # what the datasets pin ("" if nothing)
    algo_custom_data_json: str  # the consumer's parameters, checked


class AssetCatalog(Protocol):
    async def resolve(self, did: str) -> ddos.PublishedAsset:
        """The published asset, or a Refusal (did_invalid, did_not_found)."""
        ...


class Environment(Protocol):
    """An engine's compute environment, as the operator-service lists it."""

    @property
    def id(self) -> str: ...
    @property
    def available(self) -> bool: ...
    @property
    def max_job_duration_seconds(self) -> int: ...


class EnvironmentDirectory(Protocol):
    async def list_environments(self) -> Sequence[Environment]: ...


async def plan_compute(
    request: ComputeRequest, consumer: str, assets: AssetCatalog, environments: EnvironmentDirectory
) -> Plan:
    """The plan for `request`, or the first refusal, in a fixed order: the
    request's shape, the datasets, the algorithm, network, parameters, the
    environment."""
    if request.dataset is None:
        raise errors.InvalidArgument("spec.dataset is required", "dataset_missing", field="spec.dataset")
    if request.algorithm_asset is None and request.raw_algorithm is None:
        raise errors.InvalidArgument(
            "spec needs an algorithm: algorithm_asset or raw_algorithm", "algorithm_missing", field="spec.algorithm"
        )
    if not request.environment_id:
        raise errors.InvalidArgument(
            "spec.environment_id is required (ListComputeEnvironments)",
            "environment_missing",
            field="spec.environment_id",
        )
    planned: list[PlannedAsset] = []
    services = []
    for choice in [request.dataset, *request.additional_datasets]:
        asset = await assets.resolve(choice.did)
        service = policy.check_dataset(asset.ddo, choice.service_id)
        policy.check_credentials(asset.ddo, consumer)
        planned.append(PlannedAsset(choice, asset))
        services.append(service)
    algorithm_ddo = None
    if request.raw_algorithm is not None:
        raw = request.raw_algorithm
        if not raw.code.strip():
            raise errors.InvalidArgument(
                "raw_algorithm.code is empty", "algorithm_empty", field="spec.raw_algorithm.code"
            )
        if ddos.ALGO_PLACEHOLDER not in raw.container.entrypoint or not raw.container.image:
            raise errors.InvalidArgument(
                "raw_algorithm.container needs an image and an entrypoint containing $ALGO",
                "container_invalid",
                field="spec.raw_algorithm.container",
            )
    else:
        algorithm_choice = request.algorithm_asset
        assert algorithm_choice is not None
        asset = await assets.resolve(algorithm_choice.did)
        algorithm_ddo = asset.ddo
        policy.check_credentials(algorithm_ddo, consumer)
        if algorithm_ddo.is_algorithm and algorithm_ddo.service(algorithm_choice.service_id) is None:
            raise Refusal(
                codes.SERVICE_NOT_FOUND, f"{algorithm_choice.did} has no service {algorithm_choice.service_id!r}"
            )
        planned.append(PlannedAsset(algorithm_choice, asset))
    for service in services:
        policy.check_algorithm_allowed(service, algorithm_ddo, None, algorithm_ddo is None)
    allow_network = policy.check_network(services, request.allow_network)
    parameters_spec: tuple[Any, ...] = ()
    files_checksum = ""
    if algorithm_ddo is None:
        assert request.raw_algorithm is not None
        container = request.raw_algorithm.container
    else:
        algorithm = algorithm_ddo.metadata.algorithm
        assert algorithm is not None  # check_algorithm_allowed refused non-algorithms
        container = algorithm.container
        parameters_spec = algorithm.consumer_parameters
        files_checksum = _pinned_files_checksum(services, algorithm_ddo.id or "")
    custom_data = json.dumps(policy.validate_consumer_parameters(parameters_spec, _parameters(request)))
    await _check_environment(request, environments)
    return Plan(
        consumer=consumer,
        assets=tuple(planned),
        container=container,
        raw_algorithm_code=request.raw_algorithm.code if request.raw_algorithm is not None else "",
        allow_network=allow_network,
        algorithm_files_checksum=files_checksum,
        algo_custom_data_json=custom_data,
    )


def _pinned_files_checksum(services: Sequence[ddos.Service], algorithm_did: str) -> str:
    """The algorithm files' checksum the datasets pin: pod_config checks it, since the provider never fetches them."""
    trusted = [policy.find_trusted_algorithm(s, algorithm_did) for s in services]
    pinned = {t.files_checksum for t in trusted if t is not None and t.files_checksum}
    if len(pinned) > 1:
        raise Refusal(
            codes.ALGORITHM_CHECKSUM_MISMATCH, "the datasets pin different files checksums for this algorithm"
        )
    return pinned.pop() if pinned else ""


def _parameters(request: ComputeRequest) -> dict[str, Any]:
    try:
        given = untrusted.parse_json(request.algorithm_parameters_json or "{}", "spec.algorithm_parameters_json")
    except ValueError:
        raise Refusal(codes.CONSUMER_PARAMETERS_INVALID, "algorithm_parameters_json is not valid JSON") from None
    if not isinstance(given, dict):
        raise Refusal(codes.CONSUMER_PARAMETERS_INVALID, "algorithm_parameters_json must be a JSON object")
    return given


async def _check_environment(request: ComputeRequest, environments: EnvironmentDirectory) -> None:
    known = await environments.list_environments()
    env = next((e for e in known if e.id == request.environment_id), None)
    if env is None:
        names = ", ".join(e.id for e in known) or "none"
        raise Refusal(
            codes.ENVIRONMENT_UNKNOWN, f"environment {request.environment_id!r} does not exist (known: {names})"
        )
    if not env.available:
        raise Refusal(
            codes.ENVIRONMENT_UNAVAILABLE, f"environment {env.id} is unavailable: its engine is not responding"
        )
    if request.max_duration_seconds > env.max_job_duration_seconds:
        raise errors.InvalidArgument(
            f"max_duration_seconds {request.max_duration_seconds} exceeds environment {env.id}'s maximum of "
            f"{env.max_job_duration_seconds}",
            "duration_too_long",
            field="spec.max_duration_seconds",
        )


def claimed_orders(plan: Plan) -> list[str]:
    """The plan's order ids, one per asset."""
    order_ids = [planned.choice.order_id for planned in plan.assets]
    missing = next((planned.choice.did for planned in plan.assets if not planned.choice.order_id), None)
    if missing is not None:
        raise Refusal(codes.ORDER_MISSING, f"no order_id for {missing}; order it first (StartOrder)")
    if len(set(order_ids)) != len(order_ids):
        raise Refusal(codes.ORDER_INVALID, "each asset needs its own order")
    return order_ids


def request_key(order_ids: Sequence[str], releases: Mapping[str, int]) -> str:
    """The request key derived from the orders: the operator-service's
    idempotency key, so a retried request returns the same job and two
    requests never share an order. An order given back by a job that never
    ran (`releases`) makes a new key: the next request starts a new job."""
    parts = sorted(f"{order_id}#{releases[order_id]}" if releases.get(order_id) else order_id for order_id in order_ids)
    return hashlib.sha256(":".join(parts).encode()).hexdigest()
