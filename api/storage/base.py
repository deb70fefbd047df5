"""The storage protocol every backend implements, and the key rules they share.

A backend is a flat namespace of objects addressed by keys: '/'-separated relative paths such as
`nightly/2026-01-01.tar.gz`. Objects are written whole (a reader never sees a partial object),
streamed in and out through file objects with bounded memory, listed by prefix, and deleted
idempotently. `local` and `s3` pass one shared contract test suite (tests/test_storage.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol, runtime_checkable
from urllib.parse import quote

# A storage failure is an AppError (503 in the API, one line in the CLI); defined with the
# other errors and re-exported here, where every backend imports it from.
from api.errors import StorageError as StorageError

# Streaming copies move data in slices of this size (downloads, local copies, hashing).
CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime | None


@dataclass(frozen=True)
class Stored:
    """What put() sent, measured as the bytes streamed past (each byte read once).

    `sha256` is the hex SHA-256 of every byte read from the source. `checksum` is the SHA-256
    checksum the store was asked to verify on receipt and keep, as S3 spells it: the base64
    digest of the whole object for one PUT, or the composite `<base64>-<parts>` (the SHA-256 of
    the parts' binary digests, concatenated in part order) for a multipart upload; None when
    the backend keeps no checksum of its own (local files, or a store that refused them)."""

    size: int
    sha256: str
    checksum: str | None = None


# How confirm() established that the stored object holds the bytes put() sent.
CONFIRMED_BY_CHECKSUM = "checksum"  # the store's own checksum matched; nothing downloaded
CONFIRMED_BY_DOWNLOAD = "download"  # the object was read back and hashed


@runtime_checkable
class Storage(Protocol):
    name: str  # "local", "s3", "r2", "minio"

    async def put(self, key: str, source: BinaryIO, size: int) -> Stored:
        """Store exactly `size` bytes read from `source` (opened for reading) under `key`,
        replacing any object there. The object becomes visible only once complete. Returns
        the SHA-256 of the bytes sent (and the store's checksum of them, if it keeps one)."""
        ...

    async def get(self, key: str, target: BinaryIO) -> int:
        """Write the object into `target` from its current position; return the number of
        bytes written. A seekable target may be written out of order (parallel ranges); on
        failure it holds part of the object, so callers write to a temporary name."""
        ...

    async def confirm(self, key: str, stored: Stored) -> str:
        """Confirm that the object under `key` holds the bytes that put() reported as `stored`:
        from the store's own checksum when it keeps one (CONFIRMED_BY_CHECKSUM), else by
        reading the object back and hashing it (CONFIRMED_BY_DOWNLOAD). Returns which; raises
        StorageError when the object differs or is missing."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None:
        """The object's size and modification time, or None when it does not exist."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error."""
        ...

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with `prefix`, sorted by key."""
        ...

    async def presign_get(
        self, key: str, expires_seconds: int, filename: str | None = None
    ) -> str | None:
        """A URL that downloads the object without credentials until it expires, or None when
        the backend cannot make one (local)."""
        ...

    async def sha256(self, key: str) -> str:
        """Hex SHA-256 of the stored bytes, computed by streaming the object back."""
        ...


async def confirm_by_download(storage: Storage, key: str, stored: Stored) -> str:
    """confirm() for a backend without checksums of its own: the size, then the SHA-256 of the
    object read back in full."""
    info = await storage.stat(key)
    if info is None:
        raise StorageError(f"the stored object {key} is missing right after it was written")
    if info.size != stored.size:
        raise StorageError(
            f"the stored object {key} has {info.size} bytes, not the {stored.size} sent"
        )
    remote = await storage.sha256(key)
    if remote != stored.sha256:
        raise StorageError(
            f"the stored object {key} has SHA-256 {remote}, not {stored.sha256} as sent"
        )
    return CONFIRMED_BY_DOWNLOAD


def check_key(key: str) -> str:
    """Return `key` if it is a safe object key, else raise StorageError.

    Safe: non-empty, relative ('/'-separated, no leading '/'), no empty, '.' or '..' segments,
    no NUL, other control character or backslash."""
    if not isinstance(key, str) or not key:
        raise StorageError("refused an empty storage key")
    if "\x00" in key:
        raise StorageError(f"refused storage key {key!r}: it contains a NUL character")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise StorageError(f"refused storage key {key!r}: it contains a control character")
    if "\\" in key:
        raise StorageError(f"refused storage key {key!r}: use '/' to separate folders")
    if key.startswith("/"):
        raise StorageError(f"refused storage key {key!r}: keys are relative paths, not absolute")
    for segment in key.split("/"):
        if segment == "..":
            raise StorageError(f"refused storage key {key!r}: it contains '..'")
        if segment in ("", "."):
            raise StorageError(f"refused storage key {key!r}: it has an empty or '.' segment")
    return key


def check_prefix(prefix: str) -> str:
    """Return `prefix` if it is a safe listing prefix ('' lists everything)."""
    if prefix == "":
        return prefix
    if "\x00" in prefix or "\\" in prefix or prefix.startswith("/"):
        raise StorageError(f"refused storage prefix {prefix!r}: use a relative '/' path")
    if ".." in prefix.split("/"):
        raise StorageError(f"refused storage prefix {prefix!r}: it contains '..'")
    return prefix


def read_exactly(source: BinaryIO, size: int) -> bytes:
    """Read `size` bytes from `source`, never asking for more than `size` at once; raises
    StorageError if the source ends early."""
    pieces: list[bytes] = []
    missing = size
    while missing:
        piece = source.read(missing)
        if not piece:
            raise StorageError(f"the source ended {missing} bytes before its declared size")
        pieces.append(piece)
        missing -= len(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def ensure_exhausted(source: BinaryIO, size: int) -> None:
    """Raise StorageError if `source` holds more than the declared `size` bytes."""
    if source.read(1):
        raise StorageError(f"the source holds more than the declared {size} bytes")


def write_all(target: BinaryIO, data: bytes) -> None:
    """Write all of `data`, looping over short writes (raw, unbuffered files)."""
    view = memoryview(data)
    while view:
        written = target.write(view)
        if written is None:  # a non-blocking raw stream that is not ready
            raise StorageError("the target file would block; pass a blocking file object")
        view = view[written:]


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the exact name per RFC 6266/5987."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1] or "download"
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"%;' else "_" for c in name)
    header = f'attachment; filename="{fallback}"'
    if fallback != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header
