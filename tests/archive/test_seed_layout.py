"""Seed-layout archives (made by hand with GNU tar, checksums optional) are read and staged,
and refused when a checksum is wrong, a listed member is missing or database.sql is absent.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from api.archive.reader import Staging, read_archive
from api.errors import ArchiveError
from tests.archive.builders import DB_SQL, sha


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
