"""What runs after an operation, by kind: the one place to add after-work (notifications,
drills). Each hook takes (context, operation, result) and returns the result, updated when it
changed the record (a sync). A hook's failure is its own: it never undoes the operation.

A kind whose failure raises (a restore) has FAILED hooks instead: (context, operation, error),
called by the engine as the error passes; they only hand work to the background."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from api.backups import service as backups
from api.backups.models import SystemBackup
from api.db import transaction
from api.errors import AppError
from api.notify import report
from api.operations.backup import BackupOp, ScheduledBackupOp
from api.operations.delete import RetentionOp
from api.operations.engine import Context, FailedHook, Hook
from api.operations.restore import RestoreOp
from api.operations.sync import SyncOp
from api.restores import runner as restores
from api.schedules import service as schedules
from api.states import BackupStatus, RestoreStatus, SyncStatus

log = logging.getLogger("nexus_backup.operations")


async def count_schedule_outcome(
    ctx: Context, operation: BackupOp, backup: SystemBackup
) -> SystemBackup:
    if isinstance(operation, ScheduledBackupOp) and operation.schedule_id:
        async with transaction(ctx.services.sessions) as session:
            await schedules.count_outcome(
                session, operation.schedule_id, backup.status == BackupStatus.completed
            )
    return backup


async def apply_retention(ctx: Context, operation: BackupOp, backup: SystemBackup) -> SystemBackup:
    """After a successful scheduled backup: let go what the schedule's retention lets go."""
    if isinstance(operation, ScheduledBackupOp) and backup.status == BackupStatus.completed:
        assert operation.schedule_id is not None
        assert operation.at is not None
        await ctx.child(RetentionOp(operation.schedule_id, operation.retention_days, operation.at))
    return backup


async def sync_if_asked(ctx: Context, operation: BackupOp, backup: SystemBackup) -> SystemBackup:
    """Upload a completed backup that asked for it (after the mutation lock is released)."""
    if backup.status != BackupStatus.completed or not backup.sync_requested:
        return backup
    if ctx.services.storage is None:
        return backup
    try:
        return await ctx.child(SyncOp(backup.id))
    except AppError as error:  # e.g. a sync of it already runs: it stays due
        log.warning("backup %s not synced now: %s", backup.name, error.detail)
        return backup


async def notify_backup(ctx: Context, operation: BackupOp, backup: SystemBackup) -> SystemBackup:
    """A failed backup notifies; a completed one too when NOTIFY_ON_SUCCESS (in the background:
    the record is already final)."""
    report.backup_ended(ctx.operations.notifier, backup)
    return backup


async def notify_sync(ctx: Context, operation: SyncOp, backup: SystemBackup) -> SystemBackup:
    """A sync that failed (the record is back to pending, with the reason) notifies."""
    if backup.sync_status == SyncStatus.pending and backup.sync_error:
        report.sync_failed(ctx.operations.notifier, backup)
    return backup


async def notify_restore(
    ctx: Context, operation: RestoreOp, result: restores.RestoreResult
) -> restores.RestoreResult:
    """A completed restore notifies when NOTIFY_ON_SUCCESS (a dry run never does)."""
    done = result.restore
    if done.status == RestoreStatus.completed:
        report.restore_ended(
            ctx.operations.notifier,
            archive=_archive_name(operation),
            restore_id=done.id,
            failed=False,
            error=None,
            at=done.completed_at or done.created_at,
            dry_run=operation.request.dry_run,
        )
    return result


def notify_restore_failed(ctx: Context, operation: RestoreOp, error: Exception) -> None:
    """A restore (or dry run) that failed after its record was written notifies, with the
    reason its record was given."""
    reason = error.detail if isinstance(error, AppError) else f"{type(error).__name__}: {error}"
    report.restore_ended(
        ctx.operations.notifier,
        archive=_archive_name(operation),
        restore_id=operation.id,
        failed=True,
        error=reason,
        at=backups.now(),
        dry_run=operation.request.dry_run,
    )


def _archive_name(operation: RestoreOp) -> str:
    target = operation.target
    if target is None:
        return operation.request.archive
    return target.backup.name if target.backup is not None else target.path.name


AFTER: Mapping[str, Sequence[Hook]] = {
    BackupOp.kind: (notify_backup, count_schedule_outcome, apply_retention, sync_if_asked),
    SyncOp.kind: (notify_sync,),
    RestoreOp.kind: (notify_restore,),
}

FAILED: Mapping[str, Sequence[FailedHook]] = {
    RestoreOp.kind: (notify_restore_failed,),
}
