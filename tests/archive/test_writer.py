"""What ArchiveWriter leaves on disk: a private archive, a sha256sum sidecar, a tar that
GNU tar lists with manifest.json last, exact pre-1970 mtimes, and nothing at all when it fails.
"""

from __future__ import annotations

import io
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from api.archive import manifest as fmt
from api.archive.reader import Staging, VerifiedArchive
from api.archive.streams import Codec
from api.archive.writer import PARTIAL_MARK, ArchiveWriter
from api.config import Compression
from tests.archive.builders import DB_SQL, MTIME_NS, Built


def test_round_trip_sidecar_is_sha256sum_format_and_sha256sum_accepts_it(
    round_trip: tuple[Built, VerifiedArchive, Staging],
) -> None:
    built, _result, _staging = round_trip
    sidecar = built.path.with_name(built.path.name + ".sha256")

    assert sidecar.read_text() == f"{built.sha256}  {built.path.name}\n"
    check = subprocess.run(
        ["sha256sum", "-c", sidecar.name],
        cwd=built.path.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, f"sha256sum -c failed: {check.stdout}{check.stderr}"
    assert check.stdout.strip() == f"{built.path.name}: OK"


def test_round_trip_archive_is_private_and_no_partial_file_remains(
    round_trip: tuple[Built, VerifiedArchive, Staging],
) -> None:
    built, _result, _staging = round_trip

    mode = stat.S_IMODE(built.path.stat().st_mode)
    assert mode == 0o600, f"the archive holds the whole database: mode must be 0600, is {mode:o}"
    leftovers = [p.name for p in built.path.parent.iterdir() if PARTIAL_MARK in p.name]
    assert leftovers == [], f"temporary files remain after commit: {leftovers}"
    assert sorted(p.name for p in built.path.parent.iterdir()) == sorted(
        [built.path.name, built.path.name + ".sha256"]
    )


def test_round_trip_gnu_tar_lists_every_member(
    round_trip: tuple[Built, VerifiedArchive, Staging], compression: Compression
) -> None:
    built, result, _staging = round_trip
    flags = ["-tzf"] if compression is Compression.gzip else ["--zstd", "-tf"]
    if compression is Compression.zstd and shutil.which("zstd") is None:
        pytest.skip("GNU tar needs the zstd program to read .tar.zst")

    listing = subprocess.run(
        ["tar", *flags, str(built.path)], capture_output=True, text=True, check=False
    )

    assert listing.returncode == 0, f"GNU tar cannot read the archive: {listing.stderr}"
    names = [line.rstrip("/") for line in listing.stdout.splitlines()]
    assert names[-1] == fmt.MANIFEST_NAME, "manifest.json must be the last member (commit point)"
    assert sorted(names) == sorted([*result.members, fmt.MANIFEST_NAME])


def test_an_exception_inside_the_writer_leaves_no_file_behind(tmp_path: Path) -> None:
    final = tmp_path / "broken.tar.gz"

    def fail_midway() -> None:
        with ArchiveWriter(final, Codec(Compression.gzip)) as writer:
            writer.add_bytes(fmt.DATABASE_NAME, DB_SQL, MTIME_NS)
            raise RuntimeError("pg_dump died")

    with pytest.raises(RuntimeError, match="pg_dump died"):
        fail_midway()

    assert list(tmp_path.iterdir()) == [], "an aborted archive must leave no file, partial or not"


def test_commit_never_overwrites_an_existing_archive(tmp_path: Path) -> None:
    final = tmp_path / "same-name.tar.gz"
    final.write_bytes(b"an earlier backup")

    def write_again() -> None:
        with ArchiveWriter(final, Codec(Compression.gzip)) as writer:
            writer.add_bytes(fmt.DATABASE_NAME, DB_SQL, MTIME_NS)
            writer.commit()

    with pytest.raises(FileExistsError, match="never overwritten"):
        write_again()

    assert final.read_bytes() == b"an earlier backup", "an earlier backup was overwritten"
    assert [p.name for p in tmp_path.iterdir()] == [final.name], "the temporary file remains"


def test_a_source_that_shrinks_while_read_is_refused_with_its_name(tmp_path: Path) -> None:
    final = tmp_path / "shrink.tar.gz"

    with (
        pytest.raises(OSError, match=r"uploads/a\.bin shrank"),
        ArchiveWriter(final, Codec(Compression.gzip)) as writer,
    ):
        writer.add_file("uploads/a.bin", io.BytesIO(b"short"), 100, 0o644, MTIME_NS)

    assert list(tmp_path.iterdir()) == []


def test_a_file_mtime_before_1970_with_nanoseconds_is_recorded_exactly(tmp_path: Path) -> None:
    path = tmp_path / "old.tar.gz"
    with ArchiveWriter(path, Codec(Compression.gzip)) as writer:
        writer.add_bytes("uploads/old.txt", b"old", -500_000_000)
        writer.add_bytes("uploads/fine.txt", b"ok", 1_500_000_000)
        writer.commit()
    with tarfile.open(path, "r:gz") as archive:
        headers = {m.name: m.pax_headers.get("mtime") for m in archive.getmembers()}

    assert headers["uploads/fine.txt"] == "1.500000000"
    assert headers["uploads/old.txt"] == "-0.500000000", (
        f"mtime -0.5 s was written as {headers['uploads/old.txt']!r}"
    )
