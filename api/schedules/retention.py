"""Retention: which of a schedule's backups may be deleted. Pure: no I/O, no clock reads.

SPEC invariant 6: retention never deletes an in-progress or `pre_restore` backup, nor the newest
completed backup of a schedule, and never counts failed backups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["Candidate", "to_delete"]


@dataclass(frozen=True)
class Candidate:
    """What retention needs to know of one catalogued backup (datetimes timezone-aware)."""

    id: str
    schedule_id: str | None
    type: str
    status: str
    completed_at: datetime | None
    created_at: datetime


def to_delete(
    backups: Sequence[Candidate], schedule_id: str, retention_days: int | None, now: datetime
) -> list[str]:
    """The ids of the backups retention deletes, oldest first.

    A backup goes only if all of these hold:
    - it belongs to `schedule_id`, has type `scheduled` and status `completed` (so never a
      pending, in-progress or failed backup, nor a manual, `pre_update` or `pre_restore` one);
    - its `completed_at` is known and older than `now - retention_days`;
    - it is not the schedule's newest completed `scheduled` backup, which is kept even when it
      is older than the window. Failed and unfinished backups never count as that newest one,
      so a newer failed run never makes the last good backup deletable.

    `retention_days` None or <= 0 keeps everything. Ties are broken by created_at, then id, so
    the answer does not depend on the order of `backups`.
    """
    if retention_days is None or retention_days <= 0:
        return []
    cutoff = now - timedelta(days=retention_days)
    completed = sorted(
        (backup.completed_at, backup.created_at, backup.id)
        for backup in backups
        if backup.schedule_id == schedule_id
        and backup.type == "scheduled"
        and backup.status == "completed"
        and backup.completed_at is not None
    )
    # The newest completed backup stays whatever its age: completed[-1] is never considered.
    return [backup_id for completed_at, _, backup_id in completed[:-1] if completed_at < cutoff]
