"""An archive written by ArchiveWriter reads back exactly: read_archive finds every member the
manifest lists, staging receives the same bytes, and apply_metadata restores modes,
nanosecond mtimes, empty folders and awkward (non-UTF-8, long, deep) names. No database.
"""

from __future__ import annotations

import os
from pathlib import Path

from api.archive import manifest as fmt
from api.archive.reader import Staging, VerifiedArchive, read_archive
from api.archive.streams import Codec, suffix_for
from api.archive.writer import ArchiveWriter
from api.config import Compression
from tests.archive.builders import DB_SQL, MTIME_NS, Built, build_from_tree, sha, tree


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


def test_reader_reports_member_mode_and_nanosecond_mtime(tmp_path: Path) -> None:
    path = tmp_path / "meta.tar.gz"
    with ArchiveWriter(path, Codec(Compression.gzip)) as writer:
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
