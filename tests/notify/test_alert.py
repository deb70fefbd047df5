"""The "no backup for ALERT_NO_BACKUP_HOURS" alert, checked on the scheduler tick at the time
passed in: once per stale period (not every tick), again only after a new backup goes stale,
and once across replicas sharing the catalog."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from api.notify import alert
from api.operations import BackupOp, Operations
from api.scheduler import tick
from api.services import open_services
from tests.conftest import App
from tests.notify.conftest import Receiver, notify_settings, notifying


async def test_the_alert_fires_once_per_stale_period_and_again_after_a_new_backup_goes_stale(
    app: App, receiver: Receiver
) -> None:
    settings = notify_settings(receiver, None, alert_no_backup_hours=6)
    async with notifying(app, settings) as api:
        operations = api.operations

        async def alerts_after(at: datetime) -> int:
            await tick(operations, at)
            await operations.notifier.drain()
            return len(receiver.of("no_backup"))

        first = await operations.run(BackupOp(name="last-good"))
        assert first.completed_at is not None
        t1 = first.completed_at
        assert await alerts_after(t1 + timedelta(hours=5, minutes=59)) == 0, "not stale yet"
        assert await alerts_after(t1 + timedelta(hours=6)) == 1
        assert await alerts_after(t1 + timedelta(hours=6, minutes=1)) == 1, "not every tick"
        assert await alerts_after(t1 + timedelta(hours=30)) == 1, "once per stale period"

        second = await operations.run(BackupOp(name="next-good"))
        assert second.completed_at is not None
        t2 = second.completed_at
        assert await alerts_after(t2 + timedelta(hours=5)) == 1, "the new backup is recent"
        assert await alerts_after(t2 + timedelta(hours=6, minutes=1)) == 2
        assert await alerts_after(t2 + timedelta(hours=7)) == 2

    first_alert, second_alert = receiver.of("no_backup")
    assert first_alert["backup"] == "last-good"
    assert first_alert["status"] == "stale"
    assert first_alert["error"] == "no backup has completed for 6 hours"
    assert first_alert["at"] == (t1 + timedelta(hours=6)).isoformat()
    assert "ALERT_NO_BACKUP_HOURS=6" in first_alert["text"]
    assert second_alert["backup"] == "next-good"


async def test_with_no_backup_ever_the_alert_counts_from_when_watching_began(
    app: App, receiver: Receiver
) -> None:
    start = datetime(2031, 1, 1, 0, 0, tzinfo=UTC)
    settings = notify_settings(receiver, None, alert_no_backup_hours=2)
    async with notifying(app, settings) as api:
        await tick(api.operations, start)
        await tick(api.operations, start + timedelta(hours=1))
        await api.operations.notifier.drain()
        assert receiver.posts == []
        await tick(api.operations, start + timedelta(hours=2))
        await api.operations.notifier.drain()
        shown = (await api.client.get("/notifications", headers=await api.headers())).json()
    (only,) = receiver.of("no_backup")
    assert only["backup"] is None
    assert "No backup has ever completed since 2031-01-01 00:00:00 UTC" in only["text"]
    assert shown["lastNoBackupAlertAt"] == "2031-01-01T02:00:00Z"


async def test_no_alert_without_alert_no_backup_hours(app: App, receiver: Receiver) -> None:
    async with notifying(app, notify_settings(receiver, None)) as api:
        at = datetime(2031, 1, 1, tzinfo=UTC)
        await tick(api.operations, at)
        await tick(api.operations, at + timedelta(days=400))
        await api.operations.notifier.drain()
    assert receiver.posts == []


async def test_two_replicas_on_one_catalog_send_the_alert_once(
    app: App, receiver: Receiver
) -> None:
    settings = notify_settings(receiver, None, alert_no_backup_hours=1)
    async with notifying(app, settings) as api:
        done = await api.operations.run(BackupOp(name="only-one"))
        assert done.completed_at is not None
        other = await open_services(app.settings(**settings))
        try:
            replica = Operations(other)
            replica.notifier.delays = (0.0, 0.0)
            at = done.completed_at + timedelta(hours=2)
            sent = await asyncio.gather(
                *(
                    alert.check_no_backup(ops.services, ops.notifier, at)
                    for ops in (api.operations, replica, api.operations, replica)
                )
            )
            assert sorted(sent) == [False, False, False, True]
            later = at + timedelta(minutes=1)
            await asyncio.gather(tick(api.operations, later), tick(replica, later))
            await api.operations.notifier.drain()
            await replica.notifier.drain()
        finally:
            await other.close()
    assert len(receiver.of("no_backup")) == 1, receiver.posts
