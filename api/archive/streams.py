"""Small stream stages: hash what passes, compress, decompress. Each byte is read once."""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Callable
from typing import BinaryIO, cast

import zstandard

from api.config import Compression

CHUNK = 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_LEVEL = 6
ZSTD_LEVEL = 3


class HashingWriter(io.RawIOBase):
    """Writes through to `target`, hashing and counting every byte."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self.sha256 = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        self._target.write(view)
        self.sha256.update(view)
        self.count += len(view)
        return len(view)

    def flush(self) -> None:
        self._target.flush()


class HashingReader(io.RawIOBase):
    """Reads from `source`, hashing and counting every byte handed out."""

    def __init__(self, source: BinaryIO, on_read: Callable[[int], None] | None = None) -> None:
        self._source = source
        self._on_read = on_read
        self.sha256 = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._source.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self.sha256.update(data)
        self.count += size
        if self._on_read is not None and size:
            self._on_read(size)
        return size

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.sha256.update(data)
        self.count += len(data)
        if self._on_read is not None and data:
            self._on_read(len(data))
        return data

    def drain(self) -> None:
        """Read to the end, so that the hash covers the whole source."""
        while self.read(CHUNK):
            pass


def compressor(target: BinaryIO, compression: Compression) -> BinaryIO:
    """A writer that compresses into `target`; closing it finishes the stream, not `target`."""
    if compression is Compression.zstd:
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1, write_checksum=True)
        writer = compressor.stream_writer(target, closefd=False)
        return cast(BinaryIO, writer)
    return cast(
        BinaryIO, gzip.GzipFile(fileobj=target, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
    )


def detect_compression(head: bytes) -> Compression:
    if head.startswith(GZIP_MAGIC):
        return Compression.gzip
    if head.startswith(ZSTD_MAGIC):
        return Compression.zstd
    raise ValueError("not a .tar.gz or .tar.zst archive (unknown file signature)")


class ZstdReader(io.RawIOBase):
    """Decompresses zstd frames one after another; a stream that ends inside a frame raises
    EOFError (zstandard's own stream reader reports a clean end instead)."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame = self._decompressor.decompressobj()
        self._pending = b""
        self._in_frame = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            data = self._source.read(CHUNK)
            if not data:
                if self._in_frame:
                    raise EOFError("the zstd stream ends in the middle of a frame")
                return 0
            while data:
                self._in_frame = True
                self._pending += self._frame.decompress(data)
                if not self._frame.eof:
                    break
                data = self._frame.unused_data
                self._frame = self._decompressor.decompressobj()
                self._in_frame = False
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def decompressor(source: BinaryIO, compression: Compression) -> BinaryIO:
    if compression is Compression.zstd:
        return cast(BinaryIO, io.BufferedReader(ZstdReader(source), CHUNK))
    return cast(BinaryIO, gzip.GzipFile(fileobj=source, mode="rb"))


def suffix_for(compression: Compression) -> str:
    return ".tar.zst" if compression is Compression.zstd else ".tar.gz"


def sha256_file(path: str | bytes, chunk: int = CHUNK) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
