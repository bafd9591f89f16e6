"""Sample DDOs and keys shared by the provider domain tests.

Each builder returns a fresh dict, so a test can mutate its copy freely.
"""

from __future__ import annotations

import copy
from typing import Any

from plumbing.ethereum import Account

CONSUMER_KEY = "0x" + "11" * 32
OTHER_KEY = "0x" + "22" * 32
PUBLISHER_KEY = "0x" + "33" * 32
CONSUMER = Account.from_key(CONSUMER_KEY).address
OTHER = Account.from_key(OTHER_KEY).address
PUBLISHER = Account.from_key(PUBLISHER_KEY).address

DATATOKEN = "0x" + "ab" * 20  # lowercase on purpose: validation checksums it
DATASET_DID = "did:op:" + "1" * 64
ALGO_DID = "did:op:" + "a" * 64
IMAGE_DIGEST = "sha256:" + "c" * 64

_DATASET: dict[str, Any] = {
    "@context": ["https://w3id.org/did/v1"],
    "id": DATASET_DID,
    "version": "4.1.0",
    "chainId": 8996,
    "nftAddress": "0x" + "00" * 20,
    "metadata": {
        "created": "2024-01-01T00:00:00Z",
        "updated": "2024-01-01T00:00:00Z",
        "type": "dataset",
        "name": "Weather 2023",
        "description": "Hourly readings",
        "author": "Met Office",
        "license": "CC-BY-4.0",
    },
    "services": [
        {
            "id": "compute-1",
            "type": "compute",
            "files": "0x" + "ee" * 48,
            "datatokenAddress": DATATOKEN,
            "serviceEndpoint": "localhost:8030",
            "timeout": 3600,
            "compute": {
                "allowRawAlgorithm": False,
                "allowNetworkAccess": False,
                "publisherTrustedAlgorithms": [],
                "publisherTrustedAlgorithmPublishers": [],
            },
        },
        {
            "id": "access-1",
            "type": "access",
            "files": "0x" + "ee" * 48,
            "datatokenAddress": DATATOKEN,
            "serviceEndpoint": "localhost:8030",
            "timeout": 0,
        },
    ],
    "credentials": {"allow": [], "deny": []},
    "nft": {"owner": PUBLISHER},
}

_ALGORITHM: dict[str, Any] = {
    "id": ALGO_DID,
    "version": "4.1.0",
    "metadata": {
        "type": "algorithm",
        "name": "Mean temperature",
        "author": "Ada",
        "license": "MIT",
        "algorithm": {
            "language": "python",
            "version": "1.0",
            "container": {
                "entrypoint": "python $ALGO",
                "image": "python",
                "tag": "3.11-slim",
                "checksum": IMAGE_DIGEST,
            },
            "consumerParameters": [
                {"name": "window", "type": "number", "label": "Window (h)", "required": True, "default": 24},
                {
                    "name": "unit",
                    "type": "select",
                    "label": "Unit",
                    "required": False,
                    "options": [{"C": "Celsius"}, {"F": "Fahrenheit"}],
                    "default": "C",
                },
                {"name": "note", "type": "text", "label": "Note", "required": False},
                {"name": "verbose", "type": "boolean", "label": "Verbose", "required": False, "default": False},
            ],
        },
    },
    "services": [
        {
            "id": "algo-access",
            "type": "access",
            "files": "0x" + "dd" * 48,
            "datatokenAddress": "0x" + "cd" * 20,
            "serviceEndpoint": "localhost:8030",
            "timeout": 86400,
        }
    ],
    "nft": {"owner": PUBLISHER},
}


def dataset_ddo() -> dict[str, Any]:
    return copy.deepcopy(_DATASET)


def algorithm_ddo() -> dict[str, Any]:
    return copy.deepcopy(_ALGORITHM)


DELETE = object()


def mutated(ddo: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """Return ``ddo`` with the value at ``path`` replaced (or removed, for DELETE)."""
    target = ddo
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return ddo
