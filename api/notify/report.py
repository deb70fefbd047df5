"""What the operations tell the notifier: one function per event, called by the after-hooks
(api.operations.hooks), the engine's failure hooks, the scheduler's alert check and, in a later
issue, the restore drills (`drill_failed`). Each returns at once; delivery is in the
background."""

from __future__ import annotations

from datetime import UTC, datetime

from api.backups.models import SystemBackup
from api.notify.events import Event, EventKind, utc_text
from api.notify.service import Notifier
from api.states import BackupStatus


def _link(backup_id: str) -> str:
    return f"/backups/{backup_id}"


def backup_ended(notifier: Notifier, backup: SystemBackup) -> None:
    """A backup that failed; one that completed when NOTIFY_ON_SUCCESS."""
    at = backup.completed_at or backup.created_at
    if backup.status == BackupStatus.failed:
        kind = EventKind.backup_failed
    elif backup.status == BackupStatus.completed:
        kind = EventKind.backup_completed
    else:
        return
    notifier.send(
        Event(
            kind,
            at=at,
            status=backup.status,
            backup=backup.name,
            error=backup.error_message,
            link=_link(backup.id),
            note=f"Type: {backup.type}",
        )
    )


def sync_failed(notifier: Notifier, backup: SystemBackup, at: datetime | None = None) -> None:
    """A cloud upload that failed (the local backup is intact; the sync is retried)."""
    retry = backup.next_sync_at
    notifier.send(
        Event(
            EventKind.sync_failed,
            at=at or datetime.now(UTC),
            status="failed",
            backup=backup.name,
            error=backup.sync_error,
            link=_link(backup.id),
            note=(
                f"The local backup is intact; attempt {backup.sync_attempts} failed, the upload "
                + (f"is retried at {utc_text(retry)}." if retry else "is retried.")
            ),
        )
    )


def restore_ended(
    notifier: Notifier,
    *,
    archive: str,
    restore_id: str | None,
    failed: bool,
    error: str | None,
    at: datetime,
    dry_run: bool = False,
) -> None:
    """A restore (or dry run) that failed; a real one that completed when NOTIFY_ON_SUCCESS."""
    if not failed and dry_run:
        return
    notifier.send(
        Event(
            EventKind.restore_failed if failed else EventKind.restore_completed,
            at=at,
            status="failed" if failed else "completed",
            backup=archive,
            error=error,
            link=f"/restores/{restore_id}" if restore_id else None,
            note="This was a dry run: nothing was changed." if dry_run else None,
        )
    )


def drill_failed(
    notifier: Notifier, *, backup: str, error: str, at: datetime, link: str | None = None
) -> None:
    """A restore drill (a backup restored into a scratch database and checked) that failed."""
    notifier.send(
        Event(EventKind.drill_failed, at=at, status="failed", backup=backup, error=error, link=link)
    )
