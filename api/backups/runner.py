"""The work of a backup (its record and lock are api.operations.backup's).

pg_dump streams into a spool file (hashed and row-counted on the way) while the uploads tree
streams into the archive; then the dump follows, then the manifest, the commit point. Every
byte is hashed as it passes: each member's SHA-256 on its way in, the archive's on its way out
of the compressor. The archive is fsynced, published under its final name and read back from
disk against that hash (without decompressing it again: its contents were hashed on the way
in); only then is the record `completed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from api import __version__, faults
from api.archive import manifest as fmt
from api.archive.streams import CHUNK, SAFETY_CODEC, Codec, suffix_for
from api.archive.writer import ArchiveWriter, partial_path
from api.config import Settings
from api.errors import AppError, SourceError
from api.progress import Tracker
from api.services import Services
from api.sources import postgres, uploads
from api.states import BackupType

log = logging.getLogger("nexus_backup.backups")
T = TypeVar("T")


@dataclass
class _Built:
    sha256: str
    size: int
    manifest: fmt.Manifest


@dataclass
class Archived:
    """A published, read-back-verified archive."""

    path: Path
    sha256: str
    size: int
    manifest: fmt.Manifest


def codec(settings: Settings, kind: str) -> Codec:
    """What a backup of this kind is compressed with: the configured compression and level; a
    pre_restore safety backup always the fast zstd (a restore is waiting for it)."""
    if kind == BackupType.pre_restore:
        return SAFETY_CODEC
    return Codec(settings.backup_compression, settings.backup_compression_level)


async def archive(
    services: Services, name: str, kind: str, created_at: datetime, tracker: Tracker
) -> Archived:
    """Dump the database and archive the uploads as BACKUP_DIR/{name}.tar.*, publish it and
    verify what was written. On any failure nothing it made is left behind (but an existing
    archive of that name, which it never overwrites)."""
    settings = services.settings
    url = settings.require_database_url()
    root = uploads.check_root(settings.uploads_dir)
    folder = settings.backup_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    chosen = codec(settings, kind)
    final = folder / f"{name}{suffix_for(chosen.compression)}"
    try:
        built = await _build(services, url, root, final, name, kind, created_at, tracker, chosen)
        tracker.phase("verifying", built.size)
        await in_thread(threading.Event(), check_written, final, built, tracker.advance)
    except BaseException as error:
        if not isinstance(error, FileExistsError):
            _remove_archive(final)
        raise
    log.info("backup %s archived: %s (%d bytes)", name, final, built.size)
    return Archived(final.resolve(), built.sha256, built.size, built.manifest)


def check_written(final: Path, built: _Built, on_progress: Callable[[int], None]) -> None:
    """The file on disk must be, byte for byte, what was hashed on its way out."""
    digest, size = hashlib.sha256(), 0
    with open(final, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
            size += len(block)
            on_progress(len(block))
    sha256 = digest.hexdigest()
    if size != built.size or sha256 != built.sha256:
        raise SourceError(
            f"{final} reads back as {size} bytes with SHA-256 {sha256}, but {built.size} bytes "
            f"with SHA-256 {built.sha256} were written: the disk or filesystem lost or changed "
            "data; check it and back up again"
        )


async def in_thread(cancel: threading.Event, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a thread. Cancelled, it sets `cancel` (which the function checks)
    and waits for the thread to end before the cancellation goes on: a thread must never go on
    writing into files that the cancellation's cleanup removes."""
    job = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        cancel.set()
        await asyncio.wait({job})
        if not job.cancelled():
            job.exception()  # retrieved: the cancellation is what goes on
        raise


def reason(error: BaseException) -> str:
    """What a failed backup's record says."""
    if isinstance(error, AppError):
        return error.detail
    if isinstance(error, asyncio.CancelledError | KeyboardInterrupt):
        return "cancelled"
    if isinstance(error, OSError):
        return f"{error.strerror or error}: {error.filename}" if error.filename else str(error)
    log.exception("unexpected error during backup", exc_info=error)
    return f"internal error: {type(error).__name__}: {error}"


def _remove_archive(final: Path) -> None:
    for path in (final, final.with_name(final.name + ".sha256")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def _build(
    services: Services,
    url: str,
    root: Path,
    final: Path,
    name: str,
    kind: str,
    created_at: datetime,
    tracker: Tracker,
    chosen: Codec,
) -> _Built:
    settings = services.settings
    cancel = threading.Event()
    estimate = await _estimate(url, root)
    tracker.phase("dumping database and archiving uploads", estimate)
    spool_path = partial_path(final.with_name(f"{name}.database.sql"))
    fd = os.open(spool_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with (
            os.fdopen(fd, "w+b") as spool,
            ArchiveWriter(final, chosen) as writer,
        ):
            skipped: list[str] = []
            dump_job = asyncio.ensure_future(
                postgres.dump(url, settings, spool, on_progress=tracker.advance, cancel=cancel)
            )
            files_job = asyncio.ensure_future(
                in_thread(cancel, _add_uploads, writer, root, tracker, skipped, cancel)
            )
            try:
                dump, (files, directories) = await asyncio.gather(dump_job, files_job)
            except BaseException as error:
                cancel.set()
                if not isinstance(error, asyncio.CancelledError):  # else both are cancelled
                    dump_job.cancel()  # pg_dump is stopped and reaped, even one held by a lock
                    files_job.cancel()
                # gather() raised at the first end: wait for the other's cleanup too.
                await asyncio.gather(dump_job, files_job, return_exceptions=True)
                raise
            faults.point("backup.after_dump")
            tracker.phase("writing archive", dump.size)
            spool.flush()
            spool.seek(0)
            mtime_ns = time.time_ns()
            sha = await in_thread(
                cancel,
                writer.add_file,
                fmt.DATABASE_NAME,
                cast(BinaryIO, _Counting(spool, tracker, cancel)),
                dump.size,
                0o600,
                mtime_ns,
            )
            if sha != dump.sha256:
                raise SourceError(
                    "the database dump read back from the spool file differs from what pg_dump "
                    f"wrote (disk error?) in {final.parent}"
                )
            manifest = fmt.Manifest(
                format_version=fmt.FORMAT_VERSION,
                name=name,
                type=kind,
                created_at=created_at,
                completed_at=datetime.now(UTC),
                app_version=settings.app_version,
                schema_version=dump.schema_version,
                tool=fmt.ToolInfo(name="nexus-backup", version=__version__),
                postgres=fmt.PostgresInfo(
                    server_version=dump.server_version,
                    pg_dump_version=dump.pg_dump_version,
                    database=dump.database,
                ),
                database=fmt.DatabaseInfo(
                    path=fmt.DATABASE_NAME,
                    size=dump.size,
                    sha256=dump.sha256,
                    table_count=len(dump.tables),
                    record_count=sum(dump.tables.values()),
                    tables=dump.tables,
                ),
                uploads=fmt.UploadsInfo(
                    file_count=sum(1 for f in files if f.path != fmt.DATABASE_NAME),
                    total_bytes=sum(f.size for f in files),
                    skipped=skipped,
                ),
                files=[
                    fmt.FileEntry(
                        path=fmt.DATABASE_NAME,
                        size=dump.size,
                        sha256=dump.sha256,
                        mode=0o600,
                        mtime=mtime_ns / 1e9,
                        mtime_ns=mtime_ns,
                    ),
                    *files,
                ],
                directories=directories,
            )
            writer.add_bytes(fmt.MANIFEST_NAME, manifest.to_json(), mtime_ns)
            sha256, size = await in_thread(cancel, writer.commit)
            if skipped:
                log.warning(
                    "backup %s skipped %d link(s) or special file(s) under UPLOADS_DIR: %s",
                    name,
                    len(skipped),
                    ", ".join(skipped[:5]),
                )
            return _Built(sha256=sha256, size=size, manifest=manifest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spool_path)


class _Counting:
    """Reads through, telling the tracker how far it got; stops once the backup is cancelled."""

    def __init__(self, source: BinaryIO, tracker: Tracker, cancel: threading.Event) -> None:
        self._source = source
        self._tracker = tracker
        self._cancel = cancel

    def read(self, size: int = -1) -> bytes:
        if self._cancel.is_set():
            raise SourceError("the backup was cancelled while writing the archive")
        data = self._source.read(size)
        self._tracker.advance(len(data))
        return data


async def _estimate(url: str, root: Path) -> int | None:
    """Bytes the backup will read: the database's size plus the uploads'."""

    def uploads_bytes() -> int:
        total = 0
        for folder, _dirs, names in os.walk(root):
            for item in names:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(folder, item)).st_size
        return total

    files = await asyncio.to_thread(uploads_bytes)
    try:
        conn = await postgres.connect(url)
    except SourceError:
        return files or None
    try:
        size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()
    return size + files


def _add_uploads(
    writer: ArchiveWriter,
    root: Path,
    tracker: Tracker,
    skipped: list[str],
    cancel: threading.Event,
) -> tuple[list[fmt.FileEntry], list[fmt.DirectoryEntry]]:
    files: list[fmt.FileEntry] = []
    directories: list[fmt.DirectoryEntry] = []
    for entry in uploads.walk(root, skipped):
        if cancel.is_set():
            raise SourceError("the backup was cancelled while archiving uploads")
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
        try:
            fd, info = uploads.open_file(entry)
        except FileNotFoundError:
            continue  # deleted since it was listed: it is simply not in this backup
        except OSError:
            skipped.append(entry.rel)
            continue
        with os.fdopen(fd, "rb") as handle:
            sha = writer.add_file(
                member,
                cast(BinaryIO, _Counting(handle, tracker, cancel)),
                info.st_size,
                entry.mode,
                info.st_mtime_ns,
            )
        faults.point("backup.mid_archive")
        files.append(
            fmt.FileEntry(
                path=member,
                size=info.st_size,
                sha256=sha,
                mode=entry.mode,
                mtime=info.st_mtime_ns / 1e9,
                mtime_ns=info.st_mtime_ns,
            )
        )
    return files, directories
