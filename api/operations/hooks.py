"""What runs after an operation, by kind: the one place to add after-work (notifications,
drills). Each hook takes (context, operation, result) and returns the result, updated when it
changed the record (a sync). A hook's failure is its own: it never undoes the operation."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from api.backups.models import SystemBackup
from api.db import transaction
from api.errors import AppError
from api.operations.backup import BackupOp, ScheduledBackupOp
from api.operations.delete import RetentionOp
from api.operations.engine import Context, Hook
from api.operations.sync import SyncOp
from api.schedules import service as schedules
from api.states import BackupStatus

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


AFTER: Mapping[str, Sequence[Hook]] = {
    BackupOp.kind: (count_schedule_outcome, apply_retention, sync_if_asked),
}
