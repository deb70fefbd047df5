"""The ticker: every SCHEDULER_TICK_SECONDS (60, on the minute) run the schedules that are due.

APScheduler is only the clock here; cron semantics are cronsim's (api.schedules.cron). Each run
is claimed with a compare-and-set on nextRunAt under the mutation lock, so any number of
processes on one catalog start each fire time exactly once. A run that meets a running backup
or restore is left due and retried at the next tick: not lost, not counted as a failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from api.db import transaction
from api.errors import AppError, Busy
from api.notify import alert
from api.operations import Operations, ScheduledBackupOp, SyncOp, sync
from api.operations.backup import NotDue
from api.operations.delete import purge_pending
from api.operations.engine import ShuttingDown
from api.schedules import service as schedules

log = logging.getLogger("nexus_backup.scheduler")


async def tick(operations: Operations, at: datetime | None = None) -> list[str]:
    """Run every schedule due at `at` (default: now), then the due cloud syncs and unfinished
    deletions, then check the no-backup alert; return the ids of the backups it ran."""
    at = at or datetime.now(UTC)
    services = operations.services
    async with transaction(services.sessions) as session:
        due = [(s.id, s.next_run_at) for s in await schedules.due(session, at)]
    ran: list[str] = []
    for schedule_id, fire_time in due:
        assert fire_time is not None
        run = ScheduledBackupOp(schedule_id=schedule_id, fire_time=fire_time, at=at)
        try:
            backup = await operations.run(run)
        except Busy:
            log.info(
                "schedule %s is due but a backup or restore is running: next tick", schedule_id
            )
            break
        except NotDue:
            continue  # another process claimed it, or it changed meanwhile
        ran.append(backup.id)
    await sync_due(operations, at)
    for note in await purge_pending(services):
        log.info("%s", note)
    await check_alerts(operations, at)
    return ran


async def check_alerts(operations: Operations, at: datetime) -> None:
    """The "no backup for ALERT_NO_BACKUP_HOURS" alert, at the tick's time (once per stale
    period across replicas: api.notify.alert)."""
    try:
        await alert.check_no_backup(operations.services, operations.notifier, at)
    except Exception:
        log.exception("the no-backup alert check failed")


async def sync_due(operations: Operations, at: datetime) -> list[str]:
    """Sync every backup whose sync is pending and due at `at`; return the ids now synced."""
    synced: list[str] = []
    for backup_id in await sync.claim_due(operations.services, at):
        try:
            backup = await operations.run(SyncOp(backup_id))
        except AppError:  # refused (audited) or taken meanwhile: the others still sync
            continue
        if backup.sync_status == "synced":
            synced.append(backup_id)
    return synced


def next_due(due: datetime, every: timedelta, after: datetime) -> datetime:
    """The first instant of the grid `due + k * every` (k >= 1) later than `after`."""
    steps = max(1, (after - due) // every + 1)
    return due + steps * every


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """The in-process ticker, started and stopped by the app's lifespan.

    `lag_seconds` is how late the last tick started after its due time (a tick that runs a long
    backup delays the next one); `due_at` is when the next tick is due. GET /metrics reports
    them as nexus_scheduler_lag_seconds."""

    def __init__(self, operations: Operations, clock: Callable[[], datetime] = _utc_now) -> None:
        self._operations = operations
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._clock = clock
        self.lag_seconds: float | None = None
        self.due_at: datetime | None = None

    @property
    def every(self) -> timedelta:
        return timedelta(seconds=self._operations.services.settings.scheduler_tick_seconds)

    def start(self) -> None:
        seconds = self._operations.services.settings.scheduler_tick_seconds
        now = self._clock()
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
        self.due_at = first
        self._scheduler.start()

    async def _tick(self) -> None:
        now = self._clock()
        if self.due_at is not None:
            self.lag_seconds = max(0.0, (now - self.due_at).total_seconds())
            self.due_at = next_due(self.due_at, self.every, now)
        try:
            await tick(self._operations)
        except ShuttingDown as stopped:  # its runs recorded themselves "interrupted by shutdown"
            log.info("scheduler tick stopped: %s", stopped.detail)
        except Exception:
            log.exception("scheduler tick failed")

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
