"""Objects in an S3-compatible bucket: AWS S3, Cloudflare R2 or MinIO (aioboto3).

Uploads below `part_size` are one PutObject; larger ones are a multipart upload this module
drives itself (not `upload_fileobj`, whose unequal parts R2 rejects): every part but the last is
exactly `part_size` bytes, read from the source in order, at most `max_concurrency` in flight,
each sent in slices (so asyncio never buffers a second copy of it), so memory stays near
`(max_concurrency + 1) * part_size`. Any failure or cancellation aborts the
upload, so no half-written object or orphaned parts are left behind.

Each byte is read once: as a part is read, its SHA-256 is computed (sent with the part, so the
store verifies it on receipt) and the whole object's SHA-256 is fed in order. The store keeps
the composite checksum (SHA-256 over the parts' binary digests, `<base64>-<parts>`; a single
PUT keeps the object's own SHA-256), so confirm() asks the store for it (HeadObject with
ChecksumMode) instead of downloading the object again. These are explicit checksums, sent as
plain `x-amz-checksum-sha256` headers: botocore's automatic checksum trailers stay off (they
break R2). A store that answers 501 NotImplemented to them is used without them from then on,
and confirm() falls back to reading the object back.

Downloads into a seekable target are parallel ranged GETs of `part_size` bytes, at most
`max_concurrency` in flight, each written at its offset in slices of CHUNK_SIZE (memory stays
near `max_concurrency * CHUNK_SIZE`); every answer must be a 206 whose Content-Range and length
are exactly the range asked for, and ranges after the first must still match the first's ETag.

The client is configured for the lowest common denominator of the three providers (SigV4,
checksums only when required, path-style for custom endpoints) with bounded timeouts and
retries, so an outage fails in seconds instead of hanging. Credentials live only inside the
client session: they never appear in repr(), error messages or log lines.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import hashlib
import logging
import math
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from api import faults
from api.storage.base import (
    CHUNK_SIZE,
    CONFIRMED_BY_CHECKSUM,
    CONFIRMED_BY_DOWNLOAD,
    ObjectInfo,
    StorageError,
    Stored,
    check_key,
    check_prefix,
    content_disposition,
    ensure_exhausted,
    read_exactly,
    write_all,
)

log = logging.getLogger("nexus_backup.storage")

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PARTS = 10_000  # S3's maximum number of parts in one upload
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days
CONNECT_TIMEOUT = 5  # seconds to open a connection
READ_TIMEOUT = 60  # seconds without a byte from the server
CREATE_WAIT_SECONDS = 5  # a cancelled upload waits this long for its id, to abort it
# botocore's Config `max_attempts` counts retries after the first try (its
# `total_max_attempts` would count the first): 3 retries, so at most 4 attempts per request.
MAX_RETRIES = 3
MAX_ATTEMPTS = MAX_RETRIES + 1
PROVIDERS = ("s3", "r2", "minio")

_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "Forbidden",
    "403",
    "Unauthorized",
    "401",
}
_WRONG_REGION = {"AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraint"}
_MISSING_OBJECT = {"NoSuchKey", "404", "NotFound"}

_Part = dict[str, Any]
T = TypeVar("T")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_SHA256_BYTES = 32


def detect_provider(endpoint: str | None) -> str:
    """ "r2" for Cloudflare R2 endpoints, "s3" for AWS (no endpoint, or *.amazonaws.com), and
    "minio" for any other S3-compatible endpoint."""
    if endpoint is None or not endpoint.strip():
        return "s3"
    text = endpoint.strip()
    host = (urlsplit(text if "://" in text else f"https://{text}").hostname or "").lower()
    if host.endswith(".r2.cloudflarestorage.com"):
        return "r2"
    if host == "amazonaws.com" or host.endswith(".amazonaws.com"):
        return "s3"
    return "minio"


def client_config(provider: str) -> Config:
    """botocore settings every client of `provider` uses (pure; pinned by a unit test)."""
    if provider not in PROVIDERS:
        raise StorageError(f"unknown storage provider {provider!r}: use one of {PROVIDERS}")
    return Config(
        signature_version="s3v4",
        # botocore's default CRC trailers (aws-chunked uploads) break R2 and older MinIO.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # AWS prefers virtual-hosted buckets; MinIO needs path-style; R2 accepts both and a
        # path keeps dotted bucket names valid under its TLS certificate.
        s3={"addressing_style": "virtual" if provider == "s3" else "path"},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"max_attempts": MAX_RETRIES, "mode": "standard"},
        # The endpoint comes from our settings only, never from AWS_ENDPOINT_URL* or ~/.aws.
        ignore_configured_endpoint_urls=True,
        user_agent_extra="nexus-backup",
    )


class S3Storage:
    """One bucket (optionally under a key prefix) of an S3-compatible service."""

    def __init__(
        self,
        endpoint: str | None,
        bucket: str,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        provider: str,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = 4,
        prefix: str = "",
        checksums: bool = True,
    ) -> None:
        if provider not in PROVIDERS:
            raise StorageError(f"unknown storage provider {provider!r}: use one of {PROVIDERS}")
        if part_size < MIN_PART_SIZE:
            raise StorageError(
                f"part size {part_size} is below S3's minimum of {MIN_PART_SIZE} bytes (5 MiB)"
            )
        if max_concurrency < 1:
            raise StorageError("max_concurrency must be at least 1")
        if not bucket:
            raise StorageError("no bucket given: set BACKUP_S3_BUCKET")
        self.name = provider
        self.endpoint = _check_endpoint(endpoint)
        self.bucket = bucket
        self.region = _signing_region(provider, region)
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        cleaned = check_prefix(prefix.strip("/"))
        self.prefix = f"{cleaned}/" if cleaned else ""
        self._config = client_config(provider)
        self._session = aioboto3.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=self.region,
        )
        self._background: set[asyncio.Task[None]] = set()
        self.list_page_size = 1000  # keys per ListObjectsV2 page (S3's maximum)
        # Send SHA-256 checksums for the store to verify and keep; turned off for good once
        # the store answers 501 NotImplemented to them.
        self.checksums = checksums

    def __repr__(self) -> str:
        return (
            f"S3Storage(provider={self.name!r}, endpoint={self.endpoint!r}, "
            f"bucket={self.bucket!r}, region={self.region!r}, prefix={self.prefix!r})"
        )

    __str__ = __repr__

    @property
    def where(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region})"

    # -- protocol -----------------------------------------------------------------------

    async def put(self, key: str, source: BinaryIO, size: int) -> Stored:
        name = self._name(key)
        if size < 0:
            raise StorageError(f"cannot upload {key}: negative size {size}")
        part_size = self._part_size_for(size)
        with self._errors("upload", key):
            async with self._client() as client:
                if size < part_size:
                    return await self._put_single(client, name, source, size)
                return await self._put_multipart(client, key, name, source, size, part_size)

    async def get(self, key: str, target: BinaryIO) -> int:
        if not _seekable(target):
            # A stream: one GET, written in order.
            async def write(data: bytes) -> None:
                await asyncio.to_thread(write_all, target, data)

            return await self._download(key, write)
        start = target.tell()
        lock = threading.Lock()

        def write_at(offset: int, data: bytes) -> None:
            with lock:
                target.seek(start + offset)
                write_all(target, data)

        written = await self._download_ranges(key, write_at)
        target.seek(start + written)
        return written

    async def confirm(self, key: str, stored: Stored) -> str:
        name = self._name(key)
        with self._errors("confirm", key):
            async with self._client() as client:
                try:
                    head = await client.head_object(
                        Bucket=self.bucket, Key=name, ChecksumMode="ENABLED"
                    )
                except ClientError as exc:
                    if _status(exc) != 404:
                        raise
                    await self._check_bucket(client)
                    raise StorageError(
                        f"the uploaded object {key} is missing from bucket {self.bucket} at "
                        f"{self.where}"
                    ) from None
        size = int(head.get("ContentLength", -1))
        if size != stored.size:
            raise StorageError(
                f"the uploaded object {key} has {size} bytes at {self.where}, not the "
                f"{stored.size} sent"
            )
        remote = head.get("ChecksumSHA256")
        if stored.checksum is not None and remote:
            _compare_checksums(key, self.where, str(remote), stored)
            return CONFIRMED_BY_CHECKSUM
        log.info(
            "%s kept no SHA-256 checksum of %s: reading it back to confirm it", self.where, key
        )
        digest = await self.sha256(key)
        if digest != stored.sha256:
            raise StorageError(
                f"the uploaded object {key} has SHA-256 {digest} at {self.where}, not "
                f"{stored.sha256} as sent"
            )
        return CONFIRMED_BY_DOWNLOAD

    async def stat(self, key: str) -> ObjectInfo | None:
        name = self._name(key)
        with self._errors("inspect", key):
            async with self._client() as client:
                try:
                    head = await client.head_object(Bucket=self.bucket, Key=name)
                except ClientError as exc:
                    if _status(exc) != 404:
                        raise
                    # A HEAD answer has no body, so a missing bucket is a bare 404 as well.
                    await self._check_bucket(client)
                    return None
        return ObjectInfo(
            key=key, size=int(head["ContentLength"]), modified=_utc(head.get("LastModified"))
        )

    async def delete(self, key: str) -> None:
        name = self._name(key)
        with self._errors("delete", key):
            async with self._client() as client:
                await client.delete_object(Bucket=self.bucket, Key=name)

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        check_prefix(prefix)
        found: builtins.list[ObjectInfo] = []
        with self._errors("list", f"the objects under {prefix}" if prefix else "the objects"):
            async with self._client() as client:
                pages = client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket,
                    Prefix=self.prefix + prefix,
                    PaginationConfig={"PageSize": self.list_page_size},
                )
                async for page in pages:
                    for item in page.get("Contents", []):
                        found.append(
                            ObjectInfo(
                                key=item["Key"][len(self.prefix) :],
                                size=int(item["Size"]),
                                modified=_utc(item.get("LastModified")),
                            )
                        )
        found.sort(key=lambda info: info.key)
        return found

    async def presign_get(
        self, key: str, expires_seconds: int, filename: str | None = None
    ) -> str | None:
        name = self._name(key)
        if not 1 <= expires_seconds <= MAX_PRESIGN_SECONDS:
            raise StorageError(
                f"a download link must expire within 1 s to 7 days, not {expires_seconds} s"
            )
        params: dict[str, str] = {"Bucket": self.bucket, "Key": name}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        with self._errors("make a download link for", key):
            async with self._client() as client:
                url = await client.generate_presigned_url(
                    "get_object", Params=params, ExpiresIn=expires_seconds
                )
        return str(url)

    async def sha256(self, key: str) -> str:
        digest = hashlib.sha256()

        async def feed(data: bytes) -> None:
            digest.update(data)

        await self._download(key, feed)
        return digest.hexdigest()

    # -- multipart ------------------------------------------------------------------------

    def _part_size_for(self, size: int) -> int:
        """The configured part size, grown (in whole MiB) only if the object would otherwise
        need more than S3's 10,000 parts. Every part but the last has exactly this size."""
        needed = math.ceil(size / MAX_PARTS / MiB) * MiB
        return max(self.part_size, needed)

    async def _put_single(self, client: Any, name: str, source: BinaryIO, size: int) -> Stored:
        data, digest = await asyncio.to_thread(_read_whole, source, size)
        checksum = _b64(digest)
        if self.checksums:
            try:
                await client.put_object(
                    Bucket=self.bucket,
                    Key=name,
                    Body=_Body(data),
                    ContentLength=size,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )
                return Stored(size=size, sha256=digest.hex(), checksum=checksum)
            except ClientError as exc:
                if not _not_implemented(exc):
                    raise
                self._refuse_checksums(exc)
        await client.put_object(
            Bucket=self.bucket,
            Key=name,
            Body=_Body(data),
            ContentLength=size,
            ContentMD5=_md5(data),
        )
        return Stored(size=size, sha256=digest.hex())

    async def _put_multipart(
        self, client: Any, key: str, name: str, source: BinaryIO, size: int, part_size: int
    ) -> Stored:
        creating = asyncio.ensure_future(self._create_upload(client, name))
        try:
            upload_id, checksums = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # Cancelled (a shutdown) while the store was opening the upload: once it answers,
            # the upload it opened is aborted too, so no incomplete upload is left behind.
            await asyncio.wait({creating}, timeout=CREATE_WAIT_SECONDS)
            if creating.done() and not creating.cancelled() and creating.exception() is None:
                await self._abort(key, name, creating.result()[0])
            else:
                creating.cancel()
            raise
        whole = hashlib.sha256()
        try:
            parts = await self._upload_parts(
                client, name, upload_id, source, size, part_size, whole, checksums
            )
            await client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await self._abort(key, name, upload_id)
            raise
        composite = None
        if checksums:
            digests = b"".join(base64.b64decode(part["ChecksumSHA256"]) for part in parts)
            composite = f"{_b64(hashlib.sha256(digests).digest())}-{len(parts)}"
        return Stored(size=size, sha256=whole.hexdigest(), checksum=composite)

    async def _create_upload(self, client: Any, name: str) -> tuple[str, bool]:
        """Start a multipart upload (with SHA-256 part checksums unless the store refused
        them); returns its id and whether parts carry checksums."""
        if self.checksums:
            try:
                created = await client.create_multipart_upload(
                    Bucket=self.bucket, Key=name, ChecksumAlgorithm="SHA256"
                )
                return str(created["UploadId"]), True
            except ClientError as exc:
                if not _not_implemented(exc):
                    raise
                self._refuse_checksums(exc)
        created = await client.create_multipart_upload(Bucket=self.bucket, Key=name)
        return str(created["UploadId"]), False

    def _refuse_checksums(self, exc: ClientError) -> None:
        self.checksums = False
        log.warning(
            "%s does not implement SHA-256 checksums (%s): uploading without them; syncs to it "
            "are confirmed by reading each object back",
            self.where,
            _code(exc),
        )

    async def _upload_parts(
        self,
        client: Any,
        name: str,
        upload_id: str,
        source: BinaryIO,
        size: int,
        part_size: int,
        whole: Any,
        checksums: bool,
    ) -> builtins.list[_Part]:
        parts: builtins.list[_Part] = []
        pending: set[asyncio.Task[_Part]] = set()
        try:
            number, offset = 0, 0
            while offset < size:
                length = min(part_size, size - offset)
                data, digest = await asyncio.to_thread(_read_part, source, length, whole, checksums)
                number, offset = number + 1, offset + length
                upload = self._upload_part(client, name, upload_id, number, data, digest, checksums)
                pending.add(asyncio.create_task(upload))
                del data  # the task holds the only reference: freed once the part is sent
                if len(pending) >= self.max_concurrency:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    parts.extend(_results(done))
            await asyncio.to_thread(ensure_exhausted, source, size)
            await _drain(pending, parts)
        finally:
            await _cancel(pending)
        parts.sort(key=lambda part: int(part["PartNumber"]))
        return parts

    async def _upload_part(
        self,
        client: Any,
        name: str,
        upload_id: str,
        number: int,
        data: bytes,
        digest: bytes,
        checksums: bool,
    ) -> _Part:
        """Upload one part with its SHA-256 (or, without checksums, its MD5) for the store to
        verify on receipt."""
        check: dict[str, str] = (
            {"ChecksumSHA256": _b64(digest)} if checksums else {"ContentMD5": _b64(digest)}
        )
        response = await client.upload_part(
            Bucket=self.bucket,
            Key=name,
            UploadId=upload_id,
            PartNumber=number,
            Body=_Body(data),
            ContentLength=len(data),
            **check,
        )
        part: _Part = {"PartNumber": number, "ETag": response["ETag"]}
        faults.point("sync.mid_upload")
        if checksums:
            echoed = response.get("ChecksumSHA256")
            if echoed and echoed != check["ChecksumSHA256"]:
                raise StorageError(
                    f"{self.where} acknowledged part {number} of {name} with SHA-256 {echoed}, "
                    f"not the {check['ChecksumSHA256']} sent; the upload was abandoned"
                )
            part["ChecksumSHA256"] = check["ChecksumSHA256"]
        return part

    async def _abort(self, key: str, name: str, upload_id: str) -> None:
        """Abort a multipart upload with a fresh client, shielded from a second cancellation
        (the abort then finishes in the background). Never raises: the caller re-raises the
        failure that made it abort."""

        async def abort() -> None:
            try:
                async with self._client() as client:
                    await client.abort_multipart_upload(
                        Bucket=self.bucket, Key=name, UploadId=upload_id
                    )
                log.info("aborted the multipart upload of %s to %s", key, self.where)
            except ClientError as exc:
                if _code(exc) != "NoSuchUpload":
                    log.warning(
                        "could not abort the multipart upload of %s (%s): %s; a lifecycle rule "
                        "for incomplete multipart uploads on bucket %s will remove its parts",
                        key,
                        upload_id,
                        _code(exc),
                        self.bucket,
                    )
            except (BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "could not abort the multipart upload of %s (%s): %s; a lifecycle rule "
                    "for incomplete multipart uploads on bucket %s will remove its parts",
                    key,
                    upload_id,
                    type(exc).__name__,
                    self.bucket,
                )

        task = asyncio.create_task(abort())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            raise

    # -- helpers --------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        async with self._session.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region, config=self._config
        ) as client:
            yield client

    async def _check_bucket(self, client: Any) -> None:
        try:
            await client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _status(exc) == 404:
                raise StorageError(self._no_bucket()) from None
            raise

    async def _download(self, key: str, sink: Callable[[bytes], Awaitable[None]]) -> int:
        name = self._name(key)
        with self._errors("download", key):
            async with self._client() as client:
                response = await client.get_object(Bucket=self.bucket, Key=name)
                body = response["Body"]
                expected = response.get("ContentLength")
                written = 0
                async with body:
                    while chunk := await body.read(CHUNK_SIZE):
                        await sink(chunk)
                        written += len(chunk)
        if expected is not None and written != int(expected):
            raise StorageError(
                f"the download of {key} from {self.where} stopped after {written} of "
                f"{expected} bytes; try again"
            )
        return written

    async def _download_ranges(self, key: str, write_at: Callable[[int, bytes], None]) -> int:
        """Download the object in ranges of `part_size` bytes, at most `max_concurrency` in
        flight, each written at its offset through `write_at`; returns the object's size."""
        name = self._name(key)
        part = self.part_size
        with self._errors("download", key):
            async with self._client() as client:
                try:
                    first = await client.get_object(
                        Bucket=self.bucket, Key=name, Range=f"bytes=0-{part - 1}"
                    )
                except ClientError as exc:
                    if _status(exc) != 416:
                        raise
                    # S3 answers 416 to any range of an empty object: read it whole, in order.
                    return await self._download(key, _in_order(write_at))
                if _http_status(first) == 200:
                    # The whole object in one answer: fine only if it is no larger than the
                    # range asked for (moto answers an empty object so).
                    length = int(first.get("ContentLength", -1))
                    if not 0 <= length <= part:
                        await _close(first)
                        raise StorageError(self._ignored_range(key, 0, part - 1, length))
                    return await self._write_body(key, first, 0, length, write_at)
                try:
                    total = self._check_range(key, first, 0, part - 1, None)
                except StorageError:
                    await _close(first)
                    raise
                etag = first.get("ETag")
                first_length = min(part, total)
                pending: set[asyncio.Task[int]] = {
                    asyncio.create_task(self._write_body(key, first, 0, first_length, write_at))
                }
                written: builtins.list[int] = []
                try:
                    for offset in range(part, total, part):
                        end = min(offset + part, total) - 1
                        fetch = self._get_range(
                            client, key, name, offset, end, total, etag, write_at
                        )
                        pending.add(asyncio.create_task(fetch))
                        if len(pending) >= self.max_concurrency:
                            done, pending = await asyncio.wait(
                                pending, return_when=asyncio.FIRST_COMPLETED
                            )
                            written.extend(_results(done))
                    await _drain(pending, written)
                finally:
                    await _cancel(pending)
        if sum(written) != total:
            raise StorageError(
                f"the download of {key} from {self.where} stopped after {sum(written)} of "
                f"{total} bytes; try again"
            )
        return total

    async def _get_range(
        self,
        client: Any,
        key: str,
        name: str,
        start: int,
        end: int,
        total: int,
        etag: str | None,
        write_at: Callable[[int, bytes], None],
    ) -> int:
        condition = {"IfMatch": etag} if etag else {}
        response = await client.get_object(
            Bucket=self.bucket, Key=name, Range=f"bytes={start}-{end}", **condition
        )
        try:
            status = _http_status(response)
            if status != 206:
                length = int(response.get("ContentLength", -1))
                raise StorageError(self._ignored_range(key, start, end, length, status))
            self._check_range(key, response, start, end, total)
        except StorageError:
            await _close(response)
            raise
        return await self._write_body(key, response, start, end - start + 1, write_at)

    def _check_range(self, key: str, response: Any, start: int, end: int, total: int | None) -> int:
        """The object's total size from a 206 answer to `bytes=start-end`, after checking that
        its Content-Range and Content-Length are exactly that range (clipped to the object's
        end) of an object of `total` bytes (when known)."""
        header = str(response.get("ContentRange") or "")
        match = _CONTENT_RANGE.fullmatch(header.strip())
        asked = f"bytes {start}-{end} of {key}"
        if match is None:
            raise StorageError(
                f"{self.where} answered a request for {asked} without a valid Content-Range "
                f"({header!r}); refused the download"
            )
        first, last, size = (int(value) for value in match.groups())
        if total is not None and size != total:
            raise StorageError(
                f"{self.where} answered a request for {asked} as part of a {size}-byte object, "
                f"but it had {total} bytes; refused the download"
            )
        if first != start or last != min(end, size - 1) or last < first:
            raise StorageError(
                f"{self.where} answered a request for {asked} with bytes {first}-{last}; "
                "refused the download"
            )
        length = int(response.get("ContentLength", -1))
        if length != last - first + 1:
            raise StorageError(
                f"{self.where} answered a request for {asked} with a body of {length} bytes, "
                f"not {last - first + 1}; refused the download"
            )
        return size

    def _ignored_range(self, key: str, start: int, end: int, length: int, status: int = 200) -> str:
        return (
            f"{self.where} answered HTTP {status} with {length} bytes to a request for bytes "
            f"{start}-{end} of {key}: it ignored the Range header; refused the download"
        )

    async def _write_body(
        self,
        key: str,
        response: Any,
        offset: int,
        length: int,
        write_at: Callable[[int, bytes], None],
    ) -> int:
        """Write `length` bytes of a response body at `offset`, in slices of CHUNK_SIZE."""
        written = 0
        body = response["Body"]
        async with body:
            while chunk := await body.read(CHUNK_SIZE):
                if written + len(chunk) > length:
                    raise StorageError(
                        f"{self.where} sent more than the {length} bytes announced at offset "
                        f"{offset} of {key}; refused the download"
                    )
                await asyncio.to_thread(write_at, offset + written, chunk)
                written += len(chunk)
        if written != length:
            raise StorageError(
                f"the download of {key} from {self.where} stopped after {written} of {length} "
                f"bytes at offset {offset}; try again"
            )
        return written

    def _no_bucket(self) -> str:
        return (
            f"bucket {self.bucket} does not exist at {self.where}: check BACKUP_S3_BUCKET "
            "and BACKUP_S3_ENDPOINT"
        )

    @contextlib.contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        """Turn botocore/aiohttp failures into a StorageError that says what to check.
        Cancellation and StorageError pass through unchanged."""
        try:
            yield
        except StorageError:
            raise
        except ClientError as exc:
            raise StorageError(self._explain(action, key, exc)) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StorageError(
                "no usable S3 credentials: set BACKUP_S3_ACCESS_KEY_ID and "
                "BACKUP_S3_SECRET_ACCESS_KEY"
            ) from exc
        except (ConnectionError, HTTPClientError, aiohttp.ClientError, TimeoutError) as exc:
            raise StorageError(
                f"cannot reach {self.where} to {action} {key}: {_describe(exc)}; check "
                f"BACKUP_S3_ENDPOINT and the network (gave up after {MAX_ATTEMPTS} attempts)"
            ) from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot {action} {key} at {self.where}: {_describe(exc)}") from exc

    def _explain(self, action: str, key: str, exc: ClientError) -> str:
        code, status = _code(exc), _status(exc)
        if code == "NoSuchBucket":
            return self._no_bucket()
        if code in _DENIED or status in (401, 403):
            return (
                f"access denied: {self.where} refused to {action} {key} in bucket {self.bucket} "
                f"({code}); check BACKUP_S3_ACCESS_KEY_ID/BACKUP_S3_SECRET_ACCESS_KEY and that "
                "the key may use this bucket"
            )
        if code in _WRONG_REGION or status == 301:
            return (
                f"bucket {self.bucket} at {self.where} is in another region than {self.region} "
                f"({code}): check BACKUP_S3_REGION"
            )
        if code in _MISSING_OBJECT or status == 404:
            return f"object {key} not found in bucket {self.bucket} at {self.where}"
        if code == "PreconditionFailed" or status == 412:
            return f"object {key} at {self.where} was replaced while it was read; try again"
        if status >= 500:
            return (
                f"{self.where} failed to {action} {key}: {code} (HTTP {status}) after "
                f"{MAX_ATTEMPTS} attempts; the storage service may be having an outage, try "
                "again later"
            )
        message = str(exc.response.get("Error", {}).get("Message") or "")
        return f"cannot {action} {key} at {self.where}: {code} (HTTP {status}) {message}".strip()


# -- module helpers -------------------------------------------------------------------------


def _check_endpoint(endpoint: str | None) -> str | None:
    if endpoint is None or not endpoint.strip():
        return None
    text = endpoint.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StorageError(
            f"BACKUP_S3_ENDPOINT must be an http(s) URL such as https://host:9000, not {text!r}"
        )
    if parts.username or parts.password:
        raise StorageError("BACKUP_S3_ENDPOINT must not contain credentials")
    return text


def _signing_region(provider: str, region: str) -> str:
    """R2 signs with "auto"; AWS and MinIO need a real region name, us-east-1 by default."""
    region = (region or "").strip()
    if provider == "r2":
        return region or "auto"
    return "us-east-1" if region in ("", "auto") else region


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "Unknown")


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _utc(value: object) -> datetime | None:
    """botocore's timestamps carry dateutil zones (tzutc, tzlocal): normalise to UTC."""
    return value.astimezone(UTC) if isinstance(value, datetime) else None


class _Body:
    """A part's bytes as a request body that is sent in CHUNK_SIZE slices, each once the
    connection has taken the previous one. Handed over whole, a body is copied into asyncio's
    write buffer for whatever the socket does not take at once (Python 3.11), doubling the
    memory of every part in flight. botocore reads and rewinds it (signing, retries) through
    read/seek/tell; aiohttp sends it by iterating."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._position + size
        piece = bytes(self._data[self._position : end])
        self._position += len(piece)
        return piece

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: len(self._data)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def __len__(self) -> int:
        return len(self._data)

    async def __aiter__(self) -> AsyncIterator[memoryview]:
        for start in range(0, len(self._data), CHUNK_SIZE):
            yield self._data[start : start + CHUNK_SIZE]


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _md5(data: bytes) -> str:
    return _b64(hashlib.md5(data, usedforsecurity=False).digest())


def _read_part(source: BinaryIO, length: int, whole: Any, checksums: bool) -> tuple[bytes, bytes]:
    """Read the next part; feed it to the whole object's SHA-256 (parts are read in order) and
    return it with its own digest: SHA-256, or MD5 when the store takes no checksums."""
    data = read_exactly(source, length)
    whole.update(data)
    if checksums:
        return data, hashlib.sha256(data).digest()
    return data, hashlib.md5(data, usedforsecurity=False).digest()


def _read_whole(source: BinaryIO, size: int) -> tuple[bytes, bytes]:
    data = read_exactly(source, size)
    ensure_exhausted(source, size)
    return data, hashlib.sha256(data).digest()


def _compare_checksums(key: str, where: str, remote: str, stored: Stored) -> None:
    """Raise StorageError unless the store's SHA-256 checksum `remote` is the one expected for
    the bytes sent: the same digest and, for a composite (`<base64>-<parts>`), the same number
    of parts (a store may leave the count off, as GetObjectAttributes does). The SHA-256 of the
    whole object is accepted as well, for stores that keep that of a multipart upload."""
    assert stored.checksum is not None
    expected = stored.checksum
    value, _, parts = remote.strip().partition("-")
    want, _, want_parts = expected.partition("-")
    whole = _b64(bytes.fromhex(stored.sha256))
    try:
        readable = len(base64.b64decode(value, validate=True)) == _SHA256_BYTES
    except ValueError:
        readable = False
    if not readable or (parts and not parts.isdigit()):
        raise StorageError(f"{where} reported an unreadable SHA-256 checksum {remote!r} for {key}")
    if want_parts and parts and int(parts) != int(want_parts):
        raise StorageError(
            f"{where} reports {key} as {parts} parts, but it was uploaded in {want_parts}: the "
            "stored object is not the one sent"
        )
    if not want_parts and parts:
        raise StorageError(
            f"{where} reports {key} as a {parts}-part upload, but it was sent in one request: "
            "the stored object is not the one sent"
        )
    if value not in (want, whole):
        raise StorageError(
            f"{where} reports SHA-256 checksum {remote} for {key}, but the bytes sent give "
            f"{expected}: the stored object is not the one sent"
        )


def _not_implemented(exc: ClientError) -> bool:
    return _status(exc) == 501 or _code(exc) == "NotImplemented"


def _http_status(response: Any) -> int:
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _seekable(target: BinaryIO) -> bool:
    try:
        return bool(target.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _in_order(write_at: Callable[[int, bytes], None]) -> Callable[[bytes], Awaitable[None]]:
    """A sink for one sequential stream, writing each slice after the previous one."""
    offset = 0

    async def sink(data: bytes) -> None:
        nonlocal offset
        await asyncio.to_thread(write_at, offset, data)
        offset += len(data)

    return sink


async def _close(response: Any) -> None:
    """Release the connection of a response whose body will not be read."""
    with contextlib.suppress(Exception):
        response["Body"].close()


async def _drain(pending: set[asyncio.Task[T]], results: builtins.list[T]) -> None:
    """Wait for every task, collecting results into `results`; stop at the first failure."""
    while pending:
        done, remaining = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
        pending.clear()
        pending.update(remaining)
        results.extend(_results(done))


async def _cancel(pending: set[asyncio.Task[T]]) -> None:
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


def _results(done: set[asyncio.Task[T]]) -> builtins.list[T]:
    """Results of finished tasks; raises the first failure after retrieving all, so no task
    exception goes unobserved."""
    failures = [task.exception() for task in done if not task.cancelled()]
    for failure in failures:
        if failure is not None:
            raise failure
    return [task.result() for task in done]
