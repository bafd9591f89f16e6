"""Assets: the Ocean DDO v4 shape and the DIDs the provider derives.

``validate_ddo`` turns a JSON mapping into frozen dataclasses or refuses it
(ddo_invalid) with a message naming the offending field path, e.g.
``services[0].timeout must be a non-negative integer``. Keys the provider
does not use (``@context``, ``chainId``, ``nftAddress``, ``stats`` ...) are
ignored, so Ocean-produced DDOs pass; keys it uses are checked strictly.

The asset's publisher (owner) is read from the optional Ocean-indexer field
``nft.owner``. The asset store, which knows who published the asset, sets it
when it serves a DDO; policy needs it for trusted-publisher checks.

The DID syntax and the checksums that pin algorithms are plumbing/assets.py's:
pod_config checks what it stages with the same code.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from plumbing import untrusted
from plumbing.assets import DID_PREFIX, DID_SYNTAX, SHA256_SYNTAX, did_id, is_did, is_sha256_hex

from .errors import DDO_INVALID, DID_INVALID, Refusal
from .identity import is_address, normalize_address

_IMAGE_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_VERSION = re.compile(r"4\.\d+\.\d+")

ASSET_TYPES = ("dataset", "algorithm")
SERVICE_TYPES = ("access", "compute")
PARAMETER_TYPES = ("text", "number", "boolean", "select")
ALGO_PLACEHOLDER = "$ALGO"


# --------------------------------------------------------------------------
# DIDs


def derive_did(owner_address: str, salt: str) -> str:
    """Return ``did:op:`` + sha256 hex of ``<checksummed owner>:<salt>`` (UTF-8).

    Why not hash the content, as some DID methods do: an asset's metadata,
    services and prices change over its life, and orders, trusted-algorithm
    lists and job records all point at the DID, so it must not move when the
    DDO is updated. Binding the owner makes the DID unclaimable by anyone
    else (publishing checks the signer is the owner); the salt lets one
    owner publish many assets. Checksumming first means any spelling of the
    same address gives the same DID.
    """
    owner = normalize_address(owner_address)
    if not isinstance(salt, str):
        raise Refusal(DDO_INVALID, "salt must be a string")
    digest = hashlib.sha256(f"{owner}:{salt}".encode()).hexdigest()
    return DID_PREFIX + digest


def parse_did(s: object) -> str:
    """Return the 64-hex identifier after ``did:op:`` or refuse (did_invalid).

    The bare identifier is what names a job's input directory
    (``/data/inputs/<id>``).
    """
    if not isinstance(s, str) or not is_did(s):
        raise Refusal(DID_INVALID, f"{s!r} is not a DID: expected {DID_SYNTAX}")
    return did_id(s)


# --------------------------------------------------------------------------
# The validated shape


@dataclass(frozen=True)
class SelectOption:
    value: str
    label: str


@dataclass(frozen=True)
class ConsumerParameter:
    """One parameter a consumer may pass to an algorithm (algoCustomData.json)."""

    name: str
    type: str  # text | number | boolean | select
    label: str
    required: bool
    default: str | int | float | bool | None  # None: no default
    options: tuple[SelectOption, ...] = ()  # select only
    description: str = ""


@dataclass(frozen=True)
class AlgorithmContainer:
    entrypoint: str  # contains $ALGO, replaced by the algorithm's path
    image: str
    tag: str
    checksum: str  # image digest, sha256:<64 hex>


@dataclass(frozen=True)
class Algorithm:
    container: AlgorithmContainer
    consumer_parameters: tuple[ConsumerParameter, ...] = ()
    language: str = ""
    version: str = ""


@dataclass(frozen=True)
class Metadata:
    type: str  # dataset | algorithm
    name: str
    author: str
    license: str
    description: str = ""
    algorithm: Algorithm | None = None  # set iff type == "algorithm"


@dataclass(frozen=True)
class TrustedAlgorithm:
    did: str
    files_checksum: str | None  # None: the files are not pinned
    container_section_checksum: str


@dataclass(frozen=True)
class ComputeOptions:
    allow_raw_algorithm: bool
    allow_network_access: bool
    publisher_trusted_algorithms: tuple[TrustedAlgorithm, ...]
    publisher_trusted_algorithm_publishers: tuple[str, ...]  # checksummed


@dataclass(frozen=True)
class Service:
    id: str
    type: str  # access | compute
    files: str  # sealed for the provider; never shown to consumers
    datatoken_address: str  # checksummed
    service_endpoint: str
    timeout: int  # seconds an order stays valid; 0 = no limit (Ocean)
    compute: ComputeOptions | None = None  # set iff type == "compute"
    name: str = ""
    description: str = ""


@dataclass(frozen=True)
class Credentials:
    """Address allow/deny lists. An empty allow list restricts nobody."""

    allow: tuple[str, ...] = ()  # checksummed
    deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ddo:
    id: str | None  # None before publishing assigns one
    version: str
    metadata: Metadata
    services: tuple[Service, ...]
    credentials: Credentials = Credentials()
    owner: str | None = None  # from nft.owner, checksummed

    def service(self, service_id: str) -> Service | None:
        """The service with this id, if any."""
        for service in self.services:
            if service.id == service_id:
                return service
        return None

    @property
    def is_algorithm(self) -> bool:
        return self.metadata.type == "algorithm"


@dataclass(frozen=True)
class PublishedAsset:
    """An asset as this provider stores it: the DDO, its JSON text and its publisher."""

    did: str
    owner: str
    ddo: Ddo
    ddo_json: str


def parse_ddo_json(text: str, owner: str, did: str | None = None) -> tuple[dict[str, Any], Ddo]:
    """A DDO's JSON (a request's or a stored one) with its DID and publisher
    set: as a mapping to store, and validated; refuses ddo_invalid."""
    try:
        data = untrusted.parse_json(text, "ddo_json")
    except ValueError as exc:
        raise Refusal(DDO_INVALID, f"ddo_json is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Refusal(DDO_INVALID, "ddo_json must be a JSON object")
    if did is not None:
        data["id"] = did
    data["nft"] = {**(data.get("nft") or {}), "owner": owner}
    return data, validate_ddo(data)


# --------------------------------------------------------------------------
# Validation helpers: each takes the field's path for the message.

_MISSING = object()


def _fail(message: str) -> Refusal:
    return Refusal(DDO_INVALID, message)


def _get(obj: Mapping[str, Any], key: str, path: str, required: bool = True) -> Any:
    value = obj.get(key, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise _fail(f"{path} is required")
        return _MISSING
    return value


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(f"{path} must be an object")
    return value


def _list(value: Any, path: str) -> Sequence[Any]:
    if not isinstance(value, (list, tuple)):
        raise _fail(f"{path} must be a list")
    return value


def _text(obj: Mapping[str, Any], key: str, path: str, required: bool = True) -> str:
    value = _get(obj, key, path, required)
    if value is _MISSING:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise _fail(f"{path} must be a non-empty string" if required else f"{path} must be a string")
    return value


def _bool(obj: Mapping[str, Any], key: str, path: str) -> bool:
    value = _get(obj, key, path)
    if not isinstance(value, bool):
        raise _fail(f"{path} must be true or false")
    return value


def _address(value: Any, path: str) -> str:
    if not is_address(value):
        raise _fail(f"{path} must be an Ethereum address (0x followed by 40 hex digits), got {value!r}")
    return normalize_address(value)


def _one_of(value: Any, choices: Sequence[str], path: str) -> str:
    if value not in choices:
        expected = " or ".join(f'"{c}"' for c in choices)
        raise _fail(f"{path} must be {expected}, got {value!r}")
    return str(value)


# --------------------------------------------------------------------------
# Validation


def validate_ddo(ddo: Mapping[str, Any]) -> Ddo:
    """Check a DDO's shape and return it as frozen dataclasses.

    Required: ``version`` (4.x.y), ``metadata`` (type, name, author,
    license; for algorithms ``algorithm.container``), ``services`` (at least
    one, unique ids). Optional: ``id`` (must be a DID if present),
    ``credentials``, ``nft.owner``. Any violation refuses with ddo_invalid
    naming the field path.
    """
    data = _mapping(ddo, "ddo")

    did: str | None = None
    raw_id = _get(data, "id", "id", required=False)
    if raw_id is not _MISSING:
        if not is_did(raw_id):
            raise _fail(f"id must be {DID_SYNTAX}, got {raw_id!r}")
        did = raw_id

    version = _get(data, "version", "version")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise _fail(f'version must be a DDO v4 version such as "4.1.0", got {version!r}')

    metadata = _metadata(_mapping(_get(data, "metadata", "metadata"), "metadata"))

    raw_services = _list(_get(data, "services", "services"), "services")
    if not raw_services:
        raise _fail("services must list at least one service")
    services = tuple(_service(item, f"services[{i}]") for i, item in enumerate(raw_services))
    seen: set[str] = set()
    for i, service in enumerate(services):
        if service.id in seen:
            raise _fail(f"services[{i}].id {service.id!r} is used by an earlier service; ids must be unique")
        seen.add(service.id)

    credentials = Credentials()
    raw_credentials = _get(data, "credentials", "credentials", required=False)
    if raw_credentials is not _MISSING:
        credentials = _credentials(_mapping(raw_credentials, "credentials"))

    owner: str | None = None
    raw_nft = _get(data, "nft", "nft", required=False)
    if raw_nft is not _MISSING:
        raw_owner = _get(_mapping(raw_nft, "nft"), "owner", "nft.owner", required=False)
        if raw_owner is not _MISSING:
            owner = _address(raw_owner, "nft.owner")

    return Ddo(
        id=did,
        version=version,
        metadata=metadata,
        services=services,
        credentials=credentials,
        owner=owner,
    )


def _metadata(data: Mapping[str, Any]) -> Metadata:
    asset_type = _one_of(_get(data, "type", "metadata.type"), ASSET_TYPES, "metadata.type")
    name = _text(data, "name", "metadata.name")
    author = _text(data, "author", "metadata.author")
    license_ = _text(data, "license", "metadata.license")
    description = _text(data, "description", "metadata.description", required=False)

    raw_algorithm = _get(data, "algorithm", "metadata.algorithm", required=False)
    algorithm: Algorithm | None = None
    if asset_type == "algorithm":
        if raw_algorithm is _MISSING:
            raise _fail('metadata.algorithm is required when metadata.type is "algorithm"')
        algorithm = _algorithm(_mapping(raw_algorithm, "metadata.algorithm"))
    elif raw_algorithm is not _MISSING:
        # A dataset with a container section is a publishing mistake, not a
        # harmless extra: refuse it rather than guess which was meant.
        raise _fail('metadata.algorithm is only allowed when metadata.type is "algorithm"')

    return Metadata(
        type=asset_type,
        name=name,
        author=author,
        license=license_,
        description=description,
        algorithm=algorithm,
    )


def _algorithm(data: Mapping[str, Any]) -> Algorithm:
    path = "metadata.algorithm"
    container = validate_container(_get(data, "container", f"{path}.container"))
    parameters: tuple[ConsumerParameter, ...] = ()
    raw = _get(data, "consumerParameters", f"{path}.consumerParameters", required=False)
    # Ocean's own samples write an empty object for "no parameters".
    if raw is not _MISSING and not (isinstance(raw, Mapping) and not raw):
        items = _list(raw, f"{path}.consumerParameters")
        parameters = tuple(
            _consumer_parameter(_mapping(item, f"{path}.consumerParameters[{i}]"), f"{path}.consumerParameters[{i}]")
            for i, item in enumerate(items)
        )
        names = [p.name for p in parameters]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _fail(f"{path}.consumerParameters[{i}].name {name!r} is used twice; names must be unique")
    return Algorithm(
        container=container,
        consumer_parameters=parameters,
        language=_text(data, "language", f"{path}.language", required=False),
        version=_text(data, "version", f"{path}.version", required=False),
    )


def validate_container(data: Mapping[str, Any], path: str = "metadata.algorithm.container") -> AlgorithmContainer:
    """Check a container section (also a raw algorithm's) and return it.

    entrypoint must contain $ALGO; image and tag are non-empty; checksum is
    the image digest ``sha256:<64 lowercase hex>``. Refuses with ddo_invalid
    naming ``path``.
    """
    data = _mapping(data, path)
    entrypoint = _text(data, "entrypoint", f"{path}.entrypoint")
    if ALGO_PLACEHOLDER not in entrypoint:
        raise _fail(f"{path}.entrypoint must contain $ALGO, where the algorithm's path is put")
    image = _text(data, "image", f"{path}.image")
    tag = _text(data, "tag", f"{path}.tag")
    checksum = _text(data, "checksum", f"{path}.checksum")
    # The digest pins the image: a tag alone can be re-pointed by its owner.
    if not _IMAGE_DIGEST.fullmatch(checksum):
        raise _fail(f"{path}.checksum must be an image digest, sha256: followed by 64 lowercase hex digits")
    return AlgorithmContainer(entrypoint=entrypoint, image=image, tag=tag, checksum=checksum)


def _consumer_parameter(data: Mapping[str, Any], path: str) -> ConsumerParameter:
    name = _text(data, "name", f"{path}.name")
    kind = _one_of(_get(data, "type", f"{path}.type"), PARAMETER_TYPES, f"{path}.type")
    label = _text(data, "label", f"{path}.label")
    required = _bool(data, "required", f"{path}.required")
    description = _text(data, "description", f"{path}.description", required=False)

    options: tuple[SelectOption, ...] = ()
    raw_options = _get(data, "options", f"{path}.options", required=False)
    if kind == "select":
        if raw_options is _MISSING:
            raise _fail(f'{path}.options is required when type is "select"')
        items = _list(raw_options, f"{path}.options")
        if not items:
            raise _fail(f"{path}.options must list at least one option")
        options = tuple(_option(item, f"{path}.options[{i}]") for i, item in enumerate(items))
    elif raw_options is not _MISSING:
        raise _fail(f'{path}.options is only allowed when type is "select"')

    default: str | int | float | bool | None = None
    raw_default = _get(data, "default", f"{path}.default", required=False)
    if raw_default is not _MISSING:
        problem = parameter_value_problem(kind, options, raw_default)
        if problem:
            raise _fail(f"{path}.default {problem}")
        default = raw_default

    return ConsumerParameter(
        name=name,
        type=kind,
        label=label,
        required=required,
        default=default,
        options=options,
        description=description,
    )


def _option(item: Any, path: str) -> SelectOption:
    # Ocean writes options as {value: label} objects; a bare string is its own label.
    if isinstance(item, str) and item:
        return SelectOption(value=item, label=item)
    if isinstance(item, Mapping) and len(item) == 1:
        ((value, label),) = item.items()
        if isinstance(value, str) and value and isinstance(label, str):
            return SelectOption(value=value, label=label)
    raise _fail(f'{path} must be a non-empty string or a {{"value": "label"}} object')


def parameter_value_problem(kind: str, options: Sequence[SelectOption], value: Any) -> str | None:
    """Why ``value`` is not valid for a parameter of this type, or None if it is."""
    if kind == "text":
        return None if isinstance(value, str) else "must be a string"
    if kind == "number":
        # bool is an int subclass; true is not a number. NaN/inf have no JSON form.
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or math.isnan(value)
            or value
            in (
                float("inf"),
                float("-inf"),
            )
        ):
            return "must be a finite number"
        return None
    if kind == "boolean":
        return None if isinstance(value, bool) else "must be true or false"
    if kind == "select":
        values = [o.value for o in options]
        if value in values and isinstance(value, str):
            return None
        return "must be one of " + ", ".join(repr(v) for v in values)
    raise ValueError(f"unknown parameter type {kind!r}")


def _service(item: Any, path: str) -> Service:
    data = _mapping(item, path)
    service_id = _text(data, "id", f"{path}.id")
    service_type = _one_of(_get(data, "type", f"{path}.type"), SERVICE_TYPES, f"{path}.type")
    files = _text(data, "files", f"{path}.files")
    datatoken = _address(_get(data, "datatokenAddress", f"{path}.datatokenAddress"), f"{path}.datatokenAddress")
    endpoint = _text(data, "serviceEndpoint", f"{path}.serviceEndpoint")
    timeout = _get(data, "timeout", f"{path}.timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise _fail(f"{path}.timeout must be a non-negative integer")

    compute: ComputeOptions | None = None
    raw_compute = _get(data, "compute", f"{path}.compute", required=False)
    if service_type == "compute":
        if raw_compute is _MISSING:
            raise _fail(f'{path}.compute is required when type is "compute"')
        compute = _compute(_mapping(raw_compute, f"{path}.compute"), f"{path}.compute")
    elif raw_compute is not _MISSING:
        raise _fail(f'{path}.compute is only allowed when type is "compute"')

    return Service(
        id=service_id,
        type=service_type,
        files=files,
        datatoken_address=datatoken,
        service_endpoint=endpoint,
        timeout=timeout,
        compute=compute,
        name=_text(data, "name", f"{path}.name", required=False),
        description=_text(data, "description", f"{path}.description", required=False),
    )


def _compute(data: Mapping[str, Any], path: str) -> ComputeOptions:
    # All four keys are required: a missing trusted list would read as
    # "empty", which admits every published algorithm. A publisher must
    # write [] to mean that.
    allow_raw = _bool(data, "allowRawAlgorithm", f"{path}.allowRawAlgorithm")
    allow_network = _bool(data, "allowNetworkAccess", f"{path}.allowNetworkAccess")
    algos_path = f"{path}.publisherTrustedAlgorithms"
    trusted = tuple(
        _trusted_algorithm(entry, f"{algos_path}[{i}]")
        for i, entry in enumerate(_list(_get(data, "publisherTrustedAlgorithms", algos_path), algos_path))
    )
    publishers_path = f"{path}.publisherTrustedAlgorithmPublishers"
    publishers = tuple(
        _address(entry, f"{publishers_path}[{i}]")
        for i, entry in enumerate(
            _list(_get(data, "publisherTrustedAlgorithmPublishers", publishers_path), publishers_path)
        )
    )
    return ComputeOptions(
        allow_raw_algorithm=allow_raw,
        allow_network_access=allow_network,
        publisher_trusted_algorithms=trusted,
        publisher_trusted_algorithm_publishers=publishers,
    )


def _checksum(value: Any, path: str) -> str:
    # Taken as written: pod_config compares the pin with what it computes, never a normalised copy.
    if not is_sha256_hex(value):
        raise _fail(f"{path} must be a sha256 digest, {SHA256_SYNTAX}, got {value!r}")
    return str(value)


def _trusted_algorithm(item: Any, path: str) -> TrustedAlgorithm:
    data = _mapping(item, path)
    did = _get(data, "did", f"{path}.did")
    if not is_did(did):
        raise _fail(f"{path}.did must be {DID_SYNTAX}, got {did!r}")
    raw_files = _get(data, "filesChecksum", f"{path}.filesChecksum", required=False)
    # An empty string is how Ocean tools write "not pinned".
    files = None if raw_files is _MISSING or raw_files == "" else _checksum(raw_files, f"{path}.filesChecksum")
    container = _checksum(
        _get(data, "containerSectionChecksum", f"{path}.containerSectionChecksum"),
        f"{path}.containerSectionChecksum",
    )
    return TrustedAlgorithm(did=did, files_checksum=files, container_section_checksum=container)


def _credentials(data: Mapping[str, Any]) -> Credentials:
    return Credentials(
        allow=_credential_list(data, "allow"),
        deny=_credential_list(data, "deny"),
    )


def _credential_list(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    path = f"credentials.{key}"
    raw = _get(data, key, path, required=False)
    if raw is _MISSING:
        return ()
    addresses: list[str] = []
    for i, rule in enumerate(_list(raw, path)):
        rule_path = f"{path}[{i}]"
        rule_data = _mapping(rule, rule_path)
        # Unknown credential types are refused, not skipped: skipping an allow
        # rule would silently open the asset to everyone.
        _one_of(_get(rule_data, "type", f"{rule_path}.type"), ("address",), f"{rule_path}.type")
        values_path = f"{rule_path}.values"
        for j, value in enumerate(_list(_get(rule_data, "values", values_path), values_path)):
            address = _address(value, f"{values_path}[{j}]")
            if address not in addresses:
                addresses.append(address)
    return tuple(addresses)


def datatoken_address(did: str, service_id: str) -> str:
    """The embedded ledger's datatoken address for an asset's service.

    Derived, not random, so a publisher can write it into the DDO before
    publishing (the DID itself is derivable from owner and salt)."""
    digest = hashlib.sha256(f"{did}:{service_id}".encode()).hexdigest()
    return normalize_address("0x" + digest[:40])
