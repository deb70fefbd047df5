"""Read and verify an archive in one pass, member by member, never with extractall.

Every member name is checked before its bytes are used; only regular files and directories are
accepted; every byte is hashed; the whole file's SHA-256 is compared with what the catalog or the
sidecar recorded. A caller may stage members to a private folder while they are read: nothing is
applied anywhere until `read_archive` has returned without raising.
"""

from __future__ import annotations

import bisect
import contextlib
import gzip
import hashlib
import os
import shutil
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

import zstandard
from isal import isal_zlib

from api.archive.manifest import (
    DATABASE_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    UPLOADS_PREFIX,
    Manifest,
    MemberDigest,
    check_manifest_size,
    check_v1,
    parse_manifest,
    safe_mode,
    seed_app_version,
    seed_checksums,
    validate_manifest,
)
from api.archive.paths import clean_member_name
from api.archive.sqlscan import DumpError, DumpScanner
from api.archive.streams import (
    CHUNK,
    HashingReader,
    StreamLimitError,
    decompressor,
    detect_compression,
)
from api.config import Compression
from api.errors import ArchiveError, SourceError

Stage = Callable[[str], BinaryIO | None]

# Bounds that keep reading any archive, however crafted, within a fixed amount of memory.
MAX_EXTENDED_HEADER_BYTES = 1024 * 1024  # one pax / GNU long-name header; global ones in total
MAX_EXTENDED_HEADERS = 8  # extended headers in a row before one member
MAX_MEMBERS = 120_000  # files and folders; each costs about 1.5 KB while it is checked
MAX_NAME_BYTES_TOTAL = 16 * 1024 * 1024  # all member names together
MAX_TRAILING_BYTES = 1024 * 1024  # after the end of the tar data (tar pads to 10 KiB records)
STAGING_RESERVE_BYTES = 64 * 1024 * 1024  # left free beside a staged member, for everything else


@dataclass
class VerifiedArchive:
    path: Path
    layout: Literal["v1", "seed"]
    compression: Compression
    sha256: str
    size: int
    raw_manifest: dict[str, Any]
    manifest: Manifest | None
    members: dict[str, MemberDigest]
    checksum_source: str | None
    warnings: list[str] = field(default_factory=list)
    # Rows per table counted in database.sql's COPY blocks while it was read (never trusted
    # from the manifest): what a dry run and a drill report.
    dump_tables: dict[str, int] = field(default_factory=dict)

    @property
    def app_version(self) -> str | None:
        if self.manifest is not None:
            return self.manifest.app_version
        return seed_app_version(self.raw_manifest)

    @property
    def name(self) -> str:
        if self.manifest is not None:
            return self.manifest.name
        return archive_stem(self.path)

    def upload_files(self) -> list[MemberDigest]:
        return [m for m in self.members.values() if m.kind == "file" and _is_upload(m.name)]

    def upload_dirs(self) -> list[MemberDigest]:
        return [m for m in self.members.values() if m.kind == "dir" and _is_upload(m.name)]


def _is_upload(name: str) -> bool:
    return name == UPLOADS_PREFIX or name.startswith(UPLOADS_PREFIX + "/")


def archive_stem(path: Path) -> str:
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".tar.zst"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _mtime_ns(info: tarfile.TarInfo) -> int:
    exact = info.pax_headers.get("mtime")
    if exact is not None:
        with contextlib.suppress(InvalidOperation):
            return int(Decimal(exact) * 1_000_000_000)
    return int(info.mtime) * 1_000_000_000


def _kind(info: tarfile.TarInfo, name: str) -> str:
    if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and not info.issparse():
        return "file"
    if info.isdir():
        return "dir"
    what = {
        tarfile.SYMTYPE: "a symbolic link",
        tarfile.LNKTYPE: "a hard link",
        tarfile.CHRTYPE: "a character device",
        tarfile.BLKTYPE: "a block device",
        tarfile.FIFOTYPE: "a FIFO",
    }.get(info.type, f"an unsupported member type {info.type!r}")
    raise ArchiveError(f"member {name!r} is {what}; archives may hold only files and folders")


_EXTENDED_HEADERS = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


class _BoundedTarFile(tarfile.TarFile):
    """Stream-mode TarFile that forgets each member once read and counts extended headers.

    tarfile keeps every TarInfo it has read (`members`), which a stream never looks back at: an
    archive of millions of tiny members would otherwise be held in memory whole.
    """

    extended_headers = 0  # pax or GNU long-name headers before the current member
    global_header_bytes = 0

    def next(self) -> tarfile.TarInfo | None:
        self.extended_headers = 0
        info = super().next()
        self.members.clear()  # type: ignore[attr-defined]  # typeshed omits it
        return info


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses, before tarfile reads them into memory, extended headers larger than
    MAX_EXTENDED_HEADER_BYTES, more than MAX_EXTENDED_HEADERS of them in a row, and sparse
    files (whose maps tarfile reads without bound)."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise ArchiveError(_SPARSE)
        if self.type in _EXTENDED_HEADERS and isinstance(tar, _BoundedTarFile):
            tar.extended_headers += 1
            if self.type == tarfile.XGLTYPE:
                tar.global_header_bytes += self.size
            if max(self.size, tar.global_header_bytes) > MAX_EXTENDED_HEADER_BYTES:
                raise ArchiveError(
                    f"a tar extended header claims {self.size} bytes, more than the "
                    f"{MAX_EXTENDED_HEADER_BYTES >> 20} MiB allowed: the archive is corrupt or "
                    "crafted and will not be read"
                )
            if tar.extended_headers > MAX_EXTENDED_HEADERS:
                raise ArchiveError(
                    f"more than {MAX_EXTENDED_HEADERS} tar extended headers in a row: the "
                    "archive is corrupt or crafted and will not be read"
                )
        info: tarfile.TarInfo = super()._proc_member(tar)  # type: ignore[misc]
        return info

    def _proc_gnusparse_00(self, *args: object) -> None:
        raise ArchiveError(_SPARSE)

    def _proc_gnusparse_01(self, *args: object) -> None:
        raise ArchiveError(_SPARSE)

    def _proc_gnusparse_10(self, *args: object) -> None:
        raise ArchiveError(_SPARSE)


ISAL_ERROR = cast("type[Exception]", isal_zlib.error)  # ISA-L's corrupt-data error

_SPARSE = "the archive holds a sparse file; archives may hold only plain files and folders"


def read_archive(
    path: Path,
    *,
    expected_sha256: str | None = None,
    checksum_source: str | None = None,
    stage: Stage | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> VerifiedArchive:
    """Verify `path` completely; stage members through `stage` while reading.

    Raises ArchiveError saying what is wrong when the archive is corrupt, truncated, tampered
    with, foreign or unsafe.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise ArchiveError(f"archive {path} does not exist") from None
    except IsADirectoryError:
        raise ArchiveError(f"{path} is a folder, not an archive") from None
    with handle:
        try:
            compression = detect_compression(handle.read(4))
        except ValueError as error:
            raise ArchiveError(f"{path.name}: {error}") from None
        handle.seek(0)
        raw = HashingReader(cast(BinaryIO, handle), on_progress)
        members: dict[str, MemberDigest] = {}
        manifest_bytes: bytes | None = None
        name_bytes = name_punctuation = 0
        scanner = DumpScanner()
        try:
            stream = decompressor(cast(BinaryIO, raw), compression)
            with _BoundedTarFile.open(
                fileobj=stream,
                mode="r|",
                encoding="utf-8",
                errors="surrogateescape",
                tarinfo=_BoundedTarInfo,
            ) as tar:
                for info in tar:
                    if info.isdir() and info.name.strip("/") in ("", "."):
                        continue  # the root entry `tar czf X -C folder .` writes
                    try:
                        name = clean_member_name(info.name)
                    except ValueError as error:
                        raise ArchiveError(f"unsafe archive: {error}") from None
                    if name in members or (name == MANIFEST_NAME and manifest_bytes is not None):
                        raise ArchiveError(f"member {name!r} appears twice in the archive")
                    name_bytes += len(name)
                    name_punctuation += sum(map(name.count, "[{:,"))
                    if len(members) >= MAX_MEMBERS or name_bytes > MAX_NAME_BYTES_TOTAL:
                        raise ArchiveError(
                            f"{path.name} holds more than {MAX_MEMBERS} members or "
                            f"{MAX_NAME_BYTES_TOTAL >> 20} MiB of member names, more than this "
                            "tool reads: it was crafted or corrupted"
                        )
                    kind = _kind(info, name)
                    if kind == "dir":
                        members[name] = MemberDigest(
                            name=name, kind="dir", mode=info.mode, mtime_ns=_mtime_ns(info)
                        )
                        continue
                    source = tar.extractfile(info)
                    assert source is not None
                    if name == MANIFEST_NAME:
                        if info.size > MAX_MANIFEST_BYTES:
                            raise ArchiveError(
                                f"{path.name}: manifest.json claims {info.size} bytes, more than "
                                f"the {MAX_MANIFEST_BYTES >> 20} MiB allowed: it was crafted or "
                                "corrupted"
                            )
                        manifest_bytes = source.read()
                        continue
                    scan = scanner if name == DATABASE_NAME else None
                    members[name] = _copy_member(name, info, cast(BinaryIO, source), stage, scan)
            trailing = 0
            while block := stream.read(CHUNK):
                trailing += len(block)
                if trailing > MAX_TRAILING_BYTES:
                    raise ArchiveError(
                        f"{path.name} goes on for more than {MAX_TRAILING_BYTES >> 20} MiB after "
                        "the end of its tar data: it is corrupt or was altered"
                    )
            raw.drain()
        except ArchiveError:
            raise
        except StreamLimitError as error:
            raise ArchiveError(f"{path.name}: {error}") from None
        except DumpError as error:
            raise ArchiveError(f"{path.name}: database.sql {error}") from None
        except (
            EOFError,
            OSError,
            zlib.error,
            ISAL_ERROR,
            gzip.BadGzipFile,
            zstandard.ZstdError,
            tarfile.TarError,
            ValueError,  # tarfile's own parsing of numbers in crafted headers
            RecursionError,
        ) as error:
            raise ArchiveError(
                f"{path.name} is truncated or corrupt ({error}); it cannot be restored"
            ) from None
    sha256 = raw.sha256.hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        raise ArchiveError(
            f"{path.name} has SHA-256 {sha256} but the {checksum_source or 'expected'} checksum is "
            f"{expected_sha256}: the file is corrupt or was altered; it will not be restored"
        )
    if manifest_bytes is None:
        raise ArchiveError(f"{path.name} has no manifest.json: it is not a Nexus Backup archive")
    _check_folders_hold_no_file(path, members)
    too_large = check_manifest_size(manifest_bytes, len(members), name_punctuation)
    if too_large:
        raise ArchiveError(f"{path.name}: {too_large}")
    try:
        data = parse_manifest(manifest_bytes)
    except ValueError as error:
        raise ArchiveError(f"{path.name}: {error}") from None
    result = VerifiedArchive(
        path=path,
        layout="v1",
        compression=compression,
        sha256=sha256,
        size=raw.count,
        raw_manifest=data,
        manifest=None,
        members=members,
        checksum_source=checksum_source if expected_sha256 else None,
    )
    if expected_sha256 is None:
        result.warnings.append(
            "no catalog record or .sha256 sidecar: the whole-file checksum was not checked"
        )
    del manifest_bytes
    if "formatVersion" in data:
        _check_v1(result, data)
    else:
        _check_seed(result, data)
    if DATABASE_NAME in members:
        try:
            result.dump_tables = scanner.finish().tables
        except DumpError as error:
            raise ArchiveError(f"{path.name}: database.sql {error}") from None
        _check_counts(result)
    return result


def _check_folders_hold_no_file(path: Path, members: dict[str, MemberDigest]) -> None:
    """Refuse a file that other members are inside of (`uploads/a` and `uploads/a/b`)."""
    names = sorted(members)
    for name, member in members.items():
        if member.kind != "file":
            continue
        below = bisect.bisect_left(names, name + "/")
        if below < len(names) and names[below].startswith(name + "/"):
            raise ArchiveError(
                f"{path.name}: member {names[below]!r} is inside {name!r}, which is a file: the "
                "archive is corrupt or crafted"
            )


def _check_counts(result: VerifiedArchive) -> None:
    """The manifest's row counts must be the ones database.sql really holds."""
    if result.manifest is None:
        return
    recorded = result.manifest.database
    counted = result.dump_tables
    for table in sorted(set(recorded.tables) | set(counted)):
        if recorded.tables.get(table) != counted.get(table):
            raise ArchiveError(
                f"{result.path.name}: database.sql holds {counted.get(table, 'no')} rows of "
                f"{table} but manifest.json says {recorded.tables.get(table, 'none')}: the "
                "archive was altered; restore another backup"
            )
    if recorded.table_count != len(counted) or recorded.record_count != sum(counted.values()):
        raise ArchiveError(
            f"{result.path.name}: manifest.json counts {recorded.table_count} tables and "
            f"{recorded.record_count} rows but database.sql holds {len(counted)} tables and "
            f"{sum(counted.values())} rows: the archive was altered; restore another backup"
        )


def _copy_member(
    name: str,
    info: tarfile.TarInfo,
    source: BinaryIO,
    stage: Stage | None,
    scan: DumpScanner | None = None,
) -> MemberDigest:
    digest = hashlib.sha256()
    size = 0
    if isinstance(stage, Staging):
        stage.check_room(name, info.size)
    target = stage(name) if stage is not None else None
    try:
        while block := source.read(CHUNK):
            digest.update(block)
            size += len(block)
            if scan is not None:
                scan.feed(block)
            if target is not None:
                try:
                    target.write(block)
                except OSError as error:
                    raise SourceError(
                        f"cannot stage {name!r} ({error.strerror}): free space where the "
                        "archive is staged and try again"
                    ) from None
    finally:
        if target is not None:
            target.close()
    if size != info.size:
        raise ArchiveError(f"member {name!r} is truncated ({size} of {info.size} bytes)")
    return MemberDigest(
        name=name,
        kind="file",
        size=size,
        sha256=digest.hexdigest(),
        mode=info.mode,
        mtime_ns=_mtime_ns(info),
    )


def _check_v1(result: VerifiedArchive, data: dict[str, Any]) -> None:
    version = data.get("formatVersion")
    if version != FORMAT_VERSION:
        raise ArchiveError(
            f"{result.path.name} uses archive format {version!r}; this tool reads format "
            f"{FORMAT_VERSION}: upgrade nexus-backup to restore it"
        )
    try:
        manifest = validate_manifest(data)
    except ValueError as error:
        raise ArchiveError(f"{result.path.name}: {error}") from None
    result.raw_manifest = {k: v for k, v in data.items() if k not in ("files", "directories")}
    problems = check_v1(manifest, result.members)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ArchiveError(
            f"{result.path.name} does not match its manifest: {'; '.join(problems[:3])}{more}"
        )
    result.manifest = manifest


def _check_seed(result: VerifiedArchive, data: dict[str, Any]) -> None:
    if DATABASE_NAME not in result.members:
        raise ArchiveError(
            f"{result.path.name} has no database.sql: it is not a GK-Nexus backup archive"
        )
    try:
        checksums = seed_checksums(data)
    except ValueError as error:
        raise ArchiveError(f"{result.path.name}: {error}") from None
    for name, expected in checksums.items():
        member = result.members.get(name)
        if member is None:
            raise ArchiveError(f"{name!r} is listed in manifest.json but missing from the archive")
        if member.sha256 != expected:
            raise ArchiveError(
                f"{name!r} has SHA-256 {member.sha256}, manifest.json says {expected}: "
                "the archive is corrupt or was altered"
            )
    result.layout = "seed"
    unchecked = [
        m.name for m in result.members.values() if m.kind == "file" and m.name not in checksums
    ]
    if unchecked:
        result.warnings.append(
            f"seed-layout archive: {len(unchecked)} member(s) carry no checksum in manifest.json"
        )


class Staging:
    """A private folder that receives members while they are read and verified.

    database.sql lands at `root/database.sql`; `uploads/x` lands at `root/uploads/x`. Files are
    created exclusively, without following links, readable by the owner only until their modes
    are applied after verification.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        os.mkdir(root, 0o700)
        self.uploads = root / UPLOADS_PREFIX
        os.mkdir(self.uploads, 0o700)

    @property
    def database(self) -> Path:
        return self.root / DATABASE_NAME

    def _path(self, name: str) -> Path:
        if name == DATABASE_NAME:
            return self.database
        return self.root / os.fsdecode(os.fsencode(name))

    def __call__(self, name: str) -> BinaryIO | None:
        path = self._path(name)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise ArchiveError(
                f"member {name!r} collides with another member (a file and a folder of the same "
                "name): the archive is corrupt or crafted"
            ) from None
        except OSError as error:
            raise ArchiveError(
                f"member {name!r} cannot be staged in {self.root} ({error.strerror}): the "
                "archive cannot be restored here"
            ) from None
        return os.fdopen(fd, "wb")

    def check_room(self, name: str, size: int) -> None:
        """Refuse, before writing it, a member that would leave less than STAGING_RESERVE_BYTES
        free: a few kilobytes of zstd can claim a terabyte of zeros."""
        stats = os.statvfs(self.root)
        free = stats.f_bavail * stats.f_frsize
        if size + STAGING_RESERVE_BYTES > free:
            raise ArchiveError(
                f"member {name!r} is {size} bytes but only {free} bytes are free in "
                f"{self.root.parent}: free space there to restore this archive"
            )

    def apply_metadata(self, archive: VerifiedArchive) -> None:
        """Give staged uploads their modes and mtimes: files first, then folders, deepest first.

        Modes pass through `safe_mode`: no setuid, setgid or sticky bit, no write for group or
        others. Ownership is never applied: everything belongs to the user running the restore.
        """
        files: list[tuple[str, int, int]] = []
        dirs: list[tuple[str, int, int]] = []
        if archive.manifest is not None:
            for entry in archive.manifest.files:
                ns = entry.mtime_ns if entry.mtime_ns is not None else int(entry.mtime * 1e9)
                files.append((entry.path, entry.mode, ns))
            for directory in archive.manifest.directories:
                ns = (
                    directory.mtime_ns
                    if directory.mtime_ns is not None
                    else int(directory.mtime * 1e9)
                )
                dirs.append((directory.path, directory.mode, ns))
        else:
            files = [(m.name, m.mode, m.mtime_ns) for m in archive.upload_files()]
            dirs = [(m.name, m.mode, m.mtime_ns) for m in archive.upload_dirs()]
        for name, mode, ns in files:
            if not _is_upload(name):
                continue
            path = self._path(name)
            os.chmod(path, safe_mode(mode), follow_symlinks=False)
            os.utime(path, ns=(ns, ns), follow_symlinks=False)
        for name, mode, ns in sorted(dirs, key=lambda item: item[0].count("/"), reverse=True):
            if not _is_upload(name):
                continue
            path = self._path(name)
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, safe_mode(mode))
            os.utime(path, ns=(ns, ns))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
