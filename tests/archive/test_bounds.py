"""Reading crafted archives stays bounded: memory, the tar headers, the manifest, the modes.

The memory tests verify each crafted archive in a fresh Python process and read its peak RSS,
so that what one test allocates cannot hide what another does. Archives of 1 GiB are streamed
into the compressor, never held in memory by the test either.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

import pytest
import zstandard

from api.archive import manifest as fmt
from api.archive import reader
from api.archive.reader import Staging, read_archive
from api.archive.streams import CHUNK, ZSTD_MAX_WINDOW, ZstdReader
from api.config import Compression
from api.errors import ArchiveError
from tests.archive.builders import (
    DB_SQL,
    MTIME_NS,
    Member,
    everything_outside,
    folder,
    make_manifest,
    manifest_member,
    reg,
    sha,
    valid_members,
    with_hostile,
    write_tar,
)
from tests.conftest import ROOT, App, tree_state

GIB = 1 << 30
PEAK_LIMIT_KIB = 256 * 1024


# --- crafting ------------------------------------------------------------------------------------


class Zeros(io.RawIOBase):
    """`size` zero bytes, made as they are read."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        step = self.left if size < 0 else min(size, self.left)
        self.left -= step
        return bytes(step)


def _zeros_sha256(size: int) -> str:
    digest = hashlib.sha256()
    block = bytes(CHUNK)
    while size:
        step = min(size, CHUNK)
        digest.update(block[:step])
        size -= step
    return digest.hexdigest()


def _compressed(path: Path, compression: Compression) -> BinaryIO:
    raw = open(path, "wb")  # noqa: SIM115 - closed with the compressor below
    if compression is Compression.zstd:
        return cast(BinaryIO, zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=True))
    return cast(BinaryIO, _ClosingGzip(raw))


class _ClosingGzip(gzip.GzipFile):
    def __init__(self, raw: BinaryIO) -> None:
        super().__init__(fileobj=raw, mode="wb", compresslevel=1, mtime=0)
        self._raw = raw

    def close(self) -> None:
        super().close()
        self._raw.close()


def _stream_tar(
    path: Path,
    compression: Compression,
    members: list[TarMember],
    *,
    raw_before: Callable[[BinaryIO], None] | None = None,
    trailing: int = 0,
    tar_format: int = tarfile.PAX_FORMAT,
) -> Path:
    """A tar of `members` (data streamed from readers), optionally preceded by raw bytes that
    `raw_before` writes and followed by `trailing` zero bytes after the end of the tar."""
    with _compressed(path, compression) as out:
        if raw_before is not None:
            raw_before(out)
        with tarfile.open(fileobj=out, mode="w|", format=tar_format) as tar:
            tar.copybufsize = CHUNK  # type: ignore[attr-defined]
            for info, data in members:
                tar.addfile(info, data)
        left = trailing
        while left:
            step = min(left, CHUNK)
            out.write(bytes(step))
            left -= step
    return path


def _info(
    name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, size, mode
    info.mtime = MTIME_NS // 1_000_000_000
    return info


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


TarMember = tuple[tarfile.TarInfo, BinaryIO | None]


def _db_and_manifest(files: dict[str, tuple[int, str]]) -> tuple[list[TarMember], TarMember]:
    """database.sql and a manifest listing it and `files` (name -> (size, sha256))."""
    entries = [
        fmt.FileEntry(path=name, size=size, sha256=digest, mode=0o644, mtime=1.0)
        for name, (size, digest) in files.items()
    ]
    directory = fmt.DirectoryEntry(path=fmt.UPLOADS_PREFIX, mode=0o755, mtime=1.0)
    manifest = make_manifest(DB_SQL, entries, [directory]).to_json()
    head = [
        (_info(fmt.DATABASE_NAME, len(DB_SQL), mode=0o600), cast(BinaryIO, io.BytesIO(DB_SQL))),
        (_info(fmt.UPLOADS_PREFIX, kind=tarfile.DIRTYPE, mode=0o755), None),
    ]
    return head, (_info(fmt.MANIFEST_NAME, len(manifest)), cast(BinaryIO, io.BytesIO(manifest)))


_CHILD = """
import sys
from pathlib import Path
from api.archive.reader import read_archive
from api.errors import ArchiveError
try:
    result = read_archive(Path(sys.argv[1]))
    print("VERIFIED", result.layout, len(result.members))
except ArchiveError as error:
    print("REFUSED", error.detail)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print("PEAK_KIB", peak.split()[1])
"""


def verify_in_child(path: Path) -> tuple[str, int]:
    """(first output line, peak RSS in KiB) of read_archive(path) in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"verifying crashed instead of refusing:\n{done.stderr[-3000:]}"
    lines = done.stdout.splitlines()
    return lines[0], int(lines[-1].split()[1])


def _assert_bounded(outcome: str, peak_kib: int, expected: str) -> None:
    assert outcome.startswith(expected), f"expected {expected!r}, got {outcome!r}"
    assert peak_kib < PEAK_LIMIT_KIB, (
        f"verifying took {peak_kib // 1024} MiB of memory (limit 256 MiB): {outcome}"
    )


# --- the zstd reader -----------------------------------------------------------------------------


def _read_zstd(data: bytes, size: int = 65536) -> bytes:
    source = io.BufferedReader(ZstdReader(cast(BinaryIO, io.BytesIO(data))), CHUNK)
    out = bytearray()
    while block := source.read(size):
        out += block
    return bytes(out)


FRAME_1 = zstandard.ZstdCompressor(write_checksum=True).compress(
    os.urandom(300_000) + b"a" * 1_000_000
)
FRAME_2 = zstandard.ZstdCompressor(level=19, write_content_size=False).compress(b"second frame")
SKIPPABLE = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345"
STREAM = FRAME_1 + SKIPPABLE + FRAME_2


def test_zstd_reader_reads_frames_one_after_another_and_skips_skippable_frames() -> None:
    expected = zstandard.ZstdDecompressor().decompress(FRAME_1) + b"second frame"
    assert _read_zstd(STREAM) == expected
    assert _read_zstd(STREAM, 1) == expected, "one byte at a time must give the same bytes"


@pytest.mark.parametrize(
    "cut",
    [1, 3, 4, 5, 12, len(FRAME_1) // 2, len(FRAME_1) - 1, len(FRAME_1) + 3, len(STREAM) - 1],
)
def test_zstd_reader_refuses_a_stream_cut_inside_a_frame(cut: int) -> None:
    with pytest.raises(EOFError, match="middle of a frame"):
        _read_zstd(STREAM[:cut])


def test_zstd_reader_refuses_bytes_after_the_last_frame_that_are_no_frame() -> None:
    with pytest.raises(zstandard.ZstdError, match="not a zstd frame"):
        _read_zstd(FRAME_1 + b"garbage!")


def test_a_zstd_frame_needing_more_than_the_window_limit_is_refused_saying_why(
    tmp_path: Path,
) -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27)
    path = tmp_path / "long.tar.zst"
    with open(path, "wb") as raw:
        writer = zstandard.ZstdCompressor(compression_params=params).stream_writer(raw)
        with tarfile.open(fileobj=writer, mode="w|") as tar:
            tar.addfile(_info(fmt.DATABASE_NAME, len(DB_SQL)), io.BytesIO(DB_SQL))
        writer.close()

    with pytest.raises(ArchiveError, match=f"more than the {ZSTD_MAX_WINDOW >> 20} MiB"):
        read_archive(path)


# --- memory: bombs -------------------------------------------------------------------------------


def test_a_zstd_bomb_of_1_gib_of_zeros_in_a_member_is_refused_in_bounded_memory(
    tmp_path: Path,
) -> None:
    # 1 GiB of zeros as an upload the manifest does not list: read and hashed whole, then refused.
    head, manifest = _db_and_manifest({})
    path = _stream_tar(
        tmp_path / "bomb.tar.zst",
        Compression.zstd,
        [*head, (_info("uploads/zeros", GIB), Zeros(GIB)), manifest],  # type: ignore[list-item]
    )
    assert path.stat().st_size < 200_000, "the bomb should be tiny"

    outcome, peak = verify_in_child(path)

    _assert_bounded(outcome, peak, "REFUSED")
    assert "'uploads/zeros' is in the archive but not listed in the manifest" in outcome


@pytest.mark.parametrize("compression", list(Compression), ids=lambda c: c.value)
def test_an_honest_archive_of_1_gib_of_zeros_verifies_in_bounded_memory(
    tmp_path: Path, compression: Compression
) -> None:
    head, manifest = _db_and_manifest({"uploads/zeros": (GIB, _zeros_sha256(GIB))})
    path = _stream_tar(
        tmp_path / f"zeros.tar.{'zst' if compression is Compression.zstd else 'gz'}",
        compression,
        [*head, (_info("uploads/zeros", GIB), Zeros(GIB)), manifest],  # type: ignore[list-item]
    )

    outcome, peak = verify_in_child(path)

    _assert_bounded(outcome, peak, "VERIFIED v1")


@pytest.mark.parametrize("compression", list(Compression), ids=lambda c: c.value)
def test_1_gib_of_zeros_after_the_end_of_the_tar_is_refused_in_bounded_memory(
    tmp_path: Path, compression: Compression
) -> None:
    head, manifest = _db_and_manifest({})
    path = _stream_tar(
        tmp_path / "trailing.tar.x",
        compression,
        [*head, manifest],
        trailing=GIB,
    )

    outcome, peak = verify_in_child(path)

    _assert_bounded(outcome, peak, "REFUSED")
    assert "after the end of its tar data" in outcome


def test_an_ordinary_tar_end_padding_is_accepted(tmp_path: Path) -> None:
    files = {"uploads/ok.txt": b"fine"}
    path = tmp_path / "padded.tar.gz"
    write_tar(path, [*valid_members(files), manifest_member(files)], Compression.gzip)
    # GNU tar pads to 10 KiB records; some tools write larger records: 512 KiB of zeros is fine.
    data = gzip.decompress(path.read_bytes()) + bytes(512 * 1024)
    path.write_bytes(gzip.compress(data))

    assert read_archive(path).layout == "v1"


# --- memory: tar headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK],
    ids=["pax", "pax-global", "gnu-longname", "gnu-longlink"],
)
def test_a_1_gib_extended_header_is_refused_before_it_is_read(tmp_path: Path, kind: bytes) -> None:
    def huge_header(out: BinaryIO) -> None:
        out.write(_header(_info("././@Header", GIB, kind)))
        left = GIB
        while left:
            out.write(bytes(min(left, CHUNK)))
            left -= min(left, CHUNK)

    head, manifest = _db_and_manifest({})
    path = _stream_tar(
        tmp_path / "header.tar.zst", Compression.zstd, [*head, manifest], raw_before=huge_header
    )

    outcome, peak = verify_in_child(path)

    _assert_bounded(outcome, peak, "REFUSED")
    assert "tar extended header claims 1073741824 bytes" in outcome


def test_many_extended_headers_in_a_row_are_refused(tmp_path: Path) -> None:
    record = b"20 comment=xxxxxxxx\n"  # 20 bytes: a pax record that changes nothing

    def chain(out: BinaryIO) -> None:
        block = _header(_info("././@PaxHeader", len(record), tarfile.XHDTYPE))
        for _ in range(5000):
            out.write(block + record.ljust(512, b"\x00"))

    head, manifest = _db_and_manifest({})
    path = _stream_tar(
        tmp_path / "chain.tar.gz", Compression.gzip, [*head, manifest], raw_before=chain
    )

    with pytest.raises(ArchiveError, match="tar extended headers in a row"):
        read_archive(path)


def test_a_sparse_member_with_an_endless_sparse_map_is_refused_in_bounded_memory(
    tmp_path: Path,
) -> None:
    # An old-GNU sparse header whose "extended" flag is set, followed by 1 GiB of extension
    # blocks, each with 21 map entries and the flag set again: tarfile would read them all.
    entry = b"%011o\x00%011o\x00" % (1, 1)
    extension = (entry * 21).ljust(504, b"\x00") + b"\x01"
    extension = extension.ljust(512, b"\x00")

    def sparse(out: BinaryIO) -> None:
        header = bytearray(_header(_info("uploads/sparse", 0, tarfile.GNUTYPE_SPARSE)))
        header[482] = 1  # isextended
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\x00 " % sum(header)
        out.write(bytes(header))
        chunk = extension * (CHUNK // 512)
        for _ in range(GIB // CHUNK):
            out.write(chunk)

    head, manifest = _db_and_manifest({})
    path = _stream_tar(
        tmp_path / "sparse.tar.zst", Compression.zstd, [*head, manifest], raw_before=sparse
    )

    outcome, peak = verify_in_child(path)

    _assert_bounded(outcome, peak, "REFUSED")
    assert "sparse file" in outcome


def test_a_pax_sparse_member_is_refused(tmp_path: Path) -> None:
    info = _info("uploads/sparse", 0)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
    head, manifest = _db_and_manifest({})
    path = _stream_tar(
        tmp_path / "pax-sparse.tar.gz",
        Compression.gzip,
        [*head, (info, cast(BinaryIO, io.BytesIO(b""))), manifest],
    )

    with pytest.raises(ArchiveError, match="sparse file"):
        read_archive(path)


def test_more_members_than_the_limit_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    count = reader.MAX_MEMBERS + 10

    def empties() -> Iterator[TarMember]:
        for index in range(count):
            yield _info(f"uploads/{index:07d}", 0), cast(BinaryIO, io.BytesIO(b""))

    head, manifest = _db_and_manifest({})
    path = _stream_tar(
        tmp_path / "many.tar.zst",
        Compression.zstd,
        [*head, *empties(), manifest],
        tar_format=tarfile.GNU_FORMAT,
    )

    outcome, peak = verify_in_child(path)

    _assert_bounded(outcome, peak, "REFUSED")
    assert f"more than {reader.MAX_MEMBERS} members" in outcome


def test_the_tar_reader_keeps_no_member_it_has_passed(tmp_path: Path) -> None:
    # tarfile appends every TarInfo to `members`; a stream of tiny members must not pile up.
    files = {f"uploads/{index:04d}": b"x" for index in range(200)}
    path = tmp_path / "kept.tar.gz"
    write_tar(path, valid_members(files), Compression.gzip)
    kept = []
    bounded = reader._BoundedTarFile
    with (
        gzip.open(path) as stream,
        bounded.open(fileobj=stream, mode="r|", tarinfo=reader._BoundedTarInfo) as tar,
    ):
        for _ in tar:
            kept.append(len(tar.members))  # type: ignore[attr-defined]

    assert len(kept) == 202
    assert max(kept) <= 1, f"the reader kept up to {max(kept)} members it had passed"


def test_member_names_beyond_the_total_limit_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader, "MAX_NAME_BYTES_TOTAL", 64 * 1024)
    files = {f"uploads/{index:04d}-" + "n" * 200: b"x" for index in range(400)}
    path = tmp_path / "names.tar.gz"
    write_tar(path, [*valid_members(files), manifest_member(files)], Compression.gzip)

    with pytest.raises(ArchiveError, match="of member names"):
        read_archive(path)


# --- the manifest --------------------------------------------------------------------------------


def test_a_100_mib_manifest_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # One 100 MiB JSON string: few values, but read and parsed it would take 200 MiB and more.
    size = 100 * 1024 * 1024
    body = b'{"formatVersion": 1, "name": "' + b"n" * size + b'"}'
    head, _manifest = _db_and_manifest({})
    path = _stream_tar(
        tmp_path / "big-manifest.tar.zst",
        Compression.zstd,
        [*head, (_info(fmt.MANIFEST_NAME, len(body)), cast(BinaryIO, io.BytesIO(body)))],
    )
    del body

    outcome, peak = verify_in_child(path)

    _assert_bounded(outcome, peak, "REFUSED")
    assert f"more than the {fmt.MAX_MANIFEST_BYTES >> 20} MiB allowed" in outcome


def test_a_manifest_of_millions_of_tiny_json_values_is_refused_in_bounded_memory(
    tmp_path: Path,
) -> None:
    # 60 MiB of `{},` is 20 million dicts once parsed: gigabytes, for a 60 MiB member.
    body = b'{"formatVersion": 1, "files": [' + b"{}," * (20 * 1024 * 1024) + b"{}]}"
    head, _manifest = _db_and_manifest({})
    path = _stream_tar(
        tmp_path / "values.tar.zst",
        Compression.zstd,
        [*head, (_info(fmt.MANIFEST_NAME, len(body)), cast(BinaryIO, io.BytesIO(body)))],
    )
    del body

    outcome, peak = verify_in_child(path)

    _assert_bounded(outcome, peak, "REFUSED")
    assert "JSON values, far more than" in outcome


def test_a_manifest_of_100_000_files_verifies_in_bounded_memory(tmp_path: Path) -> None:
    files = {
        f"uploads/clients/{i // 1000:03d}/document-{i:06d}.pdf": b"%d" % i for i in range(100_000)
    }
    listed = {name: (len(data), sha(data)) for name, data in files.items()}
    head, manifest = _db_and_manifest(listed)
    members = [
        (_info(name, len(data)), cast(BinaryIO, io.BytesIO(data))) for name, data in files.items()
    ]
    path = _stream_tar(tmp_path / "many.tar.zst", Compression.zstd, [*head, *members, manifest])

    outcome, peak = verify_in_child(path)

    _assert_bounded(outcome, peak, "VERIFIED v1")


# --- names ---------------------------------------------------------------------------------------

OK_FILES = {"uploads/ok.txt": b"fine"}

COLLISIONS: dict[str, tuple[list[Member], str]] = {
    "file-then-same-folder": (
        with_hostile(reg("uploads/a", b"x"), folder("uploads/a/")),
        "'uploads/a' appears twice",
    ),
    "file-then-dot-slash-same-file": (
        with_hostile(reg("uploads/a", b"x"), reg("./uploads/a", b"y")),
        "'uploads/a' appears twice",
    ),
    "dot-component": (with_hostile(reg("uploads/./a", b"x")), "'.' path component"),
    "file-then-member-inside-it": (
        with_hostile(reg("uploads/a", b"x"), reg("uploads/a/b", b"y")),
        "collides with another member",
    ),
    "member-inside-then-the-file": (
        with_hostile(reg("uploads/a/b", b"y"), reg("uploads/a", b"x")),
        "collides with another member",
    ),
    "name-over-4096-bytes": (
        with_hostile(reg("uploads/" + "/".join(["d" * 200] * 21), b"x")),
        "longer than 4096 bytes",
    ),
    "component-over-255-bytes": (
        with_hostile(reg("uploads/" + "n" * 300, b"x")),
        "cannot be staged",
    ),
}


@pytest.mark.parametrize("case", list(COLLISIONS))
def test_colliding_or_overlong_names_are_refused_and_nothing_lands_outside_staging(
    tmp_path: Path, case: str
) -> None:
    members, expected = COLLISIONS[case]
    path = tmp_path / "names.tar.gz"
    write_tar(path, members, Compression.gzip)
    staging_root = tmp_path / "staging"
    staging = Staging(staging_root)
    before = everything_outside(tmp_path, staging_root)

    with pytest.raises(ArchiveError) as caught:
        read_archive(path, stage=staging)

    assert expected in caught.value.detail, f"{case}: {caught.value.detail!r}"
    assert everything_outside(tmp_path, staging_root) == before


@pytest.mark.parametrize("order", ["file-first", "inside-first"])
def test_a_file_with_members_inside_it_is_refused_when_only_verifying(
    tmp_path: Path, order: str
) -> None:
    # Without staging nothing collides on disk: the check must not depend on it.
    files = {"uploads/a": b"x", "uploads/a/b": b"y"}
    if order == "inside-first":
        files = dict(reversed(files.items()))
    path = tmp_path / "overlap.tar.gz"
    write_tar(path, [*valid_members(files), manifest_member(files)], Compression.gzip)

    with pytest.raises(ArchiveError, match=r"'uploads/a/b' is inside 'uploads/a', which is a file"):
        read_archive(path)


def test_a_member_larger_than_the_free_space_is_refused_before_it_is_staged(
    tmp_path: Path,
) -> None:
    # A pax size of 1 PiB on a member of 4 bytes: the claim alone must stop it.
    info, data = reg("uploads/huge", b"tiny")
    info.pax_headers = {"size": str(1 << 50)}
    path = tmp_path / "claim.tar.gz"
    write_tar(path, with_hostile((info, data)), Compression.gzip)
    staging_root = tmp_path / "staging"

    with pytest.raises(ArchiveError) as caught:
        read_archive(path, stage=Staging(staging_root))

    assert f"'uploads/huge' is {1 << 50} bytes but only" in caught.value.detail
    assert not (staging_root / "uploads" / "huge").exists(), "nothing may be written first"


# --- modes and owners ----------------------------------------------------------------------------

HOSTILE_MODES = {
    "uploads/setuid": 0o4755,
    "uploads/setgid": 0o2755,
    "uploads/world-writable": 0o666,
    "uploads/everything": 0o7777,
    "uploads/private": 0o600,
}
HOSTILE_DIR_MODES = {"uploads": 0o1777, "uploads/shared": 0o2775}


def _hostile_mode_archive(path: Path) -> None:
    data = b"mode test"
    members: list[Member] = [reg(fmt.DATABASE_NAME, DB_SQL, 0o600)]
    for name, mode in HOSTILE_DIR_MODES.items():
        info, _ = folder(name, mode)
        members.append((info, None))
    for name, mode in HOSTILE_MODES.items():
        info, body = reg(name, data, mode)
        info.uid = info.gid = 12345
        info.uname = info.gname = "root"
        members.append((info, body))
    entries = [
        fmt.FileEntry(path=name, size=len(data), sha256=sha(data), mode=mode, mtime=1.0)
        for name, mode in HOSTILE_MODES.items()
    ]
    directories = [
        fmt.DirectoryEntry(path=name, mode=mode, mtime=1.0)
        for name, mode in HOSTILE_DIR_MODES.items()
    ]
    members.append(reg(fmt.MANIFEST_NAME, make_manifest(DB_SQL, entries, directories).to_json()))
    write_tar(path, members, Compression.gzip)


def test_staged_uploads_never_get_setuid_setgid_sticky_or_group_other_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "modes.tar.gz"
    _hostile_mode_archive(path)
    staging = Staging(tmp_path / "staging")

    result = read_archive(path, stage=staging)
    staging.apply_metadata(result)

    for name, mode in {**HOSTILE_MODES, **HOSTILE_DIR_MODES}.items():
        info = os.lstat(staging.root / name)
        got = stat.S_IMODE(info.st_mode)
        assert got == mode & 0o755 == fmt.safe_mode(mode), f"{name}: {got:o} for {mode:o}"
        assert got & 0o7022 == 0, f"{name} kept a dangerous bit: {got:o}"
        assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid()), (
            f"{name} took its owner from the archive: {info.st_uid}:{info.st_gid}"
        )


def test_a_restore_through_the_cli_drops_dangerous_modes_and_archive_owners(app: App) -> None:
    good = Path(app.cli("backup", "modes").stdout.strip())
    crafted = app.backups / "crafted-modes.tar.gz"
    with (
        tarfile.open(good, "r:gz") as old,
        tarfile.open(crafted, "w:gz", format=tarfile.PAX_FORMAT) as new,
    ):
        for info in old:
            data = old.extractfile(info).read() if info.isfile() else None  # type: ignore[union-attr]
            if info.name == fmt.MANIFEST_NAME and data is not None:
                manifest = json.loads(data)
                for key, mode in (("files", 0o6777), ("directories", 0o1777)):
                    for entry in manifest[key]:
                        if entry["path"].startswith(fmt.UPLOADS_PREFIX):
                            entry["mode"] = mode
                data = json.dumps(manifest).encode()
                info.size = len(data)
            elif info.name.startswith("uploads"):
                info.mode = 0o6777 if info.isfile() else 0o1777
                info.uid = info.gid = 12345
                info.uname = info.gname = "root"
            new.addfile(info, io.BytesIO(data) if data is not None else None)
    digest = hashlib.sha256(crafted.read_bytes()).hexdigest()
    crafted.with_name(crafted.name + ".sha256").write_text(f"{digest}  {crafted.name}\n")

    app.cli("restore", str(crafted), "--yes")

    restored = tree_state(app.uploads)
    assert len(restored) > 3, "the demo uploads should have come back"
    for rel, state in restored.items():
        mode = cast(int, state[1])
        assert mode == 0o755, f"{rel}: restored with mode {mode:o} from 0o6777 / 0o1777"
        info = os.lstat(app.uploads / rel)
        assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid()), rel
