"""The archive format v1 (api.archive) and the pure helpers around a backup and a restore.

Archives are made with the real ArchiveWriter; hostile archives that the writer would never make
are written member by member with `tarfile`. Nothing here needs a database.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.archive import manifest as fmt
from api.archive.paths import MAX_NAME_BYTES, clean_member_name
from api.archive.reader import Staging, VerifiedArchive, read_archive
from api.archive.sqlscan import DumpScanner
from api.archive.streams import suffix_for
from api.archive.writer import PARTIAL_MARK, ArchiveWriter, read_sidecar
from api.config import Compression
from api.errors import ArchiveError, SourceError
from api.restores.runner import check_version
from api.sources import uploads
from api.sources.postgres import check_pg_dump_version, libpq_env, redact

MTIME_NS = 1_700_000_000_123_456_789
DB_SQL = (
    b"--\n-- PostgreSQL database dump\n--\n\nCREATE TABLE public.t (id integer);\n\n"
    b"COPY public.t (id) FROM stdin;\n\\.\n\n"
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- building archives ---------------------------------------------------------------------------


def make_manifest(
    db: bytes,
    files: list[fmt.FileEntry],
    directories: list[fmt.DirectoryEntry],
    app_version: str | None = "1.0.0",
) -> fmt.Manifest:
    """A v1 manifest the way the backup runner writes it (database.sql listed among files)."""
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    upload_files = [f for f in files if f.path != fmt.DATABASE_NAME]
    return fmt.Manifest(
        name="test-backup",
        type="manual",
        created_at=now,
        completed_at=now,
        app_version=app_version,
        schema_version=None,
        tool=fmt.ToolInfo(name="nexus-backup", version="0.1.0"),
        postgres=fmt.PostgresInfo(server_version="16.4", pg_dump_version="16.4", database="app"),
        database=fmt.DatabaseInfo(
            size=len(db), sha256=sha(db), table_count=1, record_count=0, tables={"public.t": 0}
        ),
        uploads=fmt.UploadsInfo(
            file_count=len(upload_files), total_bytes=sum(f.size for f in upload_files)
        ),
        files=[
            fmt.FileEntry(
                path=fmt.DATABASE_NAME,
                size=len(db),
                sha256=sha(db),
                mode=0o600,
                mtime=MTIME_NS / 1e9,
                mtime_ns=MTIME_NS,
            ),
            *upload_files,
        ],
        directories=directories,
    )


@dataclass
class Built:
    path: Path
    sha256: str
    size: int
    manifest: fmt.Manifest


def build_from_tree(path: Path, compression: Compression, root: Path, db: bytes = DB_SQL) -> Built:
    """Archive `root` as uploads/ the way the backup runner does: walk, open_file, add."""
    files: list[fmt.FileEntry] = []
    directories: list[fmt.DirectoryEntry] = []
    skipped: list[str] = []
    with ArchiveWriter(path, compression) as writer:
        writer.add_file(fmt.DATABASE_NAME, io.BytesIO(db), len(db), 0o600, MTIME_NS)
        for entry in uploads.walk(root, skipped):
            member = fmt.UPLOADS_PREFIX + ("/" + entry.rel if entry.rel else "")
            if entry.kind == "dir":
                writer.add_directory(member, entry.mode, entry.mtime_ns)
                directories.append(
                    fmt.DirectoryEntry(
                        path=member,
                        mode=entry.mode,
                        mtime=entry.mtime_ns / 1e9,
                        mtime_ns=entry.mtime_ns,
                    )
                )
                continue
            fd, info = uploads.open_file(entry)
            with os.fdopen(fd, "rb") as handle:
                digest = writer.add_file(
                    member, cast(BinaryIO, handle), info.st_size, entry.mode, info.st_mtime_ns
                )
            files.append(
                fmt.FileEntry(
                    path=member,
                    size=info.st_size,
                    sha256=digest,
                    mode=entry.mode,
                    mtime=info.st_mtime_ns / 1e9,
                    mtime_ns=info.st_mtime_ns,
                )
            )
        assert skipped == [], f"the test tree unexpectedly holds links or specials: {skipped}"
        manifest = make_manifest(db, files, directories)
        writer.add_bytes(fmt.MANIFEST_NAME, manifest.to_json(), MTIME_NS)
        digest, size = writer.commit()
    return Built(path, digest, size, manifest)


def build_v1(
    path: Path,
    files: dict[str, bytes],
    compression: Compression = Compression.gzip,
    *,
    db: bytes = DB_SQL,
    extra: dict[str, bytes] | None = None,
    edit: Callable[[fmt.Manifest], None] | None = None,
) -> Built:
    """A v1 archive from in-memory uploads (names relative to uploads/), via ArchiveWriter.

    `extra` members are written but not listed; `edit` may alter the manifest before it is
    written (the archive is then "re-made with an altered manifest").
    """
    entries: list[fmt.FileEntry] = []
    with ArchiveWriter(path, compression) as writer:
        writer.add_file(fmt.DATABASE_NAME, io.BytesIO(db), len(db), 0o600, MTIME_NS)
        writer.add_directory(fmt.UPLOADS_PREFIX, 0o755, MTIME_NS)
        for rel, data in files.items():
            name = f"{fmt.UPLOADS_PREFIX}/{rel}"
            digest = writer.add_file(name, io.BytesIO(data), len(data), 0o644, MTIME_NS)
            entries.append(
                fmt.FileEntry(
                    path=name,
                    size=len(data),
                    sha256=digest,
                    mode=0o644,
                    mtime=MTIME_NS / 1e9,
                    mtime_ns=MTIME_NS,
                )
            )
        for name, data in (extra or {}).items():
            writer.add_bytes(name, data, MTIME_NS)
        root_dir = fmt.DirectoryEntry(
            path=fmt.UPLOADS_PREFIX, mode=0o755, mtime=MTIME_NS / 1e9, mtime_ns=MTIME_NS
        )
        manifest = make_manifest(db, entries, [root_dir])
        if edit is not None:
            edit(manifest)
        writer.add_bytes(fmt.MANIFEST_NAME, manifest.to_json(), MTIME_NS)
        digest, size = writer.commit()
    return Built(path, digest, size, manifest)


Member = tuple[tarfile.TarInfo, bytes | None]


def reg(name: str, data: bytes, mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = MTIME_NS // 1_000_000_000
    return info, data


def folder(name: str, mode: int = 0o755) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = MTIME_NS // 1_000_000_000
    return info, None


def special(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3  # /dev/null
    return info, None


def write_tar(path: Path, members: list[Member], compression: Compression) -> None:
    """Write members one by one, exactly as given: nothing is checked or fixed."""
    with open(path, "wb") as raw:
        if compression is Compression.zstd:
            import zstandard

            compressed: BinaryIO = cast(
                BinaryIO, zstandard.ZstdCompressor().stream_writer(raw, closefd=False)
            )
        else:
            compressed = cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0))
        with (
            compressed,
            tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as t,
        ):
            for info, data in members:
                t.addfile(info, io.BytesIO(data) if data is not None else None)


def manifest_member(files: dict[str, bytes], db: bytes = DB_SQL) -> Member:
    """manifest.json listing database.sql, uploads/ and `files` (full member names)."""
    entries = [
        fmt.FileEntry(path=name, size=len(data), sha256=sha(data), mode=0o644, mtime=1.0)
        for name, data in files.items()
    ]
    directory = fmt.DirectoryEntry(path=fmt.UPLOADS_PREFIX, mode=0o755, mtime=1.0)
    return reg(fmt.MANIFEST_NAME, make_manifest(db, entries, [directory]).to_json())


def valid_members(files: dict[str, bytes]) -> list[Member]:
    return [
        reg(fmt.DATABASE_NAME, DB_SQL, 0o600),
        folder(fmt.UPLOADS_PREFIX),
        *(reg(name, data) for name, data in files.items()),
    ]


# --- looking at trees ----------------------------------------------------------------------------


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """(kind, mode, mtime_ns[, sha256]) of root and everything below it, by relative path."""
    state: dict[str, tuple[object, ...]] = {}
    raw_root = os.fsencode(root)
    info = os.lstat(raw_root)
    state["."] = ("dir", stat.S_IMODE(info.st_mode), info.st_mtime_ns)
    for current, dirs, names in os.walk(raw_root):
        for name in dirs + names:
            full = os.path.join(current, name)
            rel = os.fsdecode(os.path.relpath(full, raw_root))
            info = os.lstat(full)
            if stat.S_ISDIR(info.st_mode):
                state[rel] = ("dir", stat.S_IMODE(info.st_mode), info.st_mtime_ns)
            elif stat.S_ISREG(info.st_mode):
                with open(full, "rb") as handle:
                    digest = sha(handle.read())
                state[rel] = ("file", stat.S_IMODE(info.st_mode), info.st_mtime_ns, digest)
            else:
                state[rel] = ("other", stat.S_IFMT(info.st_mode))
    return state


def everything_outside(base: Path, staging_root: Path) -> set[str]:
    """Every path below `base`, except the staging folder's contents."""
    found: set[str] = set()
    for current, dirs, names in os.walk(base):
        here = Path(current)
        if here == staging_root or staging_root in here.parents:
            continue
        for name in dirs + names:
            found.add(str((here / name).relative_to(base)))
    return found


def make_uploads_tree(root: Path) -> None:
    """Files and folders with distinctive modes and nanosecond mtimes, plus an empty folder."""
    (root / "docs" / "2024" / "12").mkdir(parents=True)
    (root / "empty").mkdir()
    content = {
        "readme.txt": (b"hello uploads\n", 0o644),
        "private.key": (b"not really a key\n", 0o600),
        "docs/2024/12/report.bin": (os.urandom(300_000), 0o640),
        "docs/2024/12/run.sh": (b"#!/bin/sh\necho hi\n", 0o755),
        "docs/zero-bytes": (b"", 0o444),
    }
    for rel, (data, mode) in content.items():
        (root / rel).write_bytes(data)
        os.chmod(root / rel, mode)
    modes = {"docs": 0o750, "docs/2024": 0o755, "docs/2024/12": 0o700, "empty": 0o711, "": 0o755}
    for rel, mode in modes.items():
        os.chmod(root / rel, mode)
    everything = [*content, *modes]
    for index, rel in enumerate(sorted(everything, key=lambda r: -(r.count("/") + bool(r)))):
        ns = MTIME_NS - index * 86_400_000_000_123
        os.utime(root / rel, ns=(ns, ns))


# --- 1. round trip -------------------------------------------------------------------------------


@pytest.fixture(params=list(Compression), ids=lambda c: c.value)
def compression(request: pytest.FixtureRequest) -> Compression:
    return cast(Compression, request.param)


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    root = tmp_path / "source" / "uploads"
    root.mkdir(parents=True)
    make_uploads_tree(root)
    return root


@pytest.fixture
def round_trip(
    tmp_path: Path, compression: Compression, source_tree: Path
) -> tuple[Built, VerifiedArchive, Staging]:
    backups = tmp_path / "backups"
    backups.mkdir()
    built = build_from_tree(backups / f"nightly{suffix_for(compression)}", compression, source_tree)
    sidecar = read_sidecar(built.path)
    assert sidecar is not None, "commit() must write a .sha256 sidecar beside the archive"
    staging = Staging(tmp_path / "staging")
    result = read_archive(
        built.path, expected_sha256=sidecar, checksum_source="sidecar", stage=staging
    )
    return built, result, staging


def test_round_trip_members_match_the_manifest_sizes_and_sha256(
    round_trip: tuple[Built, VerifiedArchive, Staging], source_tree: Path
) -> None:
    built, result, _staging = round_trip

    assert result.layout == "v1"
    assert result.sha256 == built.sha256, "the whole-file SHA-256 must be the one commit returned"
    assert result.size == built.size == built.path.stat().st_size
    assert result.manifest is not None
    assert result.warnings == [], f"a verified archive with a sidecar warns of {result.warnings}"
    for entry in result.manifest.files:
        member = result.members[entry.path]
        assert (member.size, member.sha256) == (entry.size, entry.sha256), entry.path
        if entry.path.startswith("uploads/"):
            original = (source_tree / entry.path.removeprefix("uploads/")).read_bytes()
            assert entry.sha256 == sha(original), f"{entry.path}: manifest sha is not the file's"
    assert result.members[fmt.DATABASE_NAME].sha256 == sha(DB_SQL)
    listed = {f.path for f in result.manifest.files} | {d.path for d in result.manifest.directories}
    assert set(result.members) == listed


def test_round_trip_staging_receives_database_and_every_upload(
    round_trip: tuple[Built, VerifiedArchive, Staging], source_tree: Path
) -> None:
    _built, _result, staging = round_trip

    assert staging.database.read_bytes() == DB_SQL
    for rel, state in tree(source_tree).items():
        if state[0] == "file":
            staged = staging.uploads / rel
            assert staged.read_bytes() == (source_tree / rel).read_bytes(), f"staged {rel} differs"


def test_round_trip_apply_metadata_restores_modes_and_nanosecond_mtimes(
    round_trip: tuple[Built, VerifiedArchive, Staging], source_tree: Path
) -> None:
    _built, result, staging = round_trip
    expected = tree(source_tree)

    staging.apply_metadata(result)
    actual = tree(staging.uploads)

    assert actual == expected, (
        "after apply_metadata the staged uploads must equal the source tree exactly "
        "(bytes, modes, nanosecond mtimes, empty folders):\n"
        + "\n".join(
            f"  {rel}: source {expected.get(rel)} staged {actual.get(rel)}"
            for rel in sorted(set(expected) | set(actual))
            if expected.get(rel) != actual.get(rel)
        )
    )


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
        with ArchiveWriter(final, Compression.gzip) as writer:
            writer.add_bytes(fmt.DATABASE_NAME, DB_SQL, MTIME_NS)
            raise RuntimeError("pg_dump died")

    with pytest.raises(RuntimeError, match="pg_dump died"):
        fail_midway()

    assert list(tmp_path.iterdir()) == [], "an aborted archive must leave no file, partial or not"


def test_commit_never_overwrites_an_existing_archive(tmp_path: Path) -> None:
    final = tmp_path / "same-name.tar.gz"
    final.write_bytes(b"an earlier backup")

    def write_again() -> None:
        with ArchiveWriter(final, Compression.gzip) as writer:
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
        ArchiveWriter(final, Compression.gzip) as writer,
    ):
        writer.add_file("uploads/a.bin", io.BytesIO(b"short"), 100, 0o644, MTIME_NS)

    assert list(tmp_path.iterdir()) == []


# --- 2. names ------------------------------------------------------------------------------------

LATIN1_NAME = b"caf\xe9.txt"
LONG_COMPONENT = b"n" * 246 + b".txt"  # 250 bytes: near NAME_MAX (255)
DEEP_FOLDERS = [bytes([ord("a") + i]) * 200 for i in range(5)]


def test_awkward_names_round_trip_exactly_through_writer_reader_and_staging(
    tmp_path: Path, compression: Compression
) -> None:
    root = tmp_path / "source" / "uploads"
    root.mkdir(parents=True)
    raw_root = os.fsencode(root)
    deep_folder = b"/".join(DEEP_FOLDERS)
    names = {
        LATIN1_NAME: b"named in latin-1",
        LONG_COMPONENT: b"a 250-byte file name",
        deep_folder + b"/leaf.txt": b"more than 1000 bytes of path",
    }
    os.makedirs(raw_root + b"/" + deep_folder)
    for rel, data in names.items():
        with open(raw_root + b"/" + rel, "wb") as handle:
            handle.write(data)
    assert len(deep_folder + b"/leaf.txt") > 1000

    built = build_from_tree(tmp_path / f"names{suffix_for(compression)}", compression, root)
    staging = Staging(tmp_path / "staging")
    result = read_archive(built.path, expected_sha256=built.sha256, stage=staging)
    staging.apply_metadata(result)

    for rel, data in names.items():
        member = "uploads/" + os.fsdecode(rel)
        assert member in result.members, f"{rel!r} did not come back under its exact name"
        assert result.members[member].sha256 == sha(data)
        with open(os.fsencode(staging.uploads) + b"/" + rel, "rb") as handle:
            assert handle.read() == data, f"staged {rel!r} has other bytes"
    assert tree(staging.uploads) == tree(root), "the staged tree differs from the source tree"


# --- 3. refusals ---------------------------------------------------------------------------------


def test_a_flipped_bit_in_the_middle_is_refused_against_the_expected_checksum(
    tmp_path: Path, compression: Compression
) -> None:
    built = build_v1(
        tmp_path / f"a{suffix_for(compression)}", {"big.bin": os.urandom(200_000)}, compression
    )
    data = bytearray(built.path.read_bytes())
    data[len(data) // 2] ^= 0x10
    built.path.write_bytes(bytes(data))

    with pytest.raises(ArchiveError, match="corrupt"):
        read_archive(built.path, expected_sha256=built.sha256, checksum_source="sidecar")


def test_a_file_whose_checksum_differs_from_the_sidecar_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    built = build_v1(tmp_path / "a.tar.gz", {"a.txt": b"a"})

    with pytest.raises(ArchiveError) as caught:
        read_archive(built.path, expected_sha256="0" * 64, checksum_source="sidecar")

    assert "sidecar checksum" in caught.value.detail
    assert built.sha256 in caught.value.detail, "the message must show the SHA-256 it computed"


@pytest.mark.parametrize("fraction", [0.01, 0.25, 0.5, 0.75, 0.99])
def test_a_truncated_archive_is_refused_without_any_checksum(
    tmp_path: Path, compression: Compression, fraction: float
) -> None:
    built = build_v1(
        tmp_path / f"a{suffix_for(compression)}",
        {"one.bin": os.urandom(100_000), "two.bin": os.urandom(100_000)},
        compression,
    )
    data = built.path.read_bytes()
    built.path.write_bytes(data[: int(len(data) * fraction)])

    with pytest.raises(ArchiveError, match="truncated"):
        read_archive(built.path)


@pytest.mark.parametrize("missing", [1, 8, 30])
def test_an_archive_missing_its_last_bytes_is_refused(
    tmp_path: Path, compression: Compression, missing: int
) -> None:
    built = build_v1(tmp_path / f"a{suffix_for(compression)}", {"a.txt": b"a" * 1000}, compression)
    data = built.path.read_bytes()
    built.path.write_bytes(data[:-missing])

    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        read_archive(built.path)


def test_a_manifest_with_an_altered_file_sha256_is_refused(tmp_path: Path) -> None:
    def alter(manifest: fmt.Manifest) -> None:
        entry = next(f for f in manifest.files if f.path == "uploads/invoice.pdf")
        entry.sha256 = sha(b"something else")

    built = build_v1(tmp_path / "a.tar.gz", {"invoice.pdf": b"%PDF-1.7"}, edit=alter)

    with pytest.raises(ArchiveError) as caught:
        read_archive(built.path, expected_sha256=built.sha256)

    assert "does not match its manifest" in caught.value.detail
    assert "'uploads/invoice.pdf' has SHA-256" in caught.value.detail


def test_a_manifest_with_an_altered_file_size_is_refused(tmp_path: Path) -> None:
    def alter(manifest: fmt.Manifest) -> None:
        manifest.files[-1].size += 1

    built = build_v1(tmp_path / "a.tar.gz", {"invoice.pdf": b"%PDF-1.7"}, edit=alter)

    with pytest.raises(
        ArchiveError, match=r"'uploads/invoice\.pdf' is 8 bytes, the manifest says 9"
    ):
        read_archive(built.path)


def test_a_manifest_whose_database_sha256_was_altered_is_refused(tmp_path: Path) -> None:
    def alter(manifest: fmt.Manifest) -> None:
        manifest.database.sha256 = sha(b"another dump")

    built = build_v1(tmp_path / "a.tar.gz", {"a.txt": b"a"}, edit=alter)

    with pytest.raises(ArchiveError, match=r"database\.sql"):
        read_archive(built.path, expected_sha256=built.sha256)


def test_an_upload_count_that_disagrees_with_the_listed_files_is_refused(tmp_path: Path) -> None:
    def alter(manifest: fmt.Manifest) -> None:
        manifest.uploads.file_count = 5

    built = build_v1(tmp_path / "a.tar.gz", {"a.txt": b"a"}, edit=alter)

    with pytest.raises(ArchiveError, match="counts 5 uploaded files but lists 1"):
        read_archive(built.path)


def test_a_member_not_listed_in_the_manifest_is_refused(tmp_path: Path) -> None:
    built = build_v1(
        tmp_path / "a.tar.gz", {"a.txt": b"a"}, extra={"uploads/stowaway.txt": b"surprise"}
    )

    with pytest.raises(ArchiveError, match=r"'uploads/stowaway\.txt' is in the archive but not"):
        read_archive(built.path, expected_sha256=built.sha256)


def test_a_member_listed_in_the_manifest_but_missing_is_refused(tmp_path: Path) -> None:
    def add_ghost(manifest: fmt.Manifest) -> None:
        ghost = fmt.FileEntry(path="uploads/ghost.txt", size=1, sha256=sha(b"g"), mode=420, mtime=1)
        manifest.files.append(ghost)
        manifest.uploads.file_count += 1

    built = build_v1(tmp_path / "a.tar.gz", {"a.txt": b"a"}, edit=add_ghost)

    with pytest.raises(
        ArchiveError, match=r"'uploads/ghost\.txt' is listed in the manifest but miss"
    ):
        read_archive(built.path, expected_sha256=built.sha256)


def test_a_hand_built_tar_with_a_matching_manifest_is_accepted(tmp_path: Path) -> None:
    # The control for the hostile cases below: the same construction, nothing hostile in it.
    files = {"uploads/ok.txt": b"fine"}
    path = tmp_path / "control.tar.gz"
    write_tar(path, [*valid_members(files), manifest_member(files)], Compression.gzip)

    result = read_archive(path, stage=Staging(tmp_path / "staging"))

    assert result.layout == "v1"
    assert (tmp_path / "staging" / "uploads" / "ok.txt").read_bytes() == b"fine"


OK_FILES = {"uploads/ok.txt": b"fine"}


def _with(*hostile: Member, files: dict[str, bytes] = OK_FILES) -> list[Member]:
    """Valid members, then the hostile ones, then a manifest listing only the valid ones."""
    return [*valid_members(files), *hostile, manifest_member(files)]


# Each case: tmp_path -> members, and the part of the refusal message that says why.
HOSTILE: dict[str, tuple[Callable[[Path], list[Member]], str]] = {
    "dot-dot": (lambda base: _with(reg("../evil", b"x")), "climbs out with '..'"),
    "absolute": (
        lambda base: _with(reg(str(base / "abs-escape"), b"x")),
        "has an absolute path",
    ),
    "uploads-dot-dot": (lambda base: _with(reg("uploads/../../x", b"x")), "climbs out"),
    "outside-layout": (lambda base: _with(reg("etc/cron.d/job", b"x")), "outside the archive"),
    "symlink": (
        lambda base: _with(special("uploads/link", tarfile.SYMTYPE, str(base / "target"))),
        "is a symbolic link",
    ),
    "symlink-then-write-through-it": (
        lambda base: _with(
            special("uploads/dir", tarfile.SYMTYPE, str(base)),
            reg("uploads/dir/pwned", b"x"),
        ),
        "is a symbolic link",
    ),
    "hard-link": (
        lambda base: _with(special("uploads/hard", tarfile.LNKTYPE, "database.sql")),
        "is a hard link",
    ),
    "character-device": (
        lambda base: _with(special("uploads/null", tarfile.CHRTYPE)),
        "is a character device",
    ),
    "block-device": (
        lambda base: _with(special("uploads/disk", tarfile.BLKTYPE)),
        "is a block device",
    ),
    "fifo": (lambda base: _with(special("uploads/pipe", tarfile.FIFOTYPE)), "is a FIFO"),
    "duplicate-file": (
        lambda base: _with(reg("uploads/ok.txt", b"second copy")),
        "'uploads/ok.txt' appears twice",
    ),
    "duplicate-manifest": (
        lambda base: [*_with(), manifest_member(OK_FILES)],
        "'manifest.json' appears twice",
    ),
    "no-manifest": (lambda base: valid_members(OK_FILES), "has no manifest.json"),
    "format-version-2": (
        lambda base: [
            *valid_members(OK_FILES),
            reg(
                fmt.MANIFEST_NAME,
                json.dumps(
                    {**json.loads(manifest_member(OK_FILES)[1] or b""), "formatVersion": 2}
                ).encode(),
            ),
        ],
        "uses archive format 2",
    ),
    "manifest-not-json": (
        lambda base: [*valid_members(OK_FILES), reg(fmt.MANIFEST_NAME, b"{'version': 1,")],
        "manifest.json is not valid JSON",
    ),
    "manifest-not-an-object": (
        lambda base: [*valid_members(OK_FILES), reg(fmt.MANIFEST_NAME, b"[1, 2]")],
        "manifest.json is not a JSON object",
    ),
    "manifest-missing-fields": (
        lambda base: [*valid_members(OK_FILES), reg(fmt.MANIFEST_NAME, b'{"formatVersion": 1}')],
        "manifest.json is invalid at",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_archive_is_refused_and_nothing_lands_outside_staging(
    tmp_path: Path, case: str
) -> None:
    build, expected = HOSTILE[case]
    path = tmp_path / "hostile.tar.gz"
    write_tar(path, build(tmp_path), Compression.gzip)
    staging_root = tmp_path / "staging"
    staging = Staging(staging_root)
    before = everything_outside(tmp_path, staging_root)

    with pytest.raises(ArchiveError) as caught:
        read_archive(path, stage=staging)

    assert expected in caught.value.detail, (
        f"{case}: refused, but the message does not say why: {caught.value.detail!r}"
    )
    assert everything_outside(tmp_path, staging_root) == before, (
        f"{case}: reading the archive wrote outside the staging folder"
    )
    kinds = {state[0] for state in tree(staging_root).values()}
    assert kinds <= {"dir", "file"}, f"{case}: staging holds a link or special file: {kinds}"


def test_a_hostile_member_in_a_zstd_archive_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "hostile.tar.zst"
    write_tar(path, _with(reg("../evil", b"x")), Compression.zstd)

    with pytest.raises(ArchiveError, match="climbs out"):
        read_archive(path, stage=Staging(tmp_path / "staging"))

    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"just some text, not an archive\n", "unknown file signature"),
        (b"", "unknown file signature"),
        (b"PK\x03\x04 a zip file", "unknown file signature"),
        (gzip.compress(b"gzip, but of text, not of a tar" * 20), "truncated or corrupt"),
    ],
    ids=["text", "empty", "zip", "gzip-of-text"],
)
def test_a_file_that_is_not_a_tar_gz_or_tar_zst_is_refused(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "not-an-archive.tar.gz"
    path.write_bytes(content)

    with pytest.raises(ArchiveError, match=expected):
        read_archive(path)


def test_a_missing_archive_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="does not exist"):
        read_archive(tmp_path / "nope.tar.gz")


# --- 4. clean_member_name ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("manifest.json", "manifest.json"),
        ("database.sql", "database.sql"),
        ("uploads", "uploads"),
        ("uploads/", "uploads"),
        ("./uploads/a.txt", "uploads/a.txt"),
        ("././database.sql", "database.sql"),
        ("uploads/2024/12/report.pdf", "uploads/2024/12/report.pdf"),
        ("uploads/.hidden", "uploads/.hidden"),
        ("uploads/..not-a-climb", "uploads/..not-a-climb"),
        ("uploads/a..b/c", "uploads/a..b/c"),
        ("uploads/résumé €.pdf", "uploads/résumé €.pdf"),
        ("uploads/caf\udce9.txt", "uploads/caf\udce9.txt"),
    ],
)
def test_clean_member_name_accepts_layout_names(name: str, expected: str) -> None:
    assert clean_member_name(name) == expected


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty name"),
        (".", "empty name"),
        ("./", "empty name"),
        ("/etc/passwd", "absolute path"),
        ("//uploads/x", "absolute path"),
        ("../evil", "climbs out"),
        ("./../evil", "climbs out"),
        ("uploads/../../x", "climbs out"),
        ("uploads/a/..", "climbs out"),
        ("uploads/./x", "'.' path component"),
        ("uploads//x", "empty or '.' path component"),
        ("uploads/a\x00b", "NUL byte"),
        ("etc/passwd", "outside the archive layout"),
        ("Uploads/x", "outside the archive layout"),
        ("uploads-old/x", "outside the archive layout"),
        ("database.sql/x", "outside the archive layout"),
        ("manifest.json/x", "outside the archive layout"),
        (".env", "outside the archive layout"),
        ("uploads/" + "x" * MAX_NAME_BYTES, "longer than"),
    ],
)
def test_clean_member_name_refuses_unsafe_names(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        clean_member_name(name)


_COMPONENTS = st.sampled_from(
    [
        "uploads",
        "manifest.json",
        "database.sql",
        "..",
        ".",
        "",
        "a",
        "b.txt",
        "\x00",
        "\udce9",
        "\ud800",
    ]
)
_PATHLIKE = st.builds(
    lambda prefix, parts, suffix: prefix + "/".join(parts) + suffix,
    st.sampled_from(["", "/", "./", "././", "//"]),
    st.lists(st.one_of(_COMPONENTS, st.text(max_size=5)), max_size=6),
    st.sampled_from(["", "/", "//"]),
)


@given(st.one_of(st.text(), _PATHLIKE))
def test_clean_member_name_returns_only_safe_layout_names_or_raises(name: str) -> None:
    try:
        cleaned = clean_member_name(name)
    except ValueError:
        return
    parts = cleaned.split("/")
    assert ".." not in parts, f"{name!r} -> {cleaned!r} climbs out"
    assert not cleaned.startswith("/"), f"{name!r} -> {cleaned!r} is absolute"
    assert "" not in parts, f"{name!r} -> {cleaned!r} has an empty component"
    assert "." not in parts, f"{name!r} -> {cleaned!r} has a '.' component"
    assert "\x00" not in cleaned
    assert cleaned in (fmt.MANIFEST_NAME, fmt.DATABASE_NAME) or parts[0] == fmt.UPLOADS_PREFIX, (
        f"{name!r} -> {cleaned!r} is outside the archive layout"
    )
    assert clean_member_name(cleaned) == cleaned, "cleaning must be idempotent"


# --- 5. seed layout ------------------------------------------------------------------------------


def _seed_folder(base: Path, manifest: Mapping[str, object] | None, with_db: bool = True) -> Path:
    folder = base / "seed-src"
    (folder / "uploads" / "2024" / "12").mkdir(parents=True)
    (folder / "uploads" / "2024" / "12" / "scan.pdf").write_bytes(b"%PDF seed upload")
    if with_db:
        (folder / "database.sql").write_bytes(DB_SQL)
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _gnu_tar(archive: Path, folder: Path, *members: str) -> Path:
    subprocess.run(["tar", "czf", str(archive), "-C", str(folder), *members], check=True)
    return archive


def test_a_seed_tar_czf_archive_verifies_with_layout_seed(tmp_path: Path) -> None:
    folder = _seed_folder(
        tmp_path, {"version": "1.2.0", "checksums": {"database.sql": sha(DB_SQL)}}
    )
    archive = _gnu_tar(tmp_path / "seed.tar.gz", folder, "manifest.json", "database.sql", "uploads")

    staging = Staging(tmp_path / "staging")
    result = read_archive(archive, stage=staging)

    assert result.layout == "seed"
    assert result.app_version == "1.2.0"
    assert result.manifest is None
    assert result.members["database.sql"].sha256 == sha(DB_SQL)
    assert "uploads/2024/12/scan.pdf" in result.members
    assert (staging.uploads / "2024" / "12" / "scan.pdf").read_bytes() == b"%PDF seed upload"
    assert any("carry no checksum" in w for w in result.warnings), (
        "uploads the seed manifest did not checksum must be reported as unchecked"
    )


def test_a_seed_archive_made_with_tar_c_folder_dot_verifies(tmp_path: Path) -> None:
    folder = _seed_folder(
        tmp_path, {"version": "1.2.0", "checksums": {"database.sql": sha(DB_SQL)}}
    )
    archive = _gnu_tar(tmp_path / "seed.tar.gz", folder, ".")

    result = read_archive(archive)

    assert result.layout == "seed"
    assert set(result.members) >= {"database.sql", "uploads/2024/12/scan.pdf"}


def test_a_seed_archive_with_a_wrong_checksum_is_refused(tmp_path: Path) -> None:
    folder = _seed_folder(tmp_path, {"version": "1.2.0", "checksums": {"database.sql": "ab" * 32}})
    archive = _gnu_tar(tmp_path / "seed.tar.gz", folder, "manifest.json", "database.sql", "uploads")

    with pytest.raises(ArchiveError) as caught:
        read_archive(archive)

    assert "'database.sql' has SHA-256" in caught.value.detail
    assert "ab" * 32 in caught.value.detail


def test_a_seed_archive_without_database_sql_is_refused(tmp_path: Path) -> None:
    folder = _seed_folder(tmp_path, {"version": "1.2.0"}, with_db=False)
    archive = _gnu_tar(tmp_path / "seed.tar.gz", folder, "manifest.json", "uploads")

    with pytest.raises(ArchiveError, match=r"has no database\.sql"):
        read_archive(archive)


def test_a_seed_archive_checksumming_a_missing_member_is_refused(tmp_path: Path) -> None:
    manifest = {"version": "1.2.0", "checksums": {"uploads/gone.pdf": "cd" * 32}}
    folder = _seed_folder(tmp_path, manifest)
    archive = _gnu_tar(tmp_path / "seed.tar.gz", folder, "manifest.json", "database.sql", "uploads")

    with pytest.raises(
        ArchiveError, match=r"'uploads/gone\.pdf' is listed in manifest\.json but miss"
    ):
        read_archive(archive)


def test_a_seed_archive_with_a_blank_checksum_is_refused_as_an_archive_error(
    tmp_path: Path,
) -> None:
    folder = _seed_folder(tmp_path, {"version": "1.2.0", "checksums": {"database.sql": ""}})
    archive = _gnu_tar(tmp_path / "seed.tar.gz", folder, "manifest.json", "database.sql", "uploads")

    with pytest.raises(ArchiveError):
        read_archive(archive)


# --- member metadata -----------------------------------------------------------------------------


def test_a_file_mtime_before_1970_with_nanoseconds_is_recorded_exactly(tmp_path: Path) -> None:
    path = tmp_path / "old.tar.gz"
    with ArchiveWriter(path, Compression.gzip) as writer:
        writer.add_bytes("uploads/old.txt", b"old", -500_000_000)
        writer.add_bytes("uploads/fine.txt", b"ok", 1_500_000_000)
        writer.commit()
    with tarfile.open(path, "r:gz") as archive:
        headers = {m.name: m.pax_headers.get("mtime") for m in archive.getmembers()}

    assert headers["uploads/fine.txt"] == "1.500000000"
    assert headers["uploads/old.txt"] == "-0.500000000", (
        f"mtime -0.5 s was written as {headers['uploads/old.txt']!r}"
    )


def test_reader_reports_member_mode_and_nanosecond_mtime(tmp_path: Path) -> None:
    path = tmp_path / "meta.tar.gz"
    with ArchiveWriter(path, Compression.gzip) as writer:
        writer.add_bytes("uploads/a.txt", b"a", MTIME_NS, mode=0o640)
        writer.add_directory("uploads", 0o750, MTIME_NS + 1)
        writer.add_bytes("uploads/whole.txt", b"w", 1_600_000_000_000_000_000, mode=0o600)
        writer.add_bytes(fmt.DATABASE_NAME, DB_SQL, MTIME_NS)
        writer.add_bytes(fmt.MANIFEST_NAME, b"{}", MTIME_NS)
        writer.commit()

    # A {} manifest is a (seed-layout) archive with database.sql: read_archive accepts it.
    members = read_archive(path).members

    assert (members["uploads/a.txt"].mode, members["uploads/a.txt"].mtime_ns) == (0o640, MTIME_NS)
    assert (members["uploads"].mode, members["uploads"].mtime_ns) == (0o750, MTIME_NS + 1)
    assert members["uploads/whole.txt"].mtime_ns == 1_600_000_000_000_000_000


# --- 6. counting COPY rows (DumpScanner) ----------------------------------------------------------

PLAIN_DUMP = rb'''--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SELECT pg_catalog.set_config('search_path', '', false);

CREATE SCHEMA "my schema";

CREATE FUNCTION public.export_clients() RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
COPY public.clients TO '/tmp/clients.csv';
COPY (SELECT 1) TO STDOUT;
END;
$$;

CREATE TABLE public.clients (id integer, name text, notes text);
CREATE TABLE public.empty_table (id integer);
CREATE TABLE "my schema"."Weird ""Name""" (id integer, "odd column" text);
CREATE TABLE public.notes (body text);

--
-- Data for Name: clients; Type: TABLE DATA; Schema: public; Owner: app
--

COPY public.clients (id, name, notes) FROM stdin;
1	Acme Ltd	first line\nsecond line
2	Back\\slash & Co	ends with an escaped backslash-dot \\.
3	\N	tab\there
\.


--
-- Data for Name: empty_table; Type: TABLE DATA; Schema: public; Owner: app
--

COPY public.empty_table (id) FROM stdin;
\.


COPY "my schema"."Weird ""Name""" (id, "odd column") FROM stdin;
1	a
2	COPY looks like a header FROM stdin;
\.


COPY public.notes (body) FROM stdin;
COPY public.fake (id) FROM stdin;
\\.
\\.\\.
plain
\.


SELECT pg_catalog.setval('public.clients_id_seq', 3, true);

--
-- PostgreSQL database dump complete
--

'''

PLAIN_DUMP_COUNTS = {
    "public.clients": 3,
    "public.empty_table": 0,
    'my schema.Weird "Name"': 2,
    "public.notes": 4,
}


def _count(chunks: list[bytes]) -> dict[str, int]:
    scanner = DumpScanner()
    for chunk in chunks:
        scanner.feed(chunk)
    return scanner.finish().tables


def test_copy_counter_counts_rows_of_every_copy_block_of_a_plain_dump() -> None:
    assert _count([PLAIN_DUMP]) == PLAIN_DUMP_COUNTS


def test_copy_counter_gives_the_same_counts_fed_one_byte_at_a_time() -> None:
    chunks = [PLAIN_DUMP[i : i + 1] for i in range(len(PLAIN_DUMP))]
    assert _count(chunks) == PLAIN_DUMP_COUNTS


@given(st.lists(st.integers(min_value=0, max_value=len(PLAIN_DUMP)), max_size=40))
def test_copy_counter_counts_do_not_depend_on_where_the_stream_is_split(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(PLAIN_DUMP)]
    chunks = [PLAIN_DUMP[a:b] for a, b in itertools.pairwise(points)]
    assert _count(chunks) == _count([PLAIN_DUMP]) == PLAIN_DUMP_COUNTS


def _copy_escape(value: str) -> str:
    # COPY text format: backslash, newline, carriage return and tab are escaped.
    return (
        value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )


# PostgreSQL text never holds NUL, so a dump never does (and the scanner refuses one).
_VALUE = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_ROWS = st.lists(st.lists(_VALUE, min_size=1, max_size=3), max_size=8)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), _ROWS, max_size=4),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
)
def test_copy_counter_counts_generated_copy_blocks_however_split(
    tables: dict[str, list[list[str]]], cuts: list[int]
) -> None:
    lines = ["SET client_encoding = 'UTF8';", ""]
    for table, rows in tables.items():
        lines.append(f"COPY public.{table} (c) FROM stdin;")
        lines.extend("\t".join(_copy_escape(v) for v in row) for row in rows)
        lines.extend(["\\.", "", ""])
    dump = ("\n".join(lines) + "\n").encode()
    points = [0, *sorted(min(c, len(dump)) for c in cuts), len(dump)]

    counts = _count([dump[a:b] for a, b in itertools.pairwise(points)])

    assert counts == {f"public.{t}": len(rows) for t, rows in tables.items()}


# --- 7. version checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("archive_version", "current", "force", "allowed"),
    [
        ("2.0.0", "1.9.0", False, False),
        ("1.10.0", "1.9.0", False, False),
        ("2.0.0", "1.9.0", True, True),
        ("1.9.0", "1.9.0", False, True),
        ("1.2.0", "1.9.0", False, True),
        ("1.9.0", "1.10.0", False, True),
        ("1.0.0", None, False, False),
        ("1.0.0", None, True, True),
        (None, "1.0.0", False, True),
        (None, None, False, True),
    ],
)
def test_check_version_refuses_a_newer_or_unknown_version_unless_forced(
    archive_version: str | None, current: str | None, force: bool, allowed: bool
) -> None:
    reason = check_version(archive_version, current, force)
    assert (reason is None) == allowed, f"check_version -> {reason!r}"
    if reason is not None:
        assert "--force" in reason, "a refusal must say how to override it"
        assert archive_version is not None
        assert archive_version in reason, "a refusal must name the archive's version"


def test_check_version_refusal_names_app_version_when_it_is_unset() -> None:
    reason = check_version("1.0.0", None, False)
    assert reason is not None
    assert "APP_VERSION is not set" in reason


def test_check_pg_dump_version_refuses_an_older_pg_dump_naming_the_fix() -> None:
    with pytest.raises(SourceError) as caught:
        check_pg_dump_version(14, 15)
    message = caught.value.detail
    assert "pg_dump 14" in message, message
    assert "server 15" in message, message
    assert "postgresql-client-15" in message, "the message must name the package to install"


@pytest.mark.parametrize(("dump_major", "server_major"), [(15, 15), (16, 15), (17, 12)])
def test_check_pg_dump_version_accepts_a_same_or_newer_pg_dump(
    dump_major: int, server_major: int
) -> None:
    check_pg_dump_version(dump_major, server_major)


# --- 8. passwords --------------------------------------------------------------------------------

PASSWORD = "S3cr@t:pw/x"
URL = "postgresql://app_user:S3cr%40t%3Apw%2Fx@db.example.com:5433/gk_nexus?sslmode=require"


def test_libpq_env_puts_the_password_only_in_pgpassword() -> None:
    env = libpq_env(URL)

    assert env["PGPASSWORD"] == PASSWORD, "the password must be percent-decoded into PGPASSWORD"
    leaks = {k: v for k, v in env.items() if k != "PGPASSWORD" and "S3cr" in v}
    assert leaks == {}, f"the password leaked into {leaks}"
    assert env["PGHOST"] == "db.example.com"
    assert env["PGPORT"] == "5433"
    assert env["PGUSER"] == "app_user"
    assert env["PGDATABASE"] == "gk_nexus"
    assert env["PGSSLMODE"] == "require"


def test_libpq_env_reads_the_asyncpg_scheme_too() -> None:
    env = libpq_env(URL.replace("postgresql://", "postgresql+asyncpg://"))
    assert env["PGPASSWORD"] == PASSWORD
    assert env["PGHOST"] == "db.example.com"


@pytest.mark.parametrize("url", [URL, URL.replace("postgresql://", "postgresql+asyncpg://")])
def test_redact_hides_the_password_and_keeps_the_rest(url: str) -> None:
    shown = redact(url)

    assert "S3cr" not in shown, f"redact() leaked the password: {shown}"
    assert ":***@" in shown
    assert "app_user" in shown
    assert "db.example.com:5433/gk_nexus" in shown


def test_redact_leaves_a_url_without_password_alone() -> None:
    url = "postgresql://app_user@db.example.com/gk_nexus"
    assert redact(url) == url


def test_redact_hides_a_password_given_as_a_query_parameter() -> None:
    url = "postgresql://app_user@db.example.com/gk_nexus?password=hunter2secret"
    assert libpq_env(url)["PGPASSWORD"] == "hunter2secret"

    assert "hunter2secret" not in redact(url), f"redact() leaked the password: {redact(url)}"
