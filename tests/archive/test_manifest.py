"""An archive whose members disagree with its manifest.json (a SHA-256, a size, the database
checksum, the upload count, a member unlisted or missing) is refused, saying which.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.archive import manifest as fmt
from api.archive.reader import read_archive
from api.errors import ArchiveError
from tests.archive.builders import build_v1, sha


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


def test_the_manifest_text_is_the_models_json_entry_by_entry() -> None:
    # to_json writes entries one at a time; the text must say exactly what the model holds.
    odd = "uploads/caf\u00e9/\udcff-raw"  # a non-UTF-8 byte kept as a surrogate escape
    manifest = fmt.Manifest(
        name="n",
        type="manual",
        created_at="2026-12-03T10:00:00Z",
        completed_at="2026-12-03T10:00:05Z",
        app_version=None,
        schema_version="abc",
        tool=fmt.ToolInfo(name="nexus-backup", version="1"),
        postgres=fmt.PostgresInfo(server_version="15", pg_dump_version="15", database="d"),
        database=fmt.DatabaseInfo(
            path="database.sql",
            size=3,
            sha256="0" * 64,
            table_count=1,
            record_count=2,
            tables={"public.t": 2},
        ),
        uploads=fmt.UploadsInfo(file_count=2, total_bytes=9, skipped=["x"]),
        files=[
            fmt.FileEntry(
                path=odd, size=4, sha256="a" * 64, mode=0o640, mtime=1.5, mtime_ns=1_500_000_000
            ),
            fmt.FileEntry(path="uploads/b", size=5, sha256="b" * 64, mode=0o600, mtime=-0.25),
        ],
        directories=[fmt.DirectoryEntry(path="uploads/caf\u00e9", mode=0o755, mtime=2.0)],
    )
    text = manifest.to_json()
    text.decode("ascii")  # ASCII only
    assert text.endswith(b"}\n")
    assert json.loads(text) == manifest.model_dump(mode="json", by_alias=True)
    assert fmt.validate_manifest(json.loads(text)) == manifest
    empty = manifest.model_copy(update={"files": [], "directories": []})
    assert json.loads(empty.to_json())["files"] == []
