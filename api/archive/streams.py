"""Small stream stages: hash what passes, compress, decompress. Each byte is read once.

Compression runs on every core: gzip as independent members compressed by libdeflate in worker
threads (`ParallelGzipWriter`), zstd with its own worker threads. Decompression is ISA-L's
(gzip) or libzstd's, one block at a time.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, cast

import deflate
import zstandard
from isal import igzip

from api.config import Compression

CHUNK = 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_SKIPPABLE_MAGIC = 0x184D2A50  # skippable frames: 0x184D2A50..0x184D2A5F (RFC 8878 3.1.2)
ZSTD_SKIPPABLE_MASK = 0xFFFFFFF0
ZSTD_MAX_BLOCK = 128 * 1024  # Block_Maximum_Size: no block holds or yields more (RFC 8878)
ZSTD_MAX_WINDOW = 1 << 25  # 32 MiB: what zstd levels 1-20 use; --long and -21/-22 need more
GZIP_LEVEL = 6
ZSTD_LEVEL = 3
ZSTD_JOB = 2 * 1024 * 1024  # input per zstd worker job: bounds its buffers (default 4x window)
GZIP_BLOCK = 4 * 1024 * 1024  # input per gzip member: the window restarts 1 time in 128
LEVELS = {Compression.gzip: range(1, 10), Compression.zstd: range(1, 20)}


@dataclass(frozen=True)
class Codec:
    """A compression and its level: what a backup's archive is written with."""

    compression: Compression = Compression.gzip
    level: int | None = None  # None: the compression's default

    @property
    def effective_level(self) -> int:
        if self.level is not None:
            return self.level
        return ZSTD_LEVEL if self.compression is Compression.zstd else GZIP_LEVEL


# A safety backup is written fast: it is taken while a restore waits, of data about to be
# replaced, and is kept only until the operator knows the restore was right.
SAFETY_CODEC = Codec(Compression.zstd, 1)


def workers() -> int:
    """Compression threads: one per core this process may use."""
    return max(1, len(os.sched_getaffinity(0)))


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


class ParallelGzipWriter(io.RawIOBase):
    """gzip as a series of members (RFC 1952 2.2), one per 4 MiB of input, each compressed by
    libdeflate in a worker thread and written to `target` in order.

    Every gzip reader (gzip -d, tar xzf, Python's gzip) reads a multi-member file as one
    stream. libdeflate at level 6 compresses smaller than zlib's (and so gzip's) level 6, and
    the cores work in parallel. Memory: at most `workers + 1` blocks in flight, in and out.
    Closing finishes the stream, not `target`; `discard()` drops what is in flight.
    """

    def __init__(self, target: BinaryIO, level: int, threads: int | None = None) -> None:
        self._target = target
        self._level = level
        threads = threads or workers()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gzip")
        self._in_flight: deque[Future[bytearray]] = deque()
        self._limit = threads + 1
        self._buffer = bytearray()
        self._members = 0
        self._finished = False

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        self._buffer += view
        while len(self._buffer) >= GZIP_BLOCK:
            block = bytes(memoryview(self._buffer)[:GZIP_BLOCK])
            del self._buffer[:GZIP_BLOCK]
            self._submit(block)
        return len(view)

    def _submit(self, block: bytes) -> None:
        while len(self._in_flight) >= self._limit:
            self._target.write(self._in_flight.popleft().result())
        self._in_flight.append(self._pool.submit(deflate.gzip_compress, block, self._level))
        self._members += 1

    def close(self) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            if self._buffer or not self._members:
                self._submit(bytes(self._buffer))
                self._buffer.clear()
            while self._in_flight:
                self._target.write(self._in_flight.popleft().result())
        finally:
            self.discard()
            super().close()

    def discard(self) -> None:
        """Stop without writing what is in flight (the archive is being thrown away)."""
        self._finished = True
        for future in self._in_flight:
            future.cancel()
        self._in_flight.clear()
        self._pool.shutdown(wait=True)


def compressor(target: BinaryIO, codec: Codec) -> BinaryIO:
    """A writer that compresses into `target`; closing it finishes the stream, not `target`."""
    if codec.compression is Compression.zstd:
        params = zstandard.ZstdCompressionParameters.from_level(
            codec.effective_level,
            threads=workers(),
            job_size=ZSTD_JOB,
            write_checksum=True,
        )
        compressor = zstandard.ZstdCompressor(compression_params=params)
        writer = compressor.stream_writer(target, closefd=False)
        return cast(BinaryIO, writer)
    return cast(BinaryIO, ParallelGzipWriter(target, codec.effective_level))


def detect_compression(head: bytes) -> Compression:
    if head.startswith(GZIP_MAGIC):
        return Compression.gzip
    if head.startswith(ZSTD_MAGIC):
        return Compression.zstd
    raise ValueError("not a .tar.gz or .tar.zst archive (unknown file signature)")


class StreamLimitError(ValueError):
    """The input is well formed but exceeds a bound this reader sets to keep memory bounded."""


def _zstd_window(rest: bytes, single_segment: bool, content_size_bytes: int) -> int:
    """Window_Size of a frame from its header after the descriptor byte (RFC 8878 3.1.1.1)."""
    if not single_segment:
        exponent, mantissa = rest[0] >> 3, rest[0] & 0x07
        base = 1 << (10 + exponent)
        return base + (base >> 3) * mantissa
    value = int.from_bytes(rest[len(rest) - content_size_bytes :], "little")
    return value + 256 if content_size_bytes == 2 else value


class ZstdReader(io.RawIOBase):
    """Decompresses zstd frames one after another, handing libzstd one block at a time.

    A block never decompresses to more than 128 KiB, so memory stays bounded whatever the
    compression ratio (1 GiB of zeros fits in 34 KB), and every byte is copied a fixed number of
    times. A stream that ends inside a frame raises EOFError (zstandard's own stream reader
    reports a clean end instead); libzstd checks everything else (block contents, checksums).
    """

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self._frame: zstandard.ZstdDecompressionObj | None = None
        self._checksum = False
        self._input = b""  # compressed bytes read ahead; those before _offset are used up
        self._offset = 0
        self._output = b""  # one block's output; those before _given were handed out
        self._given = 0
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._given >= len(self._output):
            if self._ended:
                return 0
            self._output, self._given = b"", 0
            self._advance()
        size = min(len(buffer), len(self._output) - self._given)
        buffer[:size] = memoryview(self._output)[self._given : self._given + size]
        self._given += size
        return size

    def _fill(self, size: int) -> bool:
        """Have at least `size` unused input bytes read ahead; False if the source ends first."""
        if len(self._input) - self._offset >= size:
            return True
        pending = bytearray(memoryview(self._input)[self._offset :])
        self._input, self._offset = b"", 0
        while len(pending) < size:
            data = self._source.read(max(CHUNK, size - len(pending)))
            if not data:
                self._input = bytes(pending)
                return False
            pending += data
        self._input = bytes(pending)
        return True

    def _take(self, size: int) -> memoryview:
        if not self._fill(size):
            raise EOFError("the zstd stream ends in the middle of a frame")
        start = self._offset
        self._offset += size
        return memoryview(self._input)[start : self._offset]

    def _skip(self, size: int) -> None:
        while size:
            step = min(size, CHUNK)
            self._take(step)
            size -= step

    def _advance(self) -> None:
        """Decompress the next frame header or block into `_output` (or skip a skippable frame)."""
        if self._frame is None:
            if not self._fill(1):
                self._ended = True
                return
            magic = int.from_bytes(self._take(4), "little")
            if magic & ZSTD_SKIPPABLE_MASK == ZSTD_SKIPPABLE_MAGIC:
                self._skip(int.from_bytes(self._take(4), "little"))
                return
            if magic != int.from_bytes(ZSTD_MAGIC, "little"):
                raise zstandard.ZstdError("data after the last zstd frame is not a zstd frame")
            descriptor = self._take(1)[0]
            single_segment = bool(descriptor & 0x20)
            content_size_bytes = ((1 if single_segment else 0), 2, 4, 8)[descriptor >> 6]
            size = (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 0x03]
            rest = bytes(self._take(size + content_size_bytes))
            window = _zstd_window(rest, single_segment, content_size_bytes)
            if window > ZSTD_MAX_WINDOW:
                raise StreamLimitError(
                    f"a zstd frame needs a {window >> 20} MiB window, more than the "
                    f"{ZSTD_MAX_WINDOW >> 20} MiB this reader allows: recompress it with zstd "
                    "level 19 or lower, without --long"
                )
            self._frame = self._decompressor.decompressobj()
            self._checksum = bool(descriptor & 0x04)
            self._output = self._frame.decompress(ZSTD_MAGIC + bytes([descriptor]) + rest)
            return
        if not self._fill(3):
            raise EOFError("the zstd stream ends in the middle of a frame")
        start = self._offset
        value = int.from_bytes(self._input[start : start + 3], "little")
        last, kind, size = value & 1, (value >> 1) & 3, value >> 3
        if kind == 3 or size > ZSTD_MAX_BLOCK:
            raise zstandard.ZstdError("a zstd block header is corrupt")
        length = 3 + (1 if kind == 1 else size) + (4 if last and self._checksum else 0)
        self._output = self._frame.decompress(self._take(length))
        if last:
            if not self._frame.eof:
                raise zstandard.ZstdError("a zstd frame does not end after its last block")
            self._frame = None


def decompressor(source: BinaryIO, compression: Compression) -> BinaryIO:
    if compression is Compression.zstd:
        return cast(BinaryIO, io.BufferedReader(ZstdReader(source), CHUNK))
    return cast(BinaryIO, igzip.GzipFile(fileobj=source, mode="rb"))  # type: ignore[no-untyped-call]


def suffix_for(compression: Compression) -> str:
    return ".tar.zst" if compression is Compression.zstd else ".tar.gz"


def sha256_file(path: str | bytes | os.PathLike[str], chunk: int = CHUNK) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
