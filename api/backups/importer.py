"""Disaster recovery without the catalog: add every archive found in BACKUP_DIR and in the
bucket that the catalog does not list, from its sidecar and manifest (verified on the way)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from sqlalchemy import select

from api import paths
from api.archive.reader import VerifiedArchive, archive_stem, read_archive
from api.archive.writer import partial_path, read_sidecar
from api.audit import service as audit
from api.backups import service
from api.backups.models import SystemBackup
from api.db import transaction
from api.errors import ArchiveError, UnsafePath
from api.services import Services
from api.states import AuditOutcome, BackupStatus, BackupType, SyncStatus
from api.storage.base import StorageError

log = logging.getLogger("nexus_backup.import")
SUFFIXES = (".tar.gz", ".tar.zst")


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _record(
    verified: VerifiedArchive, path_or_key: str, *, local: bool, provider: str | None
) -> SystemBackup:
    manifest = verified.manifest
    name = service.check_name(manifest.name if manifest else archive_stem(Path(path_or_key)))
    kind = manifest.type if manifest and manifest.type in tuple(BackupType) else BackupType.manual
    created = manifest.created_at if manifest else datetime.now(UTC)
    return SystemBackup(
        id=service.new_id(),
        name=name,
        description="imported by nexus-backup catalog import",
        type=kind,
        status=BackupStatus.completed,
        file_path=path_or_key if local else None,
        file_size=verified.size,
        checksum=verified.sha256,
        compression=verified.compression.value,
        cloud_path=None if local else path_or_key,
        cloud_provider=None if local else provider,
        is_cloud_synced=not local,
        sync_status=SyncStatus.none if local else SyncStatus.synced,
        table_count=manifest.database.table_count if manifest else None,
        record_count=manifest.database.record_count if manifest else None,
        uploaded_files_count=(
            manifest.uploads.file_count if manifest else len(verified.upload_files())
        ),
        app_version=verified.app_version,
        schema_version=manifest.schema_version if manifest else None,
        created_by="import",
        started_at=created,
        completed_at=manifest.completed_at if manifest else created,
        created_at=created,
    )


async def import_archives(services: Services) -> ImportReport:
    report = ImportReport()
    async with transaction(services.sessions) as session:
        rows = (
            (await session.execute(select(SystemBackup).where(SystemBackup.deleted_at.is_(None))))
            .scalars()
            .all()
        )
        known_sums = {r.checksum for r in rows if r.checksum}
        known_names = {r.name for r in rows}
    folder = services.settings.backup_dir
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.name.endswith(SUFFIXES):
                continue
            try:
                if not paths.is_file(path, folder):
                    raise UnsafePath(f"refused {path}: it is not a regular file", str(path))
            except UnsafePath as error:  # e.g. a link to a file outside BACKUP_DIR
                await _refuse(services, error, path.name, report)
                continue
            await _import_local(services, path, known_sums, known_names, report)
    if services.storage is not None:
        try:
            objects = await services.storage.list("")
        except StorageError as error:
            report.problems.append(f"cannot list the bucket: {error}")
            objects = []
        for item in objects:
            if not item.key.endswith(SUFFIXES):
                continue
            try:
                key = paths.cloud_key(item.key)
            except UnsafePath as error:  # e.g. `prefix/../../etc/x.tar.gz`
                await _refuse(services, error, item.key, report)
                continue
            if not PurePosixPath(key).name.startswith("."):
                await _import_remote(services, key, known_sums, known_names, report)
    return report


async def _refuse(services: Services, error: UnsafePath, target: str, report: ImportReport) -> None:
    await paths.record_refusal(services, error, actor="cli", action="backup.import", target=target)
    report.problems.append(error.detail)


async def _add(services: Services, record: SystemBackup, report: ImportReport) -> None:
    async with transaction(services.sessions) as session:
        session.add(record)
        await audit.record(
            session,
            audit.CLI,
            action="backup.import",
            target=record.name,
            outcome=AuditOutcome.completed,
            detail={"id": record.id, "sha256": record.checksum, "cloudPath": record.cloud_path},
        )
    report.imported.append(record.name)


async def _import_local(
    services: Services, path: Path, sums: set[str], names: set[str], report: ImportReport
) -> None:
    try:
        expected = read_sidecar(path)
    except ValueError as error:
        report.problems.append(str(error))
        return
    if expected in sums:
        report.skipped.append(path.name)
        return
    try:
        verified = await asyncio.to_thread(
            read_archive, path, expected_sha256=expected, checksum_source="sidecar"
        )
        record = _record(verified, str(path.resolve()), local=True, provider=None)
    except (ArchiveError, Exception) as error:
        report.problems.append(f"{path.name}: {getattr(error, 'detail', error)}")
        return
    if record.name in names or verified.sha256 in sums:
        report.skipped.append(path.name)
        return
    await _add(services, record, report)
    sums.add(verified.sha256)
    names.add(record.name)


async def _import_remote(
    services: Services, key: str, sums: set[str], names: set[str], report: ImportReport
) -> None:
    storage = services.storage
    assert storage is not None
    folder = services.settings.backup_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = PurePosixPath(key).name  # one plain segment: cloud_key refused the rest
    scratch = partial_path(folder / name)
    sidecar_file = partial_path(folder / (name + ".sha256"))
    try:
        expected: str | None = None
        if await storage.stat(key + ".sha256") is not None:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            with os.fdopen(os.open(sidecar_file, flags, 0o600), "w+b") as handle:
                await storage.get(key + ".sha256", handle)
                handle.seek(0)
                token = handle.read(200).split()
                expected = token[0].decode() if token else None
        if expected is not None and expected in sums:
            report.skipped.append(key)
            return
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            await storage.get(key, handle)
        verified = await asyncio.to_thread(
            read_archive, scratch, expected_sha256=expected, checksum_source="bucket sidecar"
        )
        record = _record(verified, key, local=False, provider=storage.name)
        if record.name in names or verified.sha256 in sums:
            report.skipped.append(key)
            return
        await _add(services, record, report)
        sums.add(verified.sha256)
        names.add(record.name)
    except (StorageError, ArchiveError, OSError, ValueError) as error:
        report.problems.append(f"{key}: {getattr(error, 'detail', error)}")
    finally:
        for leftover in (scratch, sidecar_file):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
