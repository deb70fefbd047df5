"""The "no backup for N hours" alert, checked on every scheduler tick at the tick's time.

A stale period is named by the newest completed backup's time (or, before any backup, by when
this catalog started watching). The alert is sent once per period: the replica whose atomic
`UPDATE notify_alert ... WHERE alerted_for IS DISTINCT FROM <period>` changes the row sends it,
every other replica (and every later tick) finds it already sent. A new completed backup starts
a new period, which alerts again once it is N hours old.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert

from api.backups.models import SystemBackup
from api.db import transaction
from api.notify.events import Event, EventKind, utc_text
from api.notify.models import NotifyAlert
from api.notify.service import Notifier
from api.services import Services
from api.states import BackupStatus

log = logging.getLogger("nexus_backup.notify")

NO_BACKUP = "no_backup"


async def check_no_backup(services: Services, notifier: Notifier, at: datetime) -> bool:
    """Alert when no backup has completed for ALERT_NO_BACKUP_HOURS at `at`; True when this
    call sent the alert (once per stale period across every replica)."""
    hours = services.settings.alert_no_backup_hours
    if hours is None:
        return False
    async with transaction(services.sessions) as session:
        await session.execute(
            insert(NotifyAlert)
            .values(name=NO_BACKUP, watching_since=at)
            .on_conflict_do_nothing(index_elements=["name"])
        )
    async with transaction(services.sessions) as session:
        last = (
            await session.execute(
                select(SystemBackup.id, SystemBackup.name, SystemBackup.completed_at)
                .where(
                    SystemBackup.status == BackupStatus.completed,
                    SystemBackup.completed_at.is_not(None),
                )
                .order_by(SystemBackup.completed_at.desc())
                .limit(1)
            )
        ).first()
        watching_since = (
            await session.execute(
                select(NotifyAlert.watching_since).where(NotifyAlert.name == NO_BACKUP)
            )
        ).scalar_one()
        period = last.completed_at if last is not None else watching_since
        if at - period < timedelta(hours=hours):
            return False
        won = await session.execute(
            update(NotifyAlert)
            .where(
                NotifyAlert.name == NO_BACKUP,
                or_(NotifyAlert.alerted_for.is_(None), NotifyAlert.alerted_for != period),
            )
            .values(alerted_for=period, alerted_at=at)
            .returning(NotifyAlert.name)
        )
        if won.first() is None:
            return False  # sent already for this period (here or by another replica)
    if last is not None:
        note = (
            f"The last completed backup, {last.name}, finished at {utc_text(last.completed_at)}; "
            f"alert threshold ALERT_NO_BACKUP_HOURS={hours}."
        )
    else:
        note = (
            f"No backup has ever completed since {utc_text(watching_since)}; "
            f"alert threshold ALERT_NO_BACKUP_HOURS={hours}."
        )
    age = int((at - period).total_seconds() // 3600)
    log.warning("no backup has completed for %d hours (threshold %d): alerting", age, hours)
    notifier.send(
        Event(
            EventKind.no_backup,
            at=at,
            status="stale",
            backup=last.name if last is not None else None,
            error=f"no backup has completed for {age} hours",
            link="/backups",
            note=note + " Check the schedules and the last backups' errors.",
        )
    )
    return True
