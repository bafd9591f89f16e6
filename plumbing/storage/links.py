"""Links that read one stored result straight from its storage (the provider's GetComputeResultLink).

S3: a presigned GET of exactly that object, signed for the endpoint consumers
reach (`s3_public_endpoint`), valid for `ttl_s` seconds. The URL carries the
access key's id and a signature over this bucket, key and expiry, never the
secret: change the key and the signature no longer holds. IPFS: the CID, and
a gateway URL when a gateway is configured (content addressing: it does not
expire, and whoever knows the CID can fetch it from the network anyway).
Local storage has no link: consumers stream through the provider.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from urllib.parse import urlsplit

from minio import Minio

from plumbing.storage.base import StorageConfig, StorageError, check_key
from plumbing.storage.ipfs import PREFIX as IPFS_PREFIX
from plumbing.storage.ipfs import parse_cid
from plumbing.storage.s3 import PREFIX as S3_PREFIX
from plumbing.storage.s3 import parse_s3_location

MAX_TTL_S = 7 * 24 * 3600  # S3's limit for a presigned URL
LOCAL_REASON = "the results are in the provider's local storage: stream them through the provider (GetComputeResult)"


@dataclass(frozen=True)
class Link:
    url: str  # "" when the storage offers none
    expires_at: datetime.datetime | None  # None: does not expire
    cid: str  # IPFS only
    no_link_reason: str  # why url is "", for people


def _endpoint(text: str, secure: bool) -> tuple[str, bool]:
    """(host:port, secure) of an endpoint given as host:port or http(s)://host:port."""
    if "://" not in text:
        return text, secure
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
        raise StorageError(f"S3 public endpoint {text!r} must be host:port or http(s)://host:port")
    return parts.netloc, parts.scheme == "https"


def _gateway(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise StorageError(f"IPFS gateway {text!r} must be an http(s):// base URL, e.g. https://ipfs.io")
    return text.rstrip("/")


class ResultLinks:
    """Makes the link of a result location. Signing is local (no request to
    the storage), so the public endpoint need not be reachable from here."""

    def __init__(self, config: StorageConfig, ttl_s: int) -> None:
        if not 1 <= ttl_s <= MAX_TTL_S:
            raise StorageError(f"a result link's lifetime must be 1 to {MAX_TTL_S} seconds, got {ttl_s}")
        self.ttl_s = ttl_s
        self._bucket = config.s3_bucket
        self._gateway = _gateway(config.ipfs_gateway) if config.ipfs_gateway else ""
        self._signer: Minio | None = None
        if config.kind == "s3":
            host, secure = _endpoint(config.s3_public_endpoint or config.s3_endpoint, config.s3_secure)
            # the region is part of the signature; without one minio would ask the server for it
            self._signer = Minio(
                host,
                access_key=config.s3_access_key or None,
                secret_key=config.s3_secret_key or None,
                secure=secure,
                region=config.s3_region or "us-east-1",
            )

    def link(self, location: str, now: datetime.datetime | None = None) -> Link:
        if location.startswith(S3_PREFIX):
            # whole seconds: the URL's X-Amz-Date has no fraction
            return self._s3(location, (now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0))
        if location.startswith(IPFS_PREFIX):
            cid = str(parse_cid(location).set(version=1).encode("base32"))
            if not self._gateway:
                return Link("", None, cid, "no IPFS gateway is configured: fetch the CID from IPFS, or stream it")
            return Link(f"{self._gateway}/ipfs/{cid}", None, cid, "")
        return Link("", None, "", LOCAL_REASON)

    def _s3(self, location: str, now: datetime.datetime) -> Link:
        bucket, key = parse_s3_location(location)
        check_key(key)
        if self._signer is None or bucket != self._bucket:
            # never sign for a bucket the provider was not given (a forged location)
            raise StorageError(f"{location} is not in this provider's results bucket")
        ttl = datetime.timedelta(seconds=self.ttl_s)
        url = self._signer.presigned_get_object(bucket, key, expires=ttl, request_date=now)
        return Link(url, now + ttl, "", "")
