"""At start: what a killed process left behind is marked, removed, finished or undone.

Runs only while holding the mutation lock, so it never touches the work of a live process.
"""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import select

from api.archive.writer import PARTIAL_MARK
from api.audit import service as audit
from api.backups.models import SystemBackup
from api.backups.service import now
from api.db import transaction
from api.locks import MutationLock
from api.restores import runner as restores
from api.restores.models import SystemRestore
from api.services import Services

log = logging.getLogger("nexus_backup.recovery")
INTERRUPTED = "interrupted: the process running it stopped before it finished"


async def recover(services: Services) -> list[str]:
    lock = MutationLock(services.engine)
    if not await lock.try_acquire():
        return []  # another live process holds the lock: nothing here is abandoned
    try:
        notes = await _recover(services)
    finally:
        await lock.release()
    for note in notes:
        log.warning("recovery: %s", note)
    return notes


async def _recover(services: Services) -> list[str]:
    folder = services.settings.backup_dir
    # Journals first: whether an interrupted restore committed decides what its record says.
    notes, outcomes = await restores.recover(services)
    async with transaction(services.sessions) as session:
        stale = (
            (
                await session.execute(
                    select(SystemBackup).where(SystemBackup.status.in_(("pending", "in_progress")))
                )
            )
            .scalars()
            .all()
        )
        for backup in stale:
            backup.status = "failed"
            backup.error_message = INTERRUPTED
            backup.phase = None
            backup.completed_at = now()
            for suffix in (".tar.gz", ".tar.zst"):
                for path in (
                    folder / f"{backup.name}{suffix}",
                    folder / f"{backup.name}{suffix}.sha256",
                ):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            await audit.record(
                session,
                "system",
                "backup.run",
                backup.name,
                "failed",
                {"id": backup.id, "error": INTERRUPTED},
            )
            notes.append(f"backup {backup.name} ({backup.id}) was interrupted: marked failed")
        restoring = (
            (
                await session.execute(
                    select(SystemRestore).where(
                        SystemRestore.status.in_(("pending", "in_progress"))
                    )
                )
            )
            .scalars()
            .all()
        )
        for restore in restoring:
            restore.phase = None
            restore.completed_at = now()
            committed = outcomes.get(restore.id, False)
            if committed and not services.settings.post_restore_command:
                restore.status, restore.error_message = "completed", None
                note = "its process stopped after the commit; recovery finished it"
            elif committed:
                restore.status = "failed"
                restore.error_message = (
                    "the database and uploads WERE restored (recovery finished the restore after "
                    "its process stopped), but POST_RESTORE_COMMAND did not run: run it by hand"
                )
                note = restore.error_message
            else:
                restore.status, restore.error_message = "failed", INTERRUPTED
                note = "marked failed; nothing was changed"
            await audit.record(
                session,
                "system",
                "restore.run",
                restore.archive_path,
                restore.status,
                {"id": restore.id, "error": restore.error_message},
            )
            notes.append(f"restore {restore.id} was interrupted: {note}")
    if folder.is_dir():
        for leftover in folder.glob(f".*{PARTIAL_MARK}*"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
            notes.append(f"removed partial file {leftover.name}")
    return notes
