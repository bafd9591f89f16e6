"""Which file locations a sealed file list may name, by who made it.

Sealing needs only the provider's public key, so anyone can seal anything:
a sealed list proves nothing about who wrote it. Each location is honoured
only for what its maker may name.

- A publisher's files (EncryptFiles, PublishAsset, UpdateAsset; opened again
  by StartCompute) are what pod_config fetches: "url" (http or https), "s3"
  (s3://bucket/key), "ipfs" (a CID) or "raw" (inline code). None of them may
  name this provider's results storage: no "local:" location (publishers
  declare no local roots: local storage is where results live, and
  pod_config fetches no local files), no key in the results bucket, and no
  "results" entry but one the provider issued (`check_publisher_file`).
- A results location is a capability only the provider issues, when a job's
  pod_publish registers its results (`issue_results_locations`): each entry
  is signed with the provider's Ed25519 key over the job, its owner, the
  asset's DID and the file. `open_results_location` honours an entry only
  with that signature and for that owner and DID; DownloadAssetFile then
  checks the job's own record too (its owner, its recorded results).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from plumbing import errors, storage
from plumbing.assets import FILE_SOURCE_TYPES

from . import identity, sealing
from .canonical import canonical_json_bytes

RESULTS_FILE_TYPE = "results"  # a location in this provider's results storage
LOCAL_PREFIX = "local:"  # how the local results storage names its files
# Domain separation: the same key signs grants and results statements.
_RESULTS_LOCATION_CONTEXT = b"c2d results location v1\n"


@dataclass(frozen=True)
class ResultsStorage:
    """Where this provider's results live, as far as a file location can name them."""

    kind: str  # "local" | "s3" | "ipfs"
    bucket: str = ""  # the results bucket when kind is "s3"

    def holds_bucket(self, bucket: str) -> bool:
        return self.kind == "s3" and bool(self.bucket) and bucket == self.bucket

    def holds(self, location: str, job_id: str) -> bool:
        """Whether `location` may be one of job `job_id`'s results here: in this
        storage, under the job's own prefix (storage.held_by_job). IPFS is
        content-addressed, with no prefix to check."""
        if self.kind == "ipfs":
            return location.startswith("ipfs://")
        if self.kind == "s3":
            return location.startswith("s3://") and storage.held_by_job(location, job_id, self.bucket)
        return location.startswith(LOCAL_PREFIX) and storage.held_by_job(location, job_id)


@dataclass(frozen=True)
class ResultsLocation:
    """A results location this provider issued, once its signature checked out."""

    job_id: str
    url: str  # the results storage location ("local:…", "s3://…", "ipfs://…")


# -- a publisher's files ----------------------------------------------------------


def check_publisher_file(entry: Mapping[str, Any], results: ResultsStorage, field: str) -> None:
    """Refuses a file location a publisher may not name (see the module's docstring)."""
    kind = entry.get("type", "")
    if kind == RESULTS_FILE_TYPE:
        raise _forged(field)
    if kind not in FILE_SOURCE_TYPES:
        raise errors.InvalidArgument(
            f"{field}.type {kind!r} is not one of {', '.join(FILE_SOURCE_TYPES)}",
            "file_type_invalid",
            field=f"{field}.type",
        )
    url = entry.get("url") or ""
    if not isinstance(url, str):
        raise errors.InvalidArgument(f"{field}.url must be a string", "file_url_invalid", field=f"{field}.url")
    if url.startswith(LOCAL_PREFIX):
        raise errors.PermissionDenied(
            f"{field} names a local: location: that is this provider's results storage, which no publisher's "
            "file may name (publish files by http(s) URL, S3 or IPFS)",
            "local_location_forbidden",
        )
    if kind == "url" and not url.startswith(("http://", "https://")):
        raise errors.InvalidArgument(
            f"{field}.url must be an http:// or https:// URL", "file_url_invalid", field=f"{field}.url"
        )
    if kind == "s3":
        bucket, _, key = url.removeprefix("s3://").partition("/")
        if not url.startswith("s3://") or not bucket or not key:
            raise errors.InvalidArgument(
                f"{field}.url must be s3://bucket/key", "file_url_invalid", field=f"{field}.url"
            )
        if results.holds_bucket(bucket):
            raise errors.PermissionDenied(
                f"{field} names the results bucket: results are read through their owner's job, never as a "
                "publisher's file",
                "results_storage_forbidden",
            )


def check_asset_files(
    keys: sealing.ProviderKeys,
    files: Sequence[Mapping[str, Any]],
    *,
    owner: str,
    did: str,
    results: ResultsStorage,
    field: str,
) -> bool:
    """Refuses an asset's opened file list if it names anything its publisher
    `owner` may not; True if its files are results locations this provider
    issued for `owner` and `did` (a results asset)."""
    issued = False
    for index, entry in enumerate(files):
        where = f"{field}[{index}]"
        if entry.get("type") == RESULTS_FILE_TYPE:
            open_results_location(keys, entry, owner=owner, did=did, field=where)
            issued = True
        else:
            check_publisher_file(entry, results, where)
    return issued


# -- results locations: issued by this provider only ------------------------------


def issue_results_locations(
    keys: sealing.ProviderKeys, *, job_id: str, owner: str, did: str, files: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """`files` (each with its storage location as "url") as results entries,
    each signed for this job, its owner and the asset `did`."""
    issued = []
    for file in files:
        claims = {
            **file,
            "type": RESULTS_FILE_TYPE,
            "job_id": job_id,
            "owner": identity.normalize_address(owner),
            "did": did,
        }
        signature = sealing.sign_bytes(keys, _RESULTS_LOCATION_CONTEXT + canonical_json_bytes(claims))
        issued.append({**claims, "signature": signature})
    return issued


def open_results_location(
    keys: sealing.ProviderKeys, entry: Mapping[str, Any], *, owner: str, did: str, field: str
) -> ResultsLocation:
    """The location of a results entry this provider issued for `owner` and
    `did`; PERMISSION_DENIED for any other (forged, tampered, or issued for
    another asset or owner)."""
    claims = {key: value for key, value in entry.items() if key != "signature"}
    signature = entry.get("signature")
    try:
        signed = canonical_json_bytes(claims)
    except (TypeError, ValueError):
        raise _forged(field) from None
    if not isinstance(signature, str) or not sealing.verify_bytes(
        keys.verify_key_hex, _RESULTS_LOCATION_CONTEXT + signed, signature
    ):
        raise _forged(field)
    if claims.get("did") != did or claims.get("owner") != identity.normalize_address(owner):
        raise errors.PermissionDenied(
            f"{field} is a results location this provider issued for another asset", "results_location_foreign"
        )
    return ResultsLocation(job_id=claims["job_id"], url=claims["url"])


def _forged(field: str) -> errors.PermissionDenied:
    return errors.PermissionDenied(
        f"{field} is a results location this provider did not issue: only the provider names results "
        "(a job's results asset), and a location sealed with its public key proves nothing",
        "results_location_forged",
    )
