"""Deletion, one way for the API, the CLI and retention.

1. Check: the backup is not running, restoring or uploading; its paths stay inside BACKUP_DIR
   and the bucket prefix (a forged row is refused and audited).
2. Mark the record deleted and audit; commit. From here the backup is gone for every reader.
3. Purge, with no catalog transaction open: the cloud copy first, then the local files, then
   `purgedAt`. If the cloud refuses, the mark is undone (nothing was removed) and the caller gets
   503. A process that stops between 2 and 3 leaves a deleted, unpurged record: recovery (and
   every scheduler tick) finishes purging it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from api import paths
from api.audit import service as audit
from api.backups import service as backups
from api.backups.models import SystemBackup
from api.db import transaction
from api.errors import AppError, Conflict, Unavailable
from api.operations.engine import Context, Operation
from api.restores import service as restores
from api.schedules import retention
from api.services import Services
from api.states import AuditOutcome, BackupStatus, OperationKind, SyncStatus
from api.storage import service as storage
from api.storage.base import StorageError

log = logging.getLogger("nexus_backup.delete")


@dataclass
class DeleteOp(Operation[SystemBackup]):
    """Delete one backup: archive, sidecar and cloud copy. The result is the deleted record."""

    backup_id: str
    action: str = "backup.delete"
    detail: dict[str, object] = field(default_factory=dict)

    kind = OperationKind.delete

    async def check(self, ctx: Context) -> None:
        services, actor, address = ctx.services, ctx.caller.actor, ctx.caller.address
        async with transaction(services.sessions) as session:
            backup = await backups.get_visible(session, self.backup_id)
            _check_idle(backup, await restores.running(session))
        self.id = backup.id
        await paths.archive_path(
            services, backup, action=self.action, actor=actor, client_address=address
        )
        key = await paths.archive_key(
            services, backup, action=self.action, actor=actor, client_address=address
        )
        if key is not None:
            storage.require(services.storage)

    async def run(self, ctx: Context) -> SystemBackup:
        async with transaction(ctx.services.sessions) as session:
            backup = await backups.get_visible(session, self.backup_id)
            _check_idle(backup, await restores.running(session))
            backup.deleted_at, backup.purged_at = backups.now(), None
            await audit.record(
                session,
                ctx.caller,
                action=self.action,
                target=backup.name,
                outcome=AuditOutcome.completed,
                detail={"id": backup.id, **self.detail},
            )
        try:
            await purge(ctx.services, self.backup_id)
        except StorageError as error:
            async with transaction(ctx.services.sessions) as session:
                undone = await session.get(SystemBackup, self.backup_id)
                assert undone is not None
                undone.deleted_at = None
                await audit.record(
                    session,
                    ctx.caller,
                    action=self.action,
                    target=undone.name,
                    outcome=AuditOutcome.failed,
                    detail={"id": undone.id, "error": str(error), "undone": True},
                )
            raise Unavailable(
                f"the cloud copy of {backup.name!r} could not be deleted ({error}); nothing was "
                "deleted: try again when the storage is reachable"
            ) from None
        return backup


def _check_idle(backup: SystemBackup, restoring: object) -> None:
    if any(r.backup_id == backup.id for r in restoring):  # type: ignore[attr-defined]
        raise Conflict(f"backup {backup.name!r} is being restored; wait for it to finish")
    if backup.status in (BackupStatus.pending, BackupStatus.in_progress):
        raise Conflict(f"backup {backup.name!r} is {backup.status}; wait for it to finish")
    if backup.sync_status == SyncStatus.syncing:
        raise Conflict(f"backup {backup.name!r} is being uploaded; wait for it to finish")


async def purge(services: Services, backup_id: str) -> None:
    """Remove a deleted backup's cloud copy, then its local files, then mark it purged. Raises
    StorageError when the cloud copy cannot be removed (nothing local was removed then)."""
    async with transaction(services.sessions) as session:
        backup = await session.get(SystemBackup, backup_id)
        if backup is None or backup.deleted_at is None or backup.purged_at is not None:
            return
        name, file_path, cloud_path = backup.name, backup.file_path, backup.cloud_path
    root = services.settings.backup_dir
    if cloud_path:
        key = paths.cloud_key(cloud_path)
        await storage.delete_copy(storage.require(services.storage), key)
    if file_path:
        archive = paths.confined(file_path, root)
        for path in (archive, archive.with_name(archive.name + ".sha256")):
            paths.unlink_file(path, root)
    async with transaction(services.sessions) as session:
        purged = await session.get(SystemBackup, backup_id)
        if purged is not None:
            purged.purged_at = backups.now()
    log.info("purged deleted backup %s (%s)", name, backup_id)


async def purge_pending(services: Services) -> list[str]:
    """Finish every deletion whose files are still there; returns notes for the log."""
    async with transaction(services.sessions) as session:
        pending = (
            await session.execute(
                select(SystemBackup.id, SystemBackup.name).where(
                    SystemBackup.deleted_at.is_not(None), SystemBackup.purged_at.is_(None)
                )
            )
        ).all()
    notes: list[str] = []
    for backup_id, name in pending:
        try:
            await purge(services, backup_id)
        except (AppError, OSError) as error:
            reason = error.detail if isinstance(error, AppError) else str(error)
            notes.append(f"deleted backup {name} ({backup_id}) is not purged yet: {reason}")
            continue
        notes.append(f"finished purging deleted backup {name} ({backup_id})")
    return notes


@dataclass
class RetentionOp(Operation[list[str]]):
    """Delete what a schedule's retention lets go (pure rules: api.schedules.retention), one
    deletion at a time through DeleteOp. A backup that cannot be deleted now is kept for the
    next run. The result is the ids deleted."""

    schedule_id: str
    retention_days: int | None
    at: datetime

    kind = OperationKind.retention

    async def run(self, ctx: Context) -> list[str]:
        async with transaction(ctx.services.sessions) as session:
            rows = (
                (
                    await session.execute(
                        select(SystemBackup).where(
                            SystemBackup.schedule_id == self.schedule_id,
                            SystemBackup.deleted_at.is_(None),
                        )
                    )
                )
                .scalars()
                .all()
            )
        candidates = [
            retention.Candidate(
                id=r.id,
                schedule_id=r.schedule_id,
                type=r.type,
                status=r.status,
                completed_at=r.completed_at,
                created_at=r.created_at,
            )
            for r in rows
        ]
        deleted: list[str] = []
        for backup_id in retention.to_delete(
            candidates, self.schedule_id, self.retention_days, self.at
        ):
            doomed = DeleteOp(
                backup_id,
                action="backup.retention_delete",
                detail={"retentionDays": self.retention_days},
            )
            try:
                await ctx.child(doomed)
            except AppError as error:
                log.warning("retention keeps %s for now: %s", backup_id, error.detail)
                continue
            deleted.append(backup_id)
            log.info("retention deleted backup %s of schedule %s", backup_id, self.schedule_id)
        return deleted
