"""The compressors: parallel gzip members read by every gzip reader, levels that apply, and the
archive a backup leaves is the one it hashed."""

from __future__ import annotations

import gzip
import io
import os
import random
import subprocess
import threading
import zlib
from pathlib import Path

import pytest
import zstandard
from pydantic import ValidationError

from api.archive.streams import (
    GZIP_BLOCK,
    SAFETY_CODEC,
    Codec,
    ParallelGzipWriter,
    compressor,
    decompressor,
)
from api.backups import runner
from api.config import Compression, Settings
from api.errors import SourceError
from api.states import BackupType


def _rows(size: int, seed: int = 5) -> bytes:
    """Like a dump's COPY data: ids, names, e-mails, amounts, dates, tab-separated."""
    rng = random.Random(seed)
    names = ["Ama Mensah", "John Doe", "Priya Patel", "Chen Wei", "Olu Ade", "Maria Silva"]
    out = bytearray()
    while len(out) < size:
        n = len(out)
        name = rng.choice(names)
        out += (
            f"{n}\t{name}\t{name.split()[0].lower()}{rng.randint(1, 999)}@example.com\t"
            f"{rng.randint(1, 99999) / 100:.2f}\t2026-{rng.randint(1, 12):02d}-"
            f"{rng.randint(1, 28):02d}\tinvoice {rng.randint(1000, 9999)} paid\n"
        ).encode()
    return bytes(out[:size])


def _text(size: int, seed: int = 7) -> bytes:
    """Compressible but not trivial: words in a seeded random order."""
    rng = random.Random(seed)
    words = [b"invoice", b"client", b"paid", b"2026-12-03", b"tax", b"nexus", b"upload", b"\n"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def _compress(data: bytes, codec: Codec, step: int = 300_000) -> bytes:
    sink = io.BytesIO()
    writer = compressor(sink, codec)
    for start in range(0, len(data), step):
        writer.write(data[start : start + step])
    writer.close()
    return sink.getvalue()


def _members(data: bytes) -> int:
    """How many gzip members follow one another in `data`."""
    count, rest = 0, data
    while rest:
        member = zlib.decompressobj(31)  # 31: one gzip member, header and trailer checked
        member.decompress(rest)
        assert member.eof, "a gzip member is cut short"
        rest, count = member.unused_data, count + 1
    return count


@pytest.mark.parametrize("size", [0, 1, GZIP_BLOCK - 1, GZIP_BLOCK, 2 * GZIP_BLOCK + 12345])
def test_parallel_gzip_round_trips_across_block_boundaries(size: int) -> None:
    data = _text(size)
    packed = _compress(data, Codec(Compression.gzip))
    assert gzip.decompress(packed) == data
    assert decompressor(io.BytesIO(packed), Compression.gzip).read() == data
    assert _members(packed) == max(1, -(-size // GZIP_BLOCK))


def test_parallel_gzip_is_read_by_gnu_tar_and_gzip(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "text.log").write_bytes(_text(3 * GZIP_BLOCK))
    (folder / "random.bin").write_bytes(os.urandom(GZIP_BLOCK + 99))
    tar = subprocess.run(
        ["tar", "cf", "-", "-C", str(folder), "."], capture_output=True, check=True
    )
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_compress(tar.stdout, Codec(Compression.gzip)))
    assert _members(archive.read_bytes()) > 1
    subprocess.run(["gzip", "-t", str(archive)], check=True)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "xzf", str(archive), "-C", str(out)], check=True)
    for name in ("text.log", "random.bin"):
        assert (out / name).read_bytes() == (folder / name).read_bytes()


def test_gzip_at_the_default_level_is_smaller_than_gnu_gzip_6_on_dump_rows(tmp_path: Path) -> None:
    # libdeflate's level 6 beats zlib's on SQL dumps, logs and JSON (5-15 %); docs/BENCHMARKS.md
    data = _rows(3 * GZIP_BLOCK) + os.urandom(100_000)
    source = tmp_path / "data"
    source.write_bytes(data)
    gnu = subprocess.run(["gzip", "-6", "-c", str(source)], capture_output=True, check=True)
    ours = _compress(data, Codec(Compression.gzip))
    assert len(ours) <= len(gnu.stdout)


@pytest.mark.parametrize("compression", list(Compression))
def test_the_level_setting_is_applied(compression: Compression) -> None:
    data = _text(2 * GZIP_BLOCK, seed=3)
    fast = _compress(data, Codec(compression, 1))
    small = _compress(data, Codec(compression, 9))
    assert len(small) < len(fast)
    for packed in (fast, small):
        assert decompressor(io.BytesIO(packed), compression).read() == data


def test_zstd_frames_record_the_level_and_a_checksum() -> None:
    packed = _compress(_text(100_000), Codec(Compression.zstd, 1))
    params = zstandard.get_frame_parameters(packed)
    assert params.has_checksum


def test_a_discarded_gzip_writer_writes_nothing_more_and_stops_its_threads() -> None:
    sink = io.BytesIO()
    before = {t.name for t in threading.enumerate()}
    writer = ParallelGzipWriter(sink, 6, threads=2)
    writer.write(_text(3 * GZIP_BLOCK))
    written = sink.tell()
    writer.discard()
    writer.close()
    assert sink.tell() == written
    assert not [t for t in threading.enumerate() if t.name.startswith("gzip") and t.is_alive()]
    assert {t.name for t in threading.enumerate()} <= before | {threading.current_thread().name}


def test_compression_level_is_checked_against_the_compression() -> None:
    with pytest.raises(ValidationError, match="out of range for gzip: use 1-9"):
        Settings(_env_file=None, backup_compression="gzip", backup_compression_level=12)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(_env_file=None, backup_compression_level=0)  # type: ignore[call-arg]
    zstd = Settings(_env_file=None, backup_compression="zstd", backup_compression_level=19)  # type: ignore[call-arg]
    assert runner.codec(zstd, BackupType.manual) == Codec(Compression.zstd, 19)


def test_a_safety_backup_is_written_fast_whatever_the_setting() -> None:
    settings = Settings(_env_file=None, backup_compression="gzip", backup_compression_level=9)  # type: ignore[call-arg]
    assert runner.codec(settings, BackupType.pre_restore) == SAFETY_CODEC
    assert runner.codec(settings, BackupType.scheduled) == Codec(Compression.gzip, 9)


def test_an_archive_that_reads_back_differently_from_what_was_hashed_is_refused(
    tmp_path: Path,
) -> None:
    # What the writer hashed on the way out, and the file as the disk gives it back.
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"x" * 5000)
    built = runner._Built(
        sha256=runner.hashlib.sha256(b"x" * 5000).hexdigest(), size=5000, manifest=None
    )  # type: ignore[arg-type]
    seen: list[int] = []
    runner.check_written(archive, built, seen.append)
    assert sum(seen) == 5000
    archive.write_bytes(b"x" * 4999 + b"y")  # one byte changed on disk
    with pytest.raises(SourceError, match="reads back as 5000 bytes with SHA-256"):
        runner.check_written(archive, built, seen.append)
    archive.write_bytes(b"x" * 4999)  # one byte lost
    with pytest.raises(SourceError, match="the disk or filesystem lost or changed data"):
        runner.check_written(archive, built, seen.append)
