"""At start: what a killed process left behind is marked, removed, finished or undone.

Recovery is an operation of its own kind: it runs only while holding the mutation lock, so it
never touches the work of a live process, and when another process holds it there is nothing
abandoned to recover. By kind: restores (journals decide), backups (marked failed, unpublished
files removed), deletions (purged), partial files (removed).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from sqlalchemy import select

from api import paths
from api.archive.writer import PARTIAL_MARK
from api.audit import service as audit
from api.backups.models import SystemBackup
from api.backups.names import is_plain_name
from api.backups.service import now
from api.db import transaction
from api.errors import Busy, UnsafePath
from api.locks import is_free, sync_lock
from api.operations.backup import Mutation
from api.operations.delete import purge_pending
from api.operations.engine import Context, Operations
from api.restores import runner as restores
from api.restores.models import SystemRestore
from api.services import Services
from api.states import AuditOutcome, OperationKind, SyncStatus

log = logging.getLogger("nexus_backup.recovery")
INTERRUPTED = "interrupted: the process running it stopped before it finished"
SYNC_INTERRUPTED = "interrupted: the process uploading it stopped; it is due again"


class RecoverOp(Mutation[list[str]]):
    """Recover what stopped processes left; the result is notes for the log."""

    kind = OperationKind.recovery

    async def busy(self, ctx: Context) -> Busy:
        return Busy("another live process holds the mutation lock")

    async def run(self, ctx: Context) -> list[str]:
        notes = await _recover(ctx.services)
        notes += await purge_pending(ctx.services)
        for note in notes:
            log.warning("recovery: %s", note)
        return notes


async def recover(operations: Operations) -> list[str]:
    """Run recovery unless another live process holds the mutation lock (then nothing here is
    abandoned)."""
    try:
        return await operations.run(RecoverOp())
    except Busy:
        return []


def _remove_unpublished(folder: Path, name: str) -> None:
    """Remove what an interrupted backup called `name` may have published in `folder`; a name
    that is not a plain file name, or a file that resolves outside `folder`, is refused."""
    if not is_plain_name(name):
        raise UnsafePath(f"refused: backup name {name!r} is not a plain file name", name)
    for suffix in (".tar.gz", ".tar.zst"):
        for path in (folder / f"{name}{suffix}", folder / f"{name}{suffix}.sha256"):
            with contextlib.suppress(FileNotFoundError):
                paths.unlink_file(path, folder)


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
            try:
                _remove_unpublished(folder, backup.name)
            except UnsafePath as error:
                # A name such as `../../x` (a forged row) would reach outside BACKUP_DIR.
                await audit.record(
                    session,
                    audit.SYSTEM,
                    action="security.refused",
                    target=backup.name,
                    outcome=AuditOutcome.refused,
                    detail={
                        "id": backup.id,
                        "action": "recovery",
                        "path": error.path,
                        "error": error.detail,
                    },
                )
                notes.append(f"refused to remove files of backup {backup.id}: {error.detail}")
            await audit.record(
                session,
                audit.SYSTEM,
                action="backup.run",
                target=backup.name,
                outcome=AuditOutcome.failed,
                detail={"id": backup.id, "error": INTERRUPTED},
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
                audit.SYSTEM,
                action="restore.run",
                target=restore.archive_path,
                outcome=AuditOutcome(restore.status),
                detail={"id": restore.id, "error": restore.error_message},
            )
            notes.append(f"restore {restore.id} was interrupted: {note}")
    notes.extend(await _release_abandoned_syncs(services))
    if folder.is_dir():
        for leftover in folder.glob(f".*{PARTIAL_MARK}*"):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                leftover.unlink()  # a link is removed itself, never what it points to
            notes.append(f"removed partial file {leftover.name}")
    return notes


async def _release_abandoned_syncs(services: Services) -> list[str]:
    """A backup left `syncing` by a process that died mid-upload (its sync lock is free) is
    due again at once; one whose sync still runs elsewhere (the lock is held) is left alone."""
    notes: list[str] = []
    async with transaction(services.sessions) as session:
        syncing = (
            (
                await session.execute(
                    select(SystemBackup).where(SystemBackup.sync_status == SyncStatus.syncing)
                )
            )
            .scalars()
            .all()
        )
    for backup in syncing:
        # Free: no process syncs it (a sync holds its lock from before its claim to its end),
        # and a sync starting now is refused by the `syncing` claim until it is pending again.
        if not await is_free(services.engine, sync_lock(backup.id)):
            continue
        async with transaction(services.sessions) as session:
            row = await session.get(SystemBackup, backup.id)
            if row is None or row.sync_status != SyncStatus.syncing:
                continue
            row.sync_status, row.sync_error = SyncStatus.pending, SYNC_INTERRUPTED
            row.next_sync_at = now()
        notes.append(f"sync of backup {backup.name} ({backup.id}) was interrupted: due again")
    return notes
