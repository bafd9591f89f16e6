"""Publishing: from a small description to an Ocean v4 DDO whose files are sealed for the provider.

A description (a dict: what ``c2d asset publish`` reads from YAML or JSON)::

    type: dataset            # or algorithm
    name: City temperatures
    author: Ada              # optional (default: the publisher's address)
    license: CC0             # optional (default: "unknown")
    description: ...         # optional
    files: [weather.csv]     # local paths (relative to the description), http(s)://, s3://, ipfs:// locations,
                             # or {url: ..., checksum: ..., headers: {...}}
    timeout: 86400           # optional: seconds an order stays valid
    # an algorithm:
    container: {entrypoint: "python3 $ALGO", image: python, tag: "3.11", checksum: "sha256:<image digest>"}
    parameters: []           # optional: the DDO's consumerParameters
    # a dataset (its compute policy):
    compute:
      trusted_algorithms: [{did: did:op:..., files_checksum: <hex>}]
      trusted_publishers: [0x...]
      allow_raw_algorithm: false
      allow_network: false

Every file's sha256 is computed here (local files read, URLs downloaded) and
sealed with its location, so pod_config checks what it stages. A local file is
carried inline (sealed with the rest), which suits small text files: larger or
binary files are published by URL, S3 or IPFS location.
"""

from __future__ import annotations

import hashlib
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nacl.public import PublicKey, SealedBox

from .errors import InvalidDescription
from .signing import canonical_json, checksum_address

DID_PREFIX = "did:op:"
DDO_VERSION = "4.1.0"
INLINE_LIMIT_BYTES = 1 << 20  # what a local file may weigh: the DDO travels in one gRPC message
DEFAULT_TIMEOUT_S = 86400
SERVICE_OF_TYPE = {"dataset": "compute", "algorithm": "access"}


def derive_did(owner: str, salt: str) -> str:
    """The DID an owner's asset gets: did:op: + sha256 of ``<checksummed owner>:<salt>``."""
    return DID_PREFIX + hashlib.sha256(f"{checksum_address(owner)}:{salt}".encode()).hexdigest()


def datatoken_address(did: str, service_id: str) -> str:
    """The embedded ledger's datatoken address of an asset's service (derived, so a DDO can name it)."""
    return checksum_address("0x" + hashlib.sha256(f"{did}:{service_id}".encode()).hexdigest()[:40])


def files_checksum(sha256_hexes: Sequence[str]) -> str:
    """An algorithm's filesChecksum: sha256 of its files' sha256 hex digests, concatenated in order."""
    return hashlib.sha256("".join(h.lower() for h in sha256_hexes).encode("ascii")).hexdigest()


def container_checksum(container: Mapping[str, Any]) -> str:
    """An algorithm's containerSectionChecksum: sha256 of the canonical JSON of its four container fields."""
    section = {key: container.get(key) for key in ("entrypoint", "image", "tag", "checksum")}
    return hashlib.sha256(canonical_json(section).encode()).hexdigest()


def seal_files(encryption_public_key_hex: str, files: Sequence[Mapping[str, Any]]) -> str:
    """File locations sealed for the provider (NaCl sealed box to its Curve25519 key): 0x + hex."""
    box = SealedBox(PublicKey(bytes.fromhex(encryption_public_key_hex.removeprefix("0x"))))
    return "0x" + box.encrypt(canonical_json(list(files)).encode()).hex()


@dataclass(frozen=True)
class FileToPublish:
    """One file: the location the provider gets (sealed) and the sha256 of its bytes."""

    location: dict[str, Any]
    sha256: str


@dataclass(frozen=True)
class PreparedAsset:
    """What publishing needs: the DDO to sign (files sealed) and what a dataset's trust list needs."""

    did: str
    salt: str
    ddo: dict[str, Any]
    service_id: str
    files_checksum: str = ""  # algorithms: what a dataset's trusted-algorithm entry pins
    container_checksum: str = ""
    files: tuple[FileToPublish, ...] = field(default=(), repr=False)


def _sha256_of_url(url: str, headers: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise InvalidDescription(f"cannot read {url} to compute its sha256: {exc}", "files") from None
    return digest.hexdigest()


def resolve_file(entry: Any, base_dir: Path) -> FileToPublish:
    """A description's file entry as a location with its checksum (reads or downloads it)."""
    spec: dict[str, Any] = (
        {"url": entry} if isinstance(entry, str) else dict(entry) if isinstance(entry, Mapping) else {}
    )
    target = spec.get("url") or spec.get("path")
    if not isinstance(target, str) or not target:
        raise InvalidDescription(f"a file entry must be a path, a URL or {{url: ...}}, got {entry!r}", "files")
    checksum = str(spec.get("checksum", "")).lower().removeprefix("sha256:")
    headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
    if target.startswith(("http://", "https://")):
        digest = checksum or _sha256_of_url(target, headers)
        location: dict[str, Any] = {"type": "url", "url": target}
        if headers:
            location["headers"] = headers
    elif target.startswith(("s3://", "ipfs://")):
        if not checksum:
            raise InvalidDescription(f"{target}: give its checksum (sha256 hex): it cannot be read from here", "files")
        kind = target.split(":", 1)[0]
        location = {"type": "s3", "url": target} if kind == "s3" else {"type": "ipfs", "cid": target[len("ipfs://") :]}
        digest = checksum
    else:
        path = (base_dir / target).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidDescription(f"cannot read {path}: {exc.strerror}", "files") from None
        if len(data) > INLINE_LIMIT_BYTES:
            raise InvalidDescription(
                f"{path} has {len(data)} bytes; local files up to {INLINE_LIMIT_BYTES} are carried inline: "
                "publish a larger file by its URL, S3 or IPFS location",
                "files",
            )
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidDescription(
                f"{path} is not UTF-8 text: publish a binary file by its URL, S3 or IPFS location", "files"
            ) from None
        digest = hashlib.sha256(data).hexdigest()
        location = {"type": "raw", "content": content}
    location["checksum"] = digest
    return FileToPublish(location, digest)


def _text(description: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = description.get(key, default)
    if not isinstance(value, str) or not value:
        raise InvalidDescription(f"{key} must be a non-empty string", key)
    return value


def _compute_policy(description: Mapping[str, Any], trusted: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    compute = description.get("compute") or {}
    if not isinstance(compute, Mapping):
        raise InvalidDescription("compute must be a mapping", "compute")
    publishers = compute.get("trusted_publishers") or []
    if not isinstance(publishers, list) or not all(isinstance(p, str) for p in publishers):
        raise InvalidDescription("compute.trusted_publishers must be a list of addresses", "compute.trusted_publishers")
    return {
        "allowRawAlgorithm": bool(compute.get("allow_raw_algorithm", False)),
        "allowNetworkAccess": bool(compute.get("allow_network", False)),
        "publisherTrustedAlgorithms": [
            {"did": t["did"], "filesChecksum": t["files_checksum"], "containerSectionChecksum": t["container_checksum"]}
            for t in trusted
        ],
        "publisherTrustedAlgorithmPublishers": publishers,
    }


def trusted_algorithm_entries(description: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The dataset's compute.trusted_algorithms, each as {did, files_checksum?, container_checksum?}."""
    compute = description.get("compute") or {}
    entries = compute.get("trusted_algorithms") or [] if isinstance(compute, Mapping) else []
    if not isinstance(entries, list):
        raise InvalidDescription("compute.trusted_algorithms must be a list", "compute.trusted_algorithms")
    return [dict(e) if isinstance(e, Mapping) else {"did": e} for e in entries]


def prepare_asset(
    description: Mapping[str, Any],
    owner: str,
    salt: str,
    encryption_public_key: str,
    service_endpoint: str,
    base_dir: Path = Path("."),
    trusted_algorithms: Sequence[Mapping[str, str]] = (),
) -> PreparedAsset:
    """The DDO of a description: checksums computed, files sealed for the provider.

    ``trusted_algorithms`` are a dataset's complete entries {did, files_checksum, container_checksum}
    (the client completes the description's own from the algorithms' DDOs)."""
    asset_type = description.get("type")
    if asset_type not in SERVICE_OF_TYPE:
        raise InvalidDescription("type must be dataset or algorithm", "type")
    raw_files = description.get("files")
    if not isinstance(raw_files, list) or not raw_files:
        raise InvalidDescription("files must be a non-empty list of paths or URLs", "files")
    files = tuple(resolve_file(entry, base_dir) for entry in raw_files)
    did = derive_did(owner, salt)
    service_id = SERVICE_OF_TYPE[asset_type]
    timeout = description.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise InvalidDescription("timeout must be a non-negative number of seconds", "timeout")
    metadata: dict[str, Any] = {
        "type": asset_type,
        "name": _text(description, "name"),
        "author": _text(description, "author", owner),
        "license": _text(description, "license", "unknown"),
    }
    if description.get("description"):
        metadata["description"] = str(description["description"])
    service: dict[str, Any] = {
        "id": service_id,
        "type": service_id,
        "files": seal_files(encryption_public_key, [f.location for f in files]),
        "timeout": timeout,
        "datatokenAddress": datatoken_address(did, service_id),
        "serviceEndpoint": service_endpoint,
    }
    algorithm_checksums: dict[str, str] = {}
    if asset_type == "algorithm":
        container = description.get("container")
        if not isinstance(container, Mapping) or not all(
            isinstance(container.get(k), str) for k in ("entrypoint", "image", "tag", "checksum")
        ):
            raise InvalidDescription(
                "an algorithm needs container: {entrypoint, image, tag, checksum}"
                " (checksum: the image's sha256 digest)",
                "container",
            )
        section = {k: container[k] for k in ("entrypoint", "image", "tag", "checksum")}
        metadata["algorithm"] = {"language": str(description.get("language", "")), "container": section}
        if description.get("parameters"):
            metadata["algorithm"]["consumerParameters"] = description["parameters"]
        algorithm_checksums = {
            "files_checksum": files_checksum([f.sha256 for f in files]),
            "container_checksum": container_checksum(section),
        }
    else:
        service["compute"] = _compute_policy(description, trusted_algorithms)
    ddo = {"id": did, "version": DDO_VERSION, "metadata": metadata, "services": [service]}
    return PreparedAsset(did, salt, ddo, service_id, files=files, **algorithm_checksums)
