"""Results storage in an S3 bucket through the minio SDK."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from plumbing.storage.base import (
    ChunkStream,
    HashingReader,
    ObjectNotFound,
    SizedDownload,
    StorageConfig,
    StorageError,
    StoredObject,
    check_key,
    check_prefix,
)

PREFIX = "s3://"
MIN_PART_SIZE = 5 << 20  # S3's floor for every part but the last
_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
}
_TRANSIENT_CODES = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "ServerBusy"}


def parse_s3_location(location: str) -> tuple[str, str]:
    if not location.startswith(PREFIX):
        raise StorageError(f"location {location!r} is not an s3:// location")
    bucket, sep, key = location[len(PREFIX) :].partition("/")
    if not bucket or not sep or not key:
        raise StorageError(f"location {location!r} must be s3://bucket/key")
    return bucket, key


def make_client(config: StorageConfig, connect_timeout: float = 5.0, read_timeout: float = 120.0) -> Minio:
    if not config.s3_endpoint:
        raise StorageError("S3 storage needs an endpoint (host:port)")
    if "://" in config.s3_endpoint:
        raise StorageError(f"S3 endpoint {config.s3_endpoint!r} must be host:port, without a scheme")
    # fewer retries than minio's default (5) so an unreachable server fails in
    # about a second, and explicit timeouts so a dead server cannot hang a job
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        maxsize=8,
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(
        config.s3_endpoint,
        access_key=config.s3_access_key or None,
        secret_key=config.s3_secret_key or None,
        secure=config.s3_secure,
        region=config.s3_region or None,
        http_client=http,
    )


def _refine_not_found(client: Minio, endpoint: str, error: StorageError, bucket: str, action: str) -> StorageError:
    # a HEAD answers 404 without a body, so minio calls a missing bucket NoSuchKey too
    if isinstance(error, ObjectNotFound):
        try:
            if not client.bucket_exists(bucket):
                return StorageError(f"bucket {bucket!r} does not exist at S3 endpoint {endpoint} ({action})")
        except (MinioException, urllib3.exceptions.HTTPError, OSError):
            pass
    return error


def translate(exc: BaseException, endpoint: str, bucket: str, key: str | None, action: str) -> StorageError:
    """Maps minio/urllib3 failures to StorageError; messages name bucket and key, never credentials."""
    where = f"s3://{bucket}/{key}" if key else f"bucket {bucket!r}"
    if isinstance(exc, S3Error):
        code = exc.code or "Error"
        if code == "NoSuchBucket":
            return StorageError(f"bucket {bucket!r} does not exist at S3 endpoint {endpoint} ({action})")
        if code in ("NoSuchKey", "NoSuchObject"):
            return ObjectNotFound(f"no object at {where}")
        if code in _AUTH_CODES:
            hint = {
                "InvalidAccessKeyId": "the access key is unknown to the server",
                "SignatureDoesNotMatch": "the secret key is wrong",
                "AccessDenied": "access denied: wrong credentials or no permission",
            }.get(code, "credentials refused")
            return StorageError(f"S3 at {endpoint} refused the credentials while {action} {where}: {code} ({hint})")
        return StorageError(
            f"S3 error while {action} {where}: {code}: {exc.message}", transient=code in _TRANSIENT_CODES
        )
    if isinstance(exc, ServerError):
        return StorageError(f"S3 server error while {action} {where}: HTTP {exc.status_code}", transient=True)
    if isinstance(exc, InvalidResponseError):
        return StorageError(f"S3 at {endpoint} sent an invalid response while {action} {where}", transient=True)
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        reason = getattr(exc, "reason", None) or exc
        return StorageError(
            f"cannot reach S3 at {endpoint} while {action} {where}: {type(reason).__name__}", transient=True
        )
    return StorageError(f"S3 failure while {action} {where}: {type(exc).__name__}: {exc}")


class S3Store:
    kind = "s3"

    def __init__(self, config: StorageConfig) -> None:
        if not config.s3_bucket:
            raise StorageError("S3 storage needs a bucket name")
        if config.part_size < MIN_PART_SIZE:
            raise StorageError(f"S3 part_size must be at least {MIN_PART_SIZE} bytes, got {config.part_size}")
        self.config = config
        self.bucket = config.s3_bucket
        self.endpoint = config.s3_endpoint
        self.client = make_client(config)

    def _fail(self, exc: BaseException, bucket: str, key: str | None, action: str) -> StorageError:
        return translate(exc, self.endpoint, bucket, key, action)

    def _check_bucket(self, key: str) -> None:
        # a GET listing (not HEAD) so auth failures come back with their S3 error code;
        # servers like SeaweedFS would otherwise create the bucket on first upload
        try:
            next(iter(self.client.list_objects(self.bucket, prefix=key)), None)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            raise self._fail(e, self.bucket, key, "checking the bucket for") from e

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> StoredObject:
        check_key(key)
        content_type = content_type or mimetypes.guess_type(key)[0] or "application/octet-stream"
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the with-block below
        except FileNotFoundError as e:
            raise StorageError(f"cannot upload {path}: file not found") from e
        with f:
            size = os.fstat(f.fileno()).st_size
            self._check_bucket(key)
            reader = HashingReader(f)
            try:
                # one part in flight: memory stays at about part_size. minio
                # aborts the multipart upload itself when a part fails.
                self.client.put_object(
                    self.bucket,
                    key,
                    reader,  # type: ignore[arg-type]  # minio only calls read(n), as on the BinaryIO it is typed to take
                    length=size,
                    content_type=content_type,
                    part_size=self.config.part_size,
                    num_parallel_uploads=1,
                )
            except OSError as e:
                if "not enough data" in str(e):
                    # minio's short-read check: the file shrank; minio aborted the upload
                    raise StorageError(f"{path} changed size while being uploaded to s3://{self.bucket}/{key}") from e
                raise self._fail(e, self.bucket, key, "uploading") from e
            except (MinioException, urllib3.exceptions.HTTPError, ValueError) as e:
                raise self._fail(e, self.bucket, key, "uploading") from e
            if reader.count != size or f.read(1):
                # the file grew: what was stored is a prefix; do not record it
                self._remove_quietly(self.bucket, key)
                raise StorageError(f"{path} changed size while being uploaded to s3://{self.bucket}/{key}")
        return StoredObject(location=f"{PREFIX}{self.bucket}/{key}", size=size, sha256=reader.sha256.hexdigest())

    def _remove_quietly(self, bucket: str, key: str) -> None:
        try:
            self.client.remove_object(bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError):
            pass

    def read(self, location: str, offset: int = 0, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        bucket, key = parse_s3_location(location)
        if offset < 0:
            raise StorageError(f"negative offset {offset} for {location}")
        try:
            # Range: bytes=offset- ; offset 0 is a plain GET (works for empty objects)
            response = self.client.get_object(bucket, key, offset=offset)
        except S3Error as e:
            if e.code == "InvalidRange" and offset == self.size(location):
                return iter(())  # reading from the very end: nothing left
            if e.code == "InvalidRange":
                raise StorageError(f"offset {offset} is past the end of {location}") from e
            raise self._fail(e, bucket, key, "reading") from e
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            raise self._fail(e, bucket, key, "reading") from e

        def release() -> None:
            response.close()
            response.release_conn()

        return ChunkStream(self._chunks(response, chunk_size, bucket, key), release)

    def _chunks(self, response: urllib3.BaseHTTPResponse, chunk_size: int, bucket: str, key: str) -> Iterator[bytes]:
        try:
            yield from response.stream(chunk_size)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise self._fail(e, bucket, key, "reading") from e

    def size(self, location: str) -> int:
        bucket, key = parse_s3_location(location)
        try:
            return int(self.client.stat_object(bucket, key).size or 0)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            error = _refine_not_found(self.client, self.endpoint, self._fail(e, bucket, key, "stat of"), bucket, "stat")
            raise error from e

    def delete(self, location: str) -> None:
        bucket, key = parse_s3_location(location)
        try:
            self.client.remove_object(bucket, key)  # S3 DELETE is idempotent
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchObject"):
                return
            raise self._fail(e, bucket, key, "deleting") from e
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            raise self._fail(e, bucket, key, "deleting") from e

    def delete_prefix(self, key_prefix: str) -> int:
        check_prefix(key_prefix)
        count = 0
        try:
            batch: list[DeleteObject] = []
            for obj in self.client.list_objects(self.bucket, prefix=key_prefix, recursive=True):
                batch.append(DeleteObject(obj.object_name))
                if len(batch) == 1000:  # S3's DeleteObjects limit
                    count += self._delete_batch(batch, key_prefix)
                    batch = []
            if batch:
                count += self._delete_batch(batch, key_prefix)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            raise self._fail(e, self.bucket, key_prefix, "deleting prefix") from e
        return count

    def _delete_batch(self, batch: list[DeleteObject], key_prefix: str) -> int:
        # remove_objects is lazy: iterating it sends the request and yields failures
        errors = list(self.client.remove_objects(self.bucket, batch))
        if errors:
            first = errors[0]
            raise StorageError(
                f"{len(errors)} objects under s3://{self.bucket}/{key_prefix} could not be deleted; "
                f"first: {first.name}: {first.code}"
            )
        return len(batch)


def download_s3(
    config: StorageConfig,
    bucket: str,
    key: str,
    dest: Path,
    max_bytes: int | None,
    *,
    on_size: Callable[[int], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
    chunk_bytes: int = 1 << 20,
    durable: bool = True,
    timeouts: tuple[float, float] = (5.0, 120.0),
) -> tuple[int, str]:
    """Streams s3://bucket/key into dest (atomic rename); returns (size, sha256 hex).

    Refuses objects over max_bytes, by their declared size before downloading
    and again while streaming, so a lying server cannot fill the disk.
    `on_size(declared)` is called once before the download and `on_chunk(n)`
    before each block is written (e.g. to charge a byte budget shared by
    concurrent downloads); either may raise to stop: the partial file is
    removed and their exception propagates unchanged. `chunk_bytes` bounds the
    memory one download holds; `durable=False` skips the fsync before the rename;
    `timeouts` are the (connect, idle read) timeouts in seconds.
    """
    client = make_client(config, *timeouts)
    what = f"s3://{bucket}/{key}"
    sink = SizedDownload(dest, max_bytes, what)
    response = None
    try:
        try:
            stat = client.stat_object(bucket, key)
            sink.check_declared_size(int(stat.size or 0))
            if on_size is not None:
                on_size(int(stat.size or 0))
            response = client.get_object(bucket, key)
            # decode_content=False: the object's bytes as stored, each block straight
            # from the socket (decoding would pass every block through another buffer).
            for block in response.stream(chunk_bytes, decode_content=False):
                if on_chunk is not None:
                    on_chunk(len(block))
                sink.write(block)
        except StorageError:
            raise
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            error = translate(e, config.s3_endpoint, bucket, key, "downloading")
            raise _refine_not_found(client, config.s3_endpoint, error, bucket, "downloading") from e
        return sink.commit(durable)
    except BaseException:
        sink.discard()
        raise
    finally:
        if response is not None:
            response.close()
            response.release_conn()
