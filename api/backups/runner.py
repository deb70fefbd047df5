"""The one place a backup runs. The CLI, the API and the scheduler all come here.

pg_dump streams into a spool file (hashed and row-counted on the way) while the uploads tree
streams into the archive; then the dump follows, then the manifest, the commit point. The
archive is fsynced, published under its final name, read back and verified; only then is the
record `completed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast

from api import __version__
from api.archive import manifest as fmt
from api.archive.reader import read_archive
from api.archive.streams import suffix_for
from api.archive.writer import ArchiveWriter, partial_path
from api.audit import service as audit
from api.backups import service
from api.backups.models import SystemBackup
from api.db import transaction
from api.errors import AppError, Busy, Conflict, SourceError
from api.locks import MutationLock
from api.progress import ProgressView, Tracker
from api.services import Services
from api.sources import postgres, uploads

log = logging.getLogger("nexus_backup.backups")


@dataclass
class BackupRequest:
    name: str | None = None
    type: str = "manual"
    description: str | None = None
    actor: str = "cli"
    schedule_id: str | None = None
    client_address: str | None = None
    sync_to_cloud: bool = False


@dataclass
class _Built:
    sha256: str
    size: int
    dump: postgres.DumpResult
    files: list[fmt.FileEntry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


async def busy_error(services: Services) -> Busy:
    """The 409 to give while another mutation holds the lock, naming it when it is known."""
    from api.restores import service as restores

    # The holder may have taken the lock a moment ago and not yet written its record.
    for _ in range(20):
        async with transaction(services.sessions) as session:
            backups = await service.running(session)
            restoring = await restores.running(session)
        if backups or restoring:
            break
        await asyncio.sleep(0.1)
    if backups:
        b = backups[0]
        return Busy(f"backup {b.name!r} ({b.id}) is {b.status}; wait for it to finish")
    if restoring:
        r = restoring[0]
        return Busy(f"restore {r.id} is running; wait for it to finish")
    return Busy("another backup or restore is running; wait for it to finish")


async def acquire(services: Services) -> MutationLock:
    lock = MutationLock(services.engine)
    if not await lock.try_acquire():
        raise await busy_error(services)
    return lock


async def create_pending(services: Services, request: BackupRequest) -> SystemBackup:
    """Validate the request and write the `pending` record. The caller holds the lock."""
    kind = service.check_type(request.type)
    description = service.check_description(request.description)
    async with transaction(services.sessions) as session:
        if request.name is None:
            base = service.default_name(kind)
            name, n = base, 1
            while await service.name_taken(session, name) or _archive_exists(services, name):
                n += 1
                name = f"{base}-{n}"
        else:
            name = service.check_name(request.name)
            if await service.name_taken(session, name) or _archive_exists(services, name):
                raise Conflict(f"a backup named {name!r} already exists; choose another name")
        backup = SystemBackup(
            id=service.new_id(),
            name=name,
            description=description,
            type=kind,
            status="pending",
            compression=services.settings.backup_compression.value,
            is_cloud_synced=False,
            progress_bytes=0,
            schedule_id=request.schedule_id,
            sync_requested=request.sync_to_cloud,
            created_by=request.actor,
            created_at=service.now(),
        )
        session.add(backup)
        await audit.record(
            session,
            request.actor,
            "backup.create",
            name,
            "started",
            {"id": backup.id, "type": kind},
            request.client_address,
        )
    return backup


def _archive_exists(services: Services, name: str) -> bool:
    folder = services.settings.backup_dir
    return any((folder / f"{name}{suffix}").exists() for suffix in (".tar.gz", ".tar.zst"))


async def create_backup(
    services: Services,
    request: BackupRequest,
    views: list[ProgressView] | None = None,
    lock: MutationLock | None = None,
) -> SystemBackup:
    """Take the lock (unless given), create the record and run the backup to its end."""
    own = lock is None
    held = await acquire(services) if lock is None else lock
    try:
        backup = await create_pending(services, request)
        return await run(services, backup.id, views, request.client_address)
    finally:
        if own:
            await held.release()


async def after_backup(services: Services, backup: SystemBackup, actor: str) -> SystemBackup:
    """Upload a completed backup that asked for it (outside the mutation lock)."""
    if backup.status != "completed" or not backup.sync_requested or services.storage is None:
        return backup
    from api import cloud

    return await cloud.sync(services, backup.id, actor)


async def _flush_progress(services: Services, backup_id: str, tracker: Tracker) -> None:
    while True:
        await asyncio.sleep(1.0)
        phase, done, total = tracker.snapshot()
        with contextlib.suppress(Exception):
            async with transaction(services.sessions) as session:
                backup = await session.get(SystemBackup, backup_id)
                if backup is not None and backup.status == "in_progress":
                    backup.phase, backup.progress_bytes, backup.progress_total = phase, done, total


async def run(
    services: Services,
    backup_id: str,
    views: list[ProgressView] | None = None,
    client_address: str | None = None,
) -> SystemBackup:
    """Run a pending backup to `completed` or `failed`. The caller holds the lock.

    Failures of the backup itself end in a `failed` record (with the reason, an audit entry
    and a log line), returned rather than raised.
    """
    settings = services.settings
    tracker = Tracker(views)
    async with transaction(services.sessions) as session:
        backup = await service.get(session, backup_id)
        backup.status = "in_progress"
        backup.started_at = service.now()
        backup.phase = "starting"
        name, kind, created_at, actor = (
            backup.name,
            backup.type,
            backup.created_at,
            backup.created_by,
        )
    flusher = asyncio.create_task(_flush_progress(services, backup_id, tracker))
    final: Path | None = None
    try:
        url = settings.require_database_url()
        root = uploads.check_root(settings.uploads_dir)
        folder = settings.backup_dir
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        final = folder / f"{name}{suffix_for(settings.backup_compression)}"
        built = await _build(services, url, root, final, name, kind, created_at, tracker)
        tracker.phase("verifying", built.size)
        verified = await asyncio.to_thread(
            read_archive,
            final,
            expected_sha256=built.sha256,
            checksum_source="just-written",
            on_progress=tracker.advance,
        )
        assert verified.manifest is not None
    except BaseException as error:
        flusher.cancel()
        reason = _reason(error)
        if final is not None and not isinstance(error, FileExistsError):
            _remove_archive(final)
        async with transaction(services.sessions) as session:
            backup = await service.get(session, backup_id)
            backup.status = "failed"
            backup.error_message = reason
            backup.completed_at = service.now()
            backup.phase = None
            await audit.record(
                session,
                actor or "system",
                "backup.run",
                name,
                "failed",
                {"id": backup_id, "type": kind, "error": reason},
                client_address,
            )
        log.error("backup %s (%s) failed: %s", name, backup_id, reason)
        if not isinstance(error, Exception):
            raise  # cancellation and interrupts go on after the record is written
        return backup
    finally:
        flusher.cancel()
    manifest = verified.manifest
    async with transaction(services.sessions) as session:
        backup = await service.get(session, backup_id)
        backup.status = "completed"
        backup.file_path = str(final.resolve())
        backup.file_size = built.size
        backup.checksum = built.sha256
        backup.table_count = manifest.database.table_count
        backup.record_count = manifest.database.record_count
        backup.uploaded_files_count = manifest.uploads.file_count
        backup.app_version = manifest.app_version
        backup.schema_version = manifest.schema_version
        backup.completed_at = manifest.completed_at
        backup.phase = None
        backup.progress_bytes = built.size
        backup.progress_total = built.size
        if backup.sync_requested:  # a process that dies before the upload leaves it due
            backup.sync_status, backup.next_sync_at = "pending", service.now()
        await audit.record(
            session,
            actor or "system",
            "backup.run",
            name,
            "completed",
            {"id": backup_id, "type": kind, "size": built.size, "sha256": built.sha256},
            client_address,
        )
    log.info("backup %s completed: %s (%d bytes)", name, final, built.size)
    return backup


def _reason(error: BaseException) -> str:
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
            ArchiveWriter(final, settings.backup_compression) as writer,
        ):
            skipped: list[str] = []
            dump_job = asyncio.ensure_future(
                postgres.dump(url, settings, spool, on_progress=tracker.advance, cancel=cancel)
            )
            files_job = asyncio.ensure_future(
                asyncio.to_thread(_add_uploads, writer, root, tracker, skipped, cancel)
            )
            try:
                dump, (files, directories) = await asyncio.gather(dump_job, files_job)
            except BaseException:
                cancel.set()
                await asyncio.gather(dump_job, files_job, return_exceptions=True)
                raise
            tracker.phase("writing archive", dump.size)
            spool.flush()
            spool.seek(0)
            mtime_ns = time.time_ns()
            sha = await asyncio.to_thread(
                writer.add_file,
                fmt.DATABASE_NAME,
                cast(BinaryIO, _Counting(spool, tracker)),
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
            sha256, size = await asyncio.to_thread(writer.commit)
            if skipped:
                log.warning(
                    "backup %s skipped %d link(s) or special file(s) under UPLOADS_DIR: %s",
                    name,
                    len(skipped),
                    ", ".join(skipped[:5]),
                )
            return _Built(sha256=sha256, size=size, dump=dump, skipped=skipped)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spool_path)


class _Counting:
    """Reads through, telling the tracker how far it got."""

    def __init__(self, source: BinaryIO, tracker: Tracker) -> None:
        self._source = source
        self._tracker = tracker

    def read(self, size: int = -1) -> bytes:
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
                cast(BinaryIO, _Counting(handle, tracker)),
                info.st_size,
                entry.mode,
                info.st_mtime_ns,
            )
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
