"""Fixtures of the archive tests: each compression, a source tree, and one round trip of it."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from api.archive.reader import Staging, VerifiedArchive, read_archive
from api.archive.streams import suffix_for
from api.archive.writer import read_sidecar
from api.config import Compression
from tests.archive.builders import Built, build_from_tree, make_uploads_tree


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
