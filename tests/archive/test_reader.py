"""read_archive refuses what must not be restored: corrupt, truncated or mis-checksummed files,
files that are no archive, and hostile members (climbing names, links, devices,
duplicates, a bad manifest.json), without writing anything outside its staging folder.
"""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from api.archive import manifest as fmt
from api.archive.reader import Staging, read_archive
from api.archive.streams import suffix_for
from api.config import Compression
from api.errors import ArchiveError
from tests.archive.builders import (
    OK_FILES,
    Member,
    build_v1,
    everything_outside,
    manifest_member,
    reg,
    special,
    tree,
    valid_members,
    with_hostile,
    write_tar,
)


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


def test_a_hand_built_tar_with_a_matching_manifest_is_accepted(tmp_path: Path) -> None:
    # The control for the hostile cases below: the same construction, nothing hostile in it.
    files = {"uploads/ok.txt": b"fine"}
    path = tmp_path / "control.tar.gz"
    write_tar(path, [*valid_members(files), manifest_member(files)], Compression.gzip)

    result = read_archive(path, stage=Staging(tmp_path / "staging"))

    assert result.layout == "v1"
    assert (tmp_path / "staging" / "uploads" / "ok.txt").read_bytes() == b"fine"


# Each case: tmp_path -> members, and the part of the refusal message that says why.
HOSTILE: dict[str, tuple[Callable[[Path], list[Member]], str]] = {
    "dot-dot": (lambda base: with_hostile(reg("../evil", b"x")), "climbs out with '..'"),
    "absolute": (
        lambda base: with_hostile(reg(str(base / "abs-escape"), b"x")),
        "has an absolute path",
    ),
    "uploads-dot-dot": (lambda base: with_hostile(reg("uploads/../../x", b"x")), "climbs out"),
    "outside-layout": (
        lambda base: with_hostile(reg("etc/cron.d/job", b"x")),
        "outside the archive",
    ),
    "symlink": (
        lambda base: with_hostile(special("uploads/link", tarfile.SYMTYPE, str(base / "target"))),
        "is a symbolic link",
    ),
    "symlink-then-write-through-it": (
        lambda base: with_hostile(
            special("uploads/dir", tarfile.SYMTYPE, str(base)),
            reg("uploads/dir/pwned", b"x"),
        ),
        "is a symbolic link",
    ),
    "hard-link": (
        lambda base: with_hostile(special("uploads/hard", tarfile.LNKTYPE, "database.sql")),
        "is a hard link",
    ),
    "character-device": (
        lambda base: with_hostile(special("uploads/null", tarfile.CHRTYPE)),
        "is a character device",
    ),
    "block-device": (
        lambda base: with_hostile(special("uploads/disk", tarfile.BLKTYPE)),
        "is a block device",
    ),
    "fifo": (lambda base: with_hostile(special("uploads/pipe", tarfile.FIFOTYPE)), "is a FIFO"),
    "duplicate-file": (
        lambda base: with_hostile(reg("uploads/ok.txt", b"second copy")),
        "'uploads/ok.txt' appears twice",
    ),
    "duplicate-manifest": (
        lambda base: [*with_hostile(), manifest_member(OK_FILES)],
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
    write_tar(path, with_hostile(reg("../evil", b"x")), Compression.zstd)

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
