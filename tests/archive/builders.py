"""Archives and trees for the archive tests (not tests themselves).

Archives are made with the real ArchiveWriter, as the backup runner makes them; hostile
archives that the writer would never make are written member by member with `tarfile`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast

from api.archive import manifest as fmt
from api.archive.streams import Codec
from api.archive.writer import ArchiveWriter
from api.config import Compression
from api.sources import uploads

MTIME_NS = 1_700_000_000_123_456_789
DB_SQL = (
    b"--\n-- PostgreSQL database dump\n--\n\nCREATE TABLE public.t (id integer);\n\n"
    b"COPY public.t (id) FROM stdin;\n\\.\n\n"
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    with ArchiveWriter(path, Codec(compression)) as writer:
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
    with ArchiveWriter(path, Codec(compression)) as writer:
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


OK_FILES = {"uploads/ok.txt": b"fine"}


def with_hostile(*hostile: Member, files: dict[str, bytes] = OK_FILES) -> list[Member]:
    """Valid members, then the hostile ones, then a manifest listing only the valid ones."""
    return [*valid_members(files), *hostile, manifest_member(files)]
