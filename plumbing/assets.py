"""The asset rules that services must agree on: DID syntax and the checksums that pin an algorithm.

The provider checks DDOs and trusted-algorithm entries with these functions,
and pod_config checks the workflow it stages with the same ones: a pin the
provider accepts is one pod_config can verify, and an input pod_config would
refuse never gets past the provider. (Ocean's status numbers, the other thing
they share, are plumbing/statuses.py.)

One syntax for every sha256 digest c2d reads (a filesChecksum, a
containerSectionChecksum, a file's checksum): exactly 64 lowercase hex
digits. No "sha256:" prefix (that spelling belongs to the container image
digest, which is hashed as written), no surrounding whitespace, no uppercase:
what is compared is what was written, so nothing is normalised on one side
and not on the other.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

DID_PREFIX = "did:op:"
DID_SYNTAX = "did:op: followed by 64 lowercase hex digits"
SHA256_SYNTAX = "64 lowercase hex digits"

# Where an asset's files may come from; both the provider (sealing them) and
# pod_config (fetching them) know exactly these.
FILE_SOURCE_TYPES = ("url", "s3", "ipfs", "raw")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_DID = re.compile(re.escape(DID_PREFIX) + _SHA256_HEX.pattern)


def is_did(value: object) -> bool:
    """True if ``value`` is ``did:op:`` followed by 64 lowercase hex digits."""
    return isinstance(value, str) and _DID.fullmatch(value) is not None


def did_id(did: str) -> str:
    """The 64 hex digits after ``did:op:``: a job's /data/inputs/<id> and /data/ddos/<id>.

    Raises ValueError for anything that is not a DID: callers check ``is_did``
    first and refuse with their own error.
    """
    if not is_did(did):
        raise ValueError(f"{did!r} is not a DID ({DID_SYNTAX})")
    return did[len(DID_PREFIX) :]


def is_sha256_hex(value: object) -> bool:
    """True if ``value`` is a sha256 digest as c2d writes it: 64 lowercase hex digits."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def files_checksum(sha256_hexes: Sequence[str]) -> str:
    """The filesChecksum of an algorithm, as a dataset's trusted-algorithm entry pins it.

    sha256 (lowercase hex) of the ASCII concatenation of the per-file sha256
    digests, in the files' index order, with no separator: for two files with
    digests a and b, ``sha256((a + b).encode()).hexdigest()``. The publisher
    computes it when trusting an algorithm; pod_config recomputes it over the
    bytes it downloaded. Raises ValueError for a digest not in ``SHA256_SYNTAX``.
    """
    if isinstance(sha256_hexes, str):
        raise ValueError("sha256_hexes must be a sequence of digests, not one string")
    for index, digest in enumerate(sha256_hexes):
        if not is_sha256_hex(digest):
            raise ValueError(f"sha256_hexes[{index}] must be {SHA256_SYNTAX}, got {digest!r}")
    return hashlib.sha256("".join(sha256_hexes).encode("ascii")).hexdigest()


class ContainerSection(Protocol):
    """An algorithm's container section: the provider's dataclass and the protobuf message both fit."""

    @property
    def entrypoint(self) -> str: ...

    @property
    def image(self) -> str: ...

    @property
    def tag(self) -> str: ...

    @property
    def checksum(self) -> str: ...


CONTAINER_SECTION_FIELDS = ("checksum", "entrypoint", "image", "tag")


def container_checksum(container: ContainerSection | Mapping[str, Any]) -> str:
    """The containerSectionChecksum of an algorithm's container section.

    sha256 hex of the section's canonical JSON: exactly the four keys
    ``checksum``, ``entrypoint``, ``image``, ``tag`` (other keys are ignored),
    sorted, with compact separators and non-ASCII written as itself in UTF-8,
    e.g. ``{"checksum":"sha256:…","entrypoint":"python $ALGO","image":"python","tag":"3.11"}``.
    Changing the image, tag, digest or entrypoint of a trusted algorithm
    breaks the trust. Raises ValueError if one of the four is not a string.
    """
    if isinstance(container, Mapping):
        section = {key: container.get(key) for key in CONTAINER_SECTION_FIELDS}
    else:
        section = {key: getattr(container, key) for key in CONTAINER_SECTION_FIELDS}
    missing = [key for key, value in section.items() if not isinstance(value, str)]
    if missing:
        raise ValueError(f"container section needs string {', '.join(missing)}")
    text = json.dumps(section, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
