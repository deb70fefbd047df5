"""The ticker: every SCHEDULER_TICK_SECONDS (60, on the minute) run the schedules that are due.

APScheduler is only the clock here; cron semantics are cronsim's (api.schedules.cron). Each run
is claimed with a compare-and-set on nextRunAt under the mutation lock, so any number of
processes on one catalog start each fire time exactly once. A run that meets a running backup
or restore is left due and retried at the next tick: not lost, not counted as a failure.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select

from api import cloud, paths
from api.audit import service as audit
from api.backups import runner
from api.backups import service as backups
from api.backups.models import SystemBackup
from api.db import transaction
from api.errors import NotConfigured, UnsafePath
from api.locks import MutationLock
from api.schedules import retention
from api.schedules import service as schedules
from api.schedules.models import BackupSchedule
from api.services import Services
from api.storage.base import StorageError

log = logging.getLogger("nexus_backup.scheduler")


async def tick(services: Services, at: datetime | None = None) -> list[str]:
    """Run every schedule due at `at` (default: now); return the ids of the backups it ran."""
    at = at or datetime.now(UTC)
    async with transaction(services.sessions) as session:
        due = [(s.id, s.next_run_at) for s in await schedules.due(session, at)]
    ran: list[str] = []
    for schedule_id, fire_time in due:
        assert fire_time is not None
        lock = MutationLock(services.engine)
        if not await lock.try_acquire():
            log.info(
                "schedule %s is due but a backup or restore is running: next tick", schedule_id
            )
            break
        try:
            backup = await _run_one(services, schedule_id, fire_time, at, lock)
        finally:
            await lock.release()
        if backup is not None:
            ran.append(backup.id)
            await runner.after_backup(services, backup, backup.created_by or "schedule")
    await cloud.retry_due(services, at)
    return ran


async def _run_one(
    services: Services, schedule_id: str, fire_time: datetime, at: datetime, lock: MutationLock
) -> SystemBackup | None:
    async with transaction(services.sessions) as session:
        schedule = await session.get(BackupSchedule, schedule_id)
        if schedule is None or not await schedules.claim(session, schedule, fire_time, at):
            return None  # another process claimed it, or it changed meanwhile
        name, retention_days = schedule.name, schedule.retention_days
        sync_to_cloud = schedule.sync_to_cloud
    actor = f"schedule:{name}"
    backup = await runner.create_backup(
        services,
        runner.BackupRequest(
            type="scheduled",
            actor=actor,
            schedule_id=schedule_id,
            sync_to_cloud=sync_to_cloud,
            description=f"scheduled by {name!r} for {fire_time:%Y-%m-%d %H:%M} UTC",
        ),
        lock=lock,
    )
    success = backup.status == "completed"
    async with transaction(services.sessions) as session:
        await schedules.count_outcome(session, schedule_id, success)
    if success:
        await apply_retention(services, schedule_id, retention_days, actor, at)
    return backup


async def apply_retention(
    services: Services, schedule_id: str, retention_days: int | None, actor: str, at: datetime
) -> list[str]:
    """Delete the schedule's backups that retention lets go (pure rules in retention.py)."""
    async with transaction(services.sessions) as session:
        rows = (
            (
                await session.execute(
                    select(SystemBackup).where(
                        SystemBackup.schedule_id == schedule_id, SystemBackup.deleted_at.is_(None)
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
        doomed = retention.to_delete(candidates, schedule_id, retention_days, at)
        by_id = {r.id: r for r in rows}
        for backup_id in list(doomed):
            backup = by_id[backup_id]
            try:
                await paths.archive_path(
                    services, backup, action="backup.retention_delete", actor=actor
                )
                await cloud.delete_remote(services, backup, actor=actor)
            except (StorageError, NotConfigured, UnsafePath) as error:
                log.warning(
                    "retention keeps %s for now: %s",
                    backup.name,
                    error,
                )
                doomed.remove(backup_id)
                continue
            await backups.delete(session, backup, services.settings.backup_dir)
            await audit.record(
                session,
                actor,
                "backup.retention_delete",
                backup.name,
                "completed",
                {"id": backup.id, "retentionDays": retention_days},
            )
    for backup_id in doomed:
        log.info("retention deleted backup %s of schedule %s", backup_id, schedule_id)
    return doomed


class Scheduler:
    """The in-process ticker, started and stopped by the app's lifespan."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    def start(self) -> None:
        seconds = self._services.settings.scheduler_tick_seconds
        now = datetime.now(UTC)
        first = now
        if seconds % 60 == 0:  # on the minute
            first = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        self._scheduler.add_job(
            self._tick,
            IntervalTrigger(seconds=seconds, start_date=first, timezone=UTC),
            id="nexus-backup-tick",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        self._scheduler.start()

    async def _tick(self) -> None:
        try:
            await tick(self._services)
        except Exception:
            log.exception("scheduler tick failed")

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
