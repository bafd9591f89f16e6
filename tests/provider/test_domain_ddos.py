"""DDO v4 validation and DIDs (the checksums themselves: tests/plumbing/test_assets.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from eth_utils import to_checksum_address

from plumbing import assets
from services.provider.domain.ddos import (
    AlgorithmContainer,
    ConsumerParameter,
    SelectOption,
    derive_did,
    is_did,
    parse_did,
    validate_container,
    validate_ddo,
)
from services.provider.domain.errors import Refusal

from .domain_samples import (
    ALGO_DID,
    CONSUMER,
    DATASET_DID,
    DATATOKEN,
    DELETE,
    IMAGE_DIGEST,
    OTHER,
    PUBLISHER,
    algorithm_ddo,
    dataset_ddo,
    mutated,
)

# --- happy paths -----------------------------------------------------------------


def test_valid_dataset() -> None:
    ddo = validate_ddo(
        mutated(
            dataset_ddo(),
            ("credentials",),
            {
                "allow": [{"type": "address", "values": [CONSUMER.lower(), CONSUMER]}],
                "deny": [{"type": "address", "values": [OTHER]}],
            },
        )
    )
    assert ddo.id == DATASET_DID
    assert ddo.version == "4.1.0"
    assert ddo.owner == PUBLISHER
    assert not ddo.is_algorithm
    assert (ddo.metadata.type, ddo.metadata.name, ddo.metadata.author, ddo.metadata.license) == (
        "dataset",
        "Weather 2023",
        "Met Office",
        "CC-BY-4.0",
    )
    assert ddo.metadata.algorithm is None
    compute, access = ddo.services
    assert compute.type == "compute" and access.type == "access"
    assert compute.datatoken_address == to_checksum_address(DATATOKEN)  # given lowercase
    assert compute.timeout == 3600 and access.timeout == 0
    assert compute.compute is not None and access.compute is None
    assert compute.compute.allow_raw_algorithm is False
    assert compute.compute.publisher_trusted_algorithms == ()
    assert ddo.service("access-1") is access and ddo.service("nope") is None
    # Duplicated spellings of one address collapse to one entry.
    assert ddo.credentials.allow == (CONSUMER,)
    assert ddo.credentials.deny == (OTHER,)


def test_valid_algorithm() -> None:
    ddo = validate_ddo(algorithm_ddo())
    assert ddo.is_algorithm
    algorithm = ddo.metadata.algorithm
    assert algorithm is not None
    assert algorithm.container == AlgorithmContainer(
        entrypoint="python $ALGO", image="python", tag="3.11-slim", checksum=IMAGE_DIGEST
    )
    assert algorithm.language == "python"
    window, unit, note, verbose = algorithm.consumer_parameters
    assert window == ConsumerParameter(name="window", type="number", label="Window (h)", required=True, default=24)
    assert unit.options == (SelectOption("C", "Celsius"), SelectOption("F", "Fahrenheit"))
    assert unit.default == "C"
    assert note.default is None and note.required is False
    assert verbose.default is False


def test_trusted_lists_are_parsed_and_normalised() -> None:
    compute = {
        "allowRawAlgorithm": True,
        "allowNetworkAccess": True,
        "publisherTrustedAlgorithms": [
            {"did": ALGO_DID, "filesChecksum": "ab" * 32, "containerSectionChecksum": "cd" * 32},
            {"did": "did:op:" + "b" * 64, "filesChecksum": "", "containerSectionChecksum": "ef" * 32},
        ],
        "publisherTrustedAlgorithmPublishers": [PUBLISHER.lower()],
    }
    service = validate_ddo(mutated(dataset_ddo(), ("services", 0, "compute"), compute)).services[0]
    assert service.compute is not None
    first, second = service.compute.publisher_trusted_algorithms
    assert (first.did, first.files_checksum, first.container_section_checksum) == (ALGO_DID, "ab" * 32, "cd" * 32)
    assert second.files_checksum is None  # "" means not pinned
    assert service.compute.publisher_trusted_algorithm_publishers == (PUBLISHER,)
    assert service.compute.allow_network_access is True


@pytest.mark.parametrize(
    "path, value",
    [
        (("id",), DELETE),  # not yet published
        (("credentials",), DELETE),
        (("nft",), DELETE),
        (("metadata", "description"), DELETE),
        (("metadata", "algorithm", "consumerParameters"), DELETE),
        (("metadata", "algorithm", "consumerParameters"), {}),  # Ocean samples write {}
        (("metadata", "algorithm", "consumerParameters", 1, "options"), ["C", "F"]),
        (("version",), "4.7.12"),
    ],
)
def test_optional_fields_may_be_absent(path: tuple[Any, ...], value: Any) -> None:
    base = algorithm_ddo() if path[:2] == ("metadata", "algorithm") else dataset_ddo()
    validate_ddo(mutated(base, path, value))


def test_missing_optional_parts_take_safe_values() -> None:
    ddo = validate_ddo(mutated(mutated(dataset_ddo(), ("id",), DELETE), ("nft",), DELETE))
    assert ddo.id is None and ddo.owner is None
    assert ddo.credentials.allow == () and ddo.credentials.deny == ()


# --- invalid DDOs: one case per field class; the message names the path ------------

D, A = "dataset", "algorithm"
SVC = ("services", 0)
CMP = ("services", 0, "compute")
CONT = ("metadata", "algorithm", "container")
PARAMS = ("metadata", "algorithm", "consumerParameters")

INVALID = [
    # (base, path, value, message fragment)
    (D, ("version",), DELETE, "version is required"),
    (D, ("version",), "3.0.0", "version must be a DDO v4 version"),
    (D, ("version",), 4, "version must be a DDO v4 version"),
    (D, ("id",), "did:op:XYZ", "id must be did:op:"),
    (D, ("metadata",), DELETE, "metadata is required"),
    (D, ("metadata",), [], "metadata must be an object"),
    (D, ("metadata", "type"), "model", 'metadata.type must be "dataset" or "algorithm"'),
    (D, ("metadata", "name"), "", "metadata.name must be a non-empty string"),
    (D, ("metadata", "author"), DELETE, "metadata.author is required"),
    (D, ("metadata", "license"), 7, "metadata.license must be a non-empty string"),
    (D, ("metadata", "description"), 7, "metadata.description must be a string"),
    (D, ("metadata", "algorithm"), {"container": {}}, "metadata.algorithm is only allowed"),
    (A, ("metadata", "algorithm"), DELETE, "metadata.algorithm is required"),
    (A, CONT, DELETE, "metadata.algorithm.container is required"),
    (A, CONT + ("entrypoint",), "python main.py", "metadata.algorithm.container.entrypoint must contain $ALGO"),
    (A, CONT + ("image",), "", "metadata.algorithm.container.image must be a non-empty string"),
    (A, CONT + ("tag",), DELETE, "metadata.algorithm.container.tag is required"),
    (A, CONT + ("checksum",), "latest", "metadata.algorithm.container.checksum must be an image digest"),
    (A, PARAMS, "x", "metadata.algorithm.consumerParameters must be a list"),
    (A, PARAMS + (0,), "window", "metadata.algorithm.consumerParameters[0] must be an object"),
    (A, PARAMS + (0, "name"), DELETE, "consumerParameters[0].name is required"),
    (A, PARAMS + (1, "name"), "window", "consumerParameters[1].name 'window' is used twice"),
    (A, PARAMS + (0, "type"), "integer", 'consumerParameters[0].type must be "text" or "number"'),
    (A, PARAMS + (0, "label"), DELETE, "consumerParameters[0].label is required"),
    (A, PARAMS + (0, "required"), "yes", "consumerParameters[0].required must be true or false"),
    (A, PARAMS + (0, "default"), "24", "consumerParameters[0].default must be a finite number"),
    (A, PARAMS + (3, "default"), 0, "consumerParameters[3].default must be true or false"),
    (A, PARAMS + (2, "default"), 5, "consumerParameters[2].default must be a string"),
    (A, PARAMS + (1, "default"), "K", "consumerParameters[1].default must be one of 'C', 'F'"),
    (A, PARAMS + (1, "options"), DELETE, "consumerParameters[1].options is required"),
    (A, PARAMS + (1, "options"), [], "consumerParameters[1].options must list at least one option"),
    (A, PARAMS + (1, "options"), [{"a": "b", "c": "d"}], "consumerParameters[1].options[0] must be"),
    (A, PARAMS + (0, "options"), ["1"], 'consumerParameters[0].options is only allowed when type is "select"'),
    (D, ("services",), DELETE, "services is required"),
    (D, ("services",), [], "services must list at least one service"),
    (D, ("services",), {"id": "x"}, "services must be a list"),
    (D, SVC, "compute-1", "services[0] must be an object"),
    (D, SVC + ("id",), DELETE, "services[0].id is required"),
    (D, ("services", 1, "id"), "compute-1", "services[1].id 'compute-1' is used by an earlier service"),
    (D, SVC + ("type",), "download", 'services[0].type must be "access" or "compute"'),
    (D, SVC + ("files",), "", "services[0].files must be a non-empty string"),
    (D, SVC + ("files",), [{"url": "https://x"}], "services[0].files must be a non-empty string"),
    (D, SVC + ("datatokenAddress",), "0x123", "services[0].datatokenAddress must be an Ethereum address"),
    (D, SVC + ("serviceEndpoint",), DELETE, "services[0].serviceEndpoint is required"),
    (D, SVC + ("timeout",), -1, "services[0].timeout must be a non-negative integer"),
    (D, SVC + ("timeout",), 1.5, "services[0].timeout must be a non-negative integer"),
    (D, SVC + ("timeout",), True, "services[0].timeout must be a non-negative integer"),
    (D, SVC + ("timeout",), "3600", "services[0].timeout must be a non-negative integer"),
    (D, CMP, DELETE, 'services[0].compute is required when type is "compute"'),
    (D, ("services", 1, "compute"), {}, 'services[1].compute is only allowed when type is "compute"'),
    (D, CMP + ("allowRawAlgorithm",), DELETE, "services[0].compute.allowRawAlgorithm is required"),
    (D, CMP + ("allowNetworkAccess",), "no", "services[0].compute.allowNetworkAccess must be true or false"),
    (D, CMP + ("publisherTrustedAlgorithms",), DELETE, "services[0].compute.publisherTrustedAlgorithms is required"),
    (
        D,
        CMP + ("publisherTrustedAlgorithmPublishers",),
        DELETE,
        "services[0].compute.publisherTrustedAlgorithmPublishers is required",
    ),
    (
        D,
        CMP + ("publisherTrustedAlgorithmPublishers",),
        ["alice"],
        "services[0].compute.publisherTrustedAlgorithmPublishers[0] must be an Ethereum address",
    ),
    (
        D,
        CMP + ("publisherTrustedAlgorithms",),
        [{"did": "alg", "containerSectionChecksum": "ab" * 32}],
        "services[0].compute.publisherTrustedAlgorithms[0].did must be did:op:",
    ),
    (
        D,
        CMP + ("publisherTrustedAlgorithms",),
        [{"did": ALGO_DID}],
        "services[0].compute.publisherTrustedAlgorithms[0].containerSectionChecksum is required",
    ),
    (
        D,
        CMP + ("publisherTrustedAlgorithms",),
        [{"did": ALGO_DID, "filesChecksum": "abc", "containerSectionChecksum": "ab" * 32}],
        "services[0].compute.publisherTrustedAlgorithms[0].filesChecksum must be a sha256 digest, 64 lowercase hex",
    ),
    (
        D,
        CMP + ("publisherTrustedAlgorithms",),
        [{"did": ALGO_DID, "filesChecksum": "AB" * 32, "containerSectionChecksum": "ab" * 32}],
        "services[0].compute.publisherTrustedAlgorithms[0].filesChecksum must be a sha256 digest, 64 lowercase hex",
    ),
    (
        D,
        CMP + ("publisherTrustedAlgorithms",),
        [{"did": ALGO_DID, "containerSectionChecksum": "sha256:" + "ab" * 32}],
        "services[0].compute.publisherTrustedAlgorithms[0].containerSectionChecksum must be a sha256 digest",
    ),
    (D, ("credentials",), [], "credentials must be an object"),
    (D, ("credentials", "allow"), {"type": "address"}, "credentials.allow must be a list"),
    (
        D,
        ("credentials", "allow"),
        [{"type": "role", "values": ["admin"]}],
        'credentials.allow[0].type must be "address"',
    ),
    (D, ("credentials", "deny"), [{"type": "address"}], "credentials.deny[0].values is required"),
    (
        D,
        ("credentials", "deny"),
        [{"type": "address", "values": ["bob"]}],
        "credentials.deny[0].values[0] must be an Ethereum address",
    ),
    (D, ("nft", "owner"), "0xnope", "nft.owner must be an Ethereum address"),
]


@pytest.mark.parametrize(
    "base, path, value, fragment",
    INVALID,
    ids=[
        ".".join(str(p) for p in case[1]) + ("=DELETE" if case[2] is DELETE else f"={case[2]!r}")[:40]
        for case in INVALID
    ],
)
def test_invalid_ddo_is_refused_naming_the_field(base: str, path: tuple[Any, ...], value: Any, fragment: str) -> None:
    ddo = dataset_ddo() if base == D else algorithm_ddo()
    with pytest.raises(Refusal) as info:
        validate_ddo(mutated(ddo, path, value))
    assert info.value.code == "ddo_invalid"
    assert info.value.kind == "invalid_argument"
    assert fragment in info.value.message


@pytest.mark.parametrize("ddo", [None, [], "{}"])
def test_a_ddo_must_be_an_object(ddo: Any) -> None:
    with pytest.raises(Refusal) as info:
        validate_ddo(ddo)
    assert info.value.code == "ddo_invalid"


def test_the_timeout_message_is_the_documented_one() -> None:
    with pytest.raises(Refusal) as info:
        validate_ddo(mutated(dataset_ddo(), SVC + ("timeout",), -5))
    assert info.value.message == "services[0].timeout must be a non-negative integer"


# --- DIDs ------------------------------------------------------------------------


def test_derive_did_is_the_documented_hash() -> None:
    expected = "did:op:" + hashlib.sha256(f"{PUBLISHER}:weather-2023".encode()).hexdigest()
    assert derive_did(PUBLISHER, "weather-2023") == expected
    assert is_did(expected)


@pytest.mark.parametrize(
    "owner, salt, same",
    [
        (PUBLISHER, "weather-2023", True),  # stable: same inputs, same DID
        (PUBLISHER.lower(), "weather-2023", True),  # any spelling of the address
        ("0x" + PUBLISHER[2:].upper(), "weather-2023", True),
        (PUBLISHER, "weather-2024", False),
        (CONSUMER, "weather-2023", False),  # another owner cannot claim it
    ],
)
def test_derive_did_depends_on_owner_and_salt_only(owner: str, salt: str, same: bool) -> None:
    assert (derive_did(owner, salt) == derive_did(PUBLISHER, "weather-2023")) is same


def test_derive_did_refuses_a_bad_owner() -> None:
    with pytest.raises(Refusal) as info:
        derive_did("publisher", "s")
    assert info.value.code == "address_invalid"


@pytest.mark.parametrize(
    "value, valid",
    [
        (DATASET_DID, True),
        ("did:op:" + "0123456789abcdef" * 4, True),
        ("did:op:" + "A" * 64, False),  # lowercase only
        ("did:op:" + "a" * 63, False),
        ("did:op:" + "a" * 65, False),
        ("did:ex:" + "a" * 64, False),
        ("a" * 64, False),
        (" did:op:" + "a" * 64, False),
        (None, False),
    ],
)
def test_is_did_and_parse_did(value: Any, valid: bool) -> None:
    assert is_did(value) is valid
    if valid:
        assert parse_did(value) == value[len("did:op:") :]
    else:
        with pytest.raises(Refusal) as info:
            parse_did(value)
        assert info.value.code == "did_invalid"
        assert "did:op: followed by 64 lowercase hex digits" in info.value.message


# --- the container section, as plumbing/assets.py hashes it ----------------------


def test_a_validated_container_hashes_as_its_section() -> None:
    container = validate_ddo(algorithm_ddo()).metadata.algorithm.container  # type: ignore[union-attr]
    raw = algorithm_ddo()["metadata"]["algorithm"]["container"]
    assert assets.container_checksum(container) == assets.container_checksum(raw)


def test_validate_container_checks_a_raw_algorithm_container_under_its_path() -> None:
    raw = {"entrypoint": "node $ALGO", "image": "node", "tag": "20", "checksum": IMAGE_DIGEST}
    assert validate_container(raw, "raw_algorithm.container").entrypoint == "node $ALGO"
    with pytest.raises(Refusal) as info:
        validate_container(dict(raw, entrypoint="node main.js"), "raw_algorithm.container")
    assert info.value.message.startswith("raw_algorithm.container.entrypoint must contain $ALGO")
