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


@runtime_checkable
class Storage(Protocol):
    name: str  # "local", "s3", "r2", "minio"

    async def put(self, key: str, source: BinaryIO, size: int) -> None:
        """Store exactly `size` bytes read from `source` (opened for reading) under `key`,
        replacing any object there. The object becomes visible only once complete."""
        ...

    async def get(self, key: str, target: BinaryIO) -> int:
        """Stream the object into `target`; return the number of bytes written."""
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
