"""A backup's life: pending record (under the mutation lock), in_progress, the archive
(api.backups.runner), completed or failed. After-hooks sync it and apply retention."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from api import faults, logs
from api.audit import service as audit
from api.audit.service import Caller
from api.backups import runner, service
from api.backups.models import SystemBackup
from api.db import transaction
from api.errors import Busy, Conflict
from api.locks import MUTATION_LOCK
from api.notify import report
from api.operations.engine import INTERRUPTED_BY_SHUTDOWN, Context, Operation, R
from api.restores import service as restores
from api.schedules import service as schedules
from api.schedules.models import BackupSchedule
from api.services import Services
from api.states import (
    AuditOutcome,
    BackupPhase,
    BackupStatus,
    BackupType,
    OperationKind,
    SyncStatus,
)

log = logging.getLogger("nexus_backup.backups")


async def busy_error(services: Services) -> Busy:
    """The 409 to give while another mutation holds the lock, naming it when it is known."""
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


class Mutation(Operation[R]):
    """Base of the kinds that change the backups or the live data: one at a time."""

    lock = MUTATION_LOCK

    async def busy(self, ctx: Context) -> Busy:
        return await busy_error(ctx.services)


@dataclass
class BackupOp(Mutation[SystemBackup]):
    """Back up the database and uploads. The result is the record (completed or failed: a
    failure of the backup itself is recorded and returned, not raised)."""

    name: str | None = None
    type: str = BackupType.manual
    description: str | None = None
    schedule_id: str | None = None
    sync_to_cloud: bool = False

    kind = OperationKind.backup

    async def prepare(self, ctx: Context) -> None:
        kind = service.check_type(self.type)
        description = service.check_description(self.description)
        services = ctx.services
        async with transaction(services.sessions) as session:
            if self.name is None:
                base = service.default_name(kind)
                name, n = base, 1
                while await service.name_taken(session, name) or _archive_exists(services, name):
                    n += 1
                    name = f"{base}-{n}"
            else:
                name = service.check_name(self.name)
                if await service.name_taken(session, name) or _archive_exists(services, name):
                    raise Conflict(f"a backup named {name!r} already exists; choose another name")
            backup = SystemBackup(
                id=service.new_id(),
                name=name,
                description=description,
                type=kind,
                status=BackupStatus.pending,
                compression=runner.codec(services.settings, kind).compression.value,
                is_cloud_synced=False,
                progress_bytes=0,
                schedule_id=self.schedule_id,
                sync_requested=self.sync_to_cloud,
                created_by=ctx.caller.actor,
                created_at=service.now(),
            )
            session.add(backup)
            await audit.record(
                session,
                ctx.caller,
                action="backup.create",
                target=name,
                outcome=AuditOutcome.started,
                detail={"id": backup.id, "type": kind},
            )
        self.id, self.record = backup.id, backup

    record: SystemBackup | None = None  # the pending record, as prepare() wrote it

    async def run(self, ctx: Context) -> SystemBackup:
        assert self.id is not None
        backup_id = self.id
        async with transaction(ctx.services.sessions) as session:
            backup = await service.get(session, backup_id)
            backup.status = BackupStatus.in_progress
            backup.started_at = service.now()
            backup.phase = BackupPhase.starting
            name, kind, created_at = backup.name, backup.type, backup.created_at
        try:
            made = await runner.archive(ctx.services, name, kind, created_at, ctx.tracker)
        except BaseException as error:
            reason = logs.scrub(ctx.services.settings, runner.reason(error))
            if isinstance(error, asyncio.CancelledError) and ctx.operations.stopping:
                reason = INTERRUPTED_BY_SHUTDOWN  # pg_dump stopped, partial files removed
            async with transaction(ctx.services.sessions) as session:
                backup = await service.get(session, backup_id)
                backup.status, backup.error_message = BackupStatus.failed, reason
                backup.completed_at, backup.phase = service.now(), None
                await audit.record(
                    session,
                    ctx.caller,
                    action="backup.run",
                    target=name,
                    outcome=AuditOutcome.failed,
                    detail={"id": backup_id, "type": kind, "error": reason},
                )
            log.error("backup %s (%s) failed: %s", name, backup_id, reason)
            if not isinstance(error, Exception):
                # Interrupted (a shutdown): a failed backup all the same, so it is reported
                # here; the after-hooks that report the others do not run for a cancellation.
                report.backup_ended(ctx.operations.notifier, backup)
                raise  # cancellation and interrupts go on after the record is written
            return backup
        faults.point("backup.after_publish")
        manifest = made.manifest
        async with transaction(ctx.services.sessions) as session:
            backup = await service.get(session, backup_id)
            backup.status = BackupStatus.completed
            backup.file_path = str(made.path)
            backup.file_size, backup.checksum = made.size, made.sha256
            backup.table_count = manifest.database.table_count
            backup.record_count = manifest.database.record_count
            backup.uploaded_files_count = manifest.uploads.file_count
            backup.app_version = manifest.app_version
            backup.schema_version = manifest.schema_version
            backup.completed_at = manifest.completed_at
            backup.phase = None
            backup.progress_bytes = backup.progress_total = made.size
            if backup.sync_requested:  # a process that dies before the upload leaves it due
                backup.sync_status, backup.next_sync_at = SyncStatus.pending, service.now()
            await audit.record(
                session,
                ctx.caller,
                action="backup.run",
                target=name,
                outcome=AuditOutcome.completed,
                detail={"id": backup_id, "type": kind, "size": made.size, "sha256": made.sha256},
            )
        return backup

    async def save_progress(
        self, ctx: Context, phase: str | None, done: int, total: int | None
    ) -> None:
        assert self.id is not None
        async with transaction(ctx.services.sessions) as session:
            backup = await session.get(SystemBackup, self.id)
            if backup is not None and backup.status == BackupStatus.in_progress:
                backup.phase, backup.progress_bytes, backup.progress_total = phase, done, total


class NotDue(Exception):
    """The schedule's run was claimed by another process, or the schedule changed."""


@dataclass
class ScheduledBackupOp(BackupOp):
    """The backup a schedule's fire time asks for: claimed exactly once across processes with a
    compare-and-set on nextRunAt, under the mutation lock."""

    fire_time: datetime | None = None
    at: datetime | None = None
    retention_days: int | None = None

    async def prepare(self, ctx: Context) -> None:
        assert self.schedule_id is not None
        assert self.fire_time is not None
        async with transaction(ctx.services.sessions) as session:
            schedule = await session.get(BackupSchedule, self.schedule_id)
            at = self.at or self.fire_time
            if schedule is None or not await schedules.claim(session, schedule, self.fire_time, at):
                raise NotDue(self.schedule_id)
            ctx.caller = Caller(f"schedule:{schedule.name}")
            self.type = BackupType.scheduled
            self.sync_to_cloud = schedule.sync_to_cloud
            self.retention_days = schedule.retention_days
            self.description = (
                f"scheduled by {schedule.name!r} for {self.fire_time:%Y-%m-%d %H:%M} UTC"
            )
        await super().prepare(ctx)


def _archive_exists(services: Services, name: str) -> bool:
    folder = services.settings.backup_dir
    return any((folder / f"{name}{suffix}").exists() for suffix in (".tar.gz", ".tar.zst"))
