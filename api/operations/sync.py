"""A sync's life: claim the backup (`syncing`), upload and confirm (api.storage.service), then
`synced`, or `pending` with the reason and a backoff. A cloud outage never fails or loses the
local backup. Due syncs are claimed with a lease, so only one process uploads each."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from api import logs, paths
from api.audit import service as audit
from api.backups import service as backups
from api.backups.models import SystemBackup
from api.db import transaction
from api.errors import Busy, Conflict, UnsafePath
from api.locks import sync_lock
from api.operations.engine import INTERRUPTED_BY_SHUTDOWN, Context, Operation
from api.services import Services
from api.states import AuditOutcome, BackupStatus, OperationKind, SyncStatus
from api.storage import service as storage
from api.storage.base import StorageError

log = logging.getLogger("nexus_backup.cloud")
MAX_BACKOFF = timedelta(hours=1)
LEASE = timedelta(minutes=30)


def backoff(attempts: int) -> timedelta:
    return min(MAX_BACKOFF, timedelta(minutes=2 ** max(0, attempts - 1)))


@dataclass
class SyncOp(Operation[SystemBackup]):
    """Upload one backup's archive and sidecar and confirm them. The result is the record:
    `synced`, or `pending` with the reason (cloud failures are recorded, not raised)."""

    backup_id: str
    name: str = field(default="", init=False)
    path: Path = field(default=Path(), init=False)
    size: int | None = field(default=None, init=False)
    checksum: str | None = field(default=None, init=False)

    kind = OperationKind.sync

    def lock_key(self) -> int | None:
        return sync_lock(self.backup_id)

    async def busy(self, ctx: Context) -> Busy:
        return Busy("this backup is being synced already; wait for that sync to finish")

    async def check(self, ctx: Context) -> None:
        storage.require(ctx.services.storage)

    async def prepare(self, ctx: Context) -> None:
        async with transaction(ctx.services.sessions) as session:
            backup = await backups.get_visible(session, self.backup_id)
            if backup.status != BackupStatus.completed or not backup.file_path:
                raise Conflict(
                    f"backup {backup.name!r} is {backup.status}: only completed backups sync"
                )
            if backup.sync_status == SyncStatus.syncing:
                raise Conflict(f"backup {backup.name!r} is being synced already")
            # Checked before anything changes: a forged file_path must not upload a host file.
            path = await paths.archive_path(
                ctx.services, backup, action="backup.sync", actor=ctx.caller.actor
            )
            assert path is not None
            backup.sync_status, backup.sync_requested = SyncStatus.syncing, True
            self.id, self.name = backup.id, backup.name
            self.path, self.size, self.checksum = path, backup.file_size, backup.checksum

    async def run(self, ctx: Context) -> SystemBackup:
        store = storage.require(ctx.services.storage)
        try:
            uploaded = await storage.upload(
                store, self.path, ctx.services.settings.backup_dir, self.size, self.checksum
            )
        except (StorageError, OSError, UnsafePath) as error:
            return await self._failed(ctx, error)
        except BaseException as error:
            # Cancelled (a shutdown): the multipart upload was aborted (api.storage.s3); the
            # backup stays completed, its sync pending and due again at once.
            async with transaction(ctx.services.sessions) as session:
                backup = await backups.get_visible(session, self.backup_id)
                backup.sync_status, backup.next_sync_at = SyncStatus.pending, datetime.now(UTC)
                if isinstance(error, asyncio.CancelledError) and ctx.operations.stopping:
                    backup.sync_error = INTERRUPTED_BY_SHUTDOWN
                    await audit.record(
                        session,
                        ctx.caller,
                        action="backup.sync",
                        target=self.name,
                        outcome=AuditOutcome.failed,
                        detail={"id": self.backup_id, "error": INTERRUPTED_BY_SHUTDOWN},
                    )
            if backup.sync_error == INTERRUPTED_BY_SHUTDOWN:
                log.warning("cloud sync of %s %s; it is retried", self.name, backup.sync_error)
            raise
        async with transaction(ctx.services.sessions) as session:
            backup = await backups.get_visible(session, self.backup_id)
            backup.sync_status, backup.sync_error, backup.next_sync_at = (
                SyncStatus.synced,
                None,
                None,
            )
            backup.is_cloud_synced, backup.cloud_path = True, uploaded.key
            backup.cloud_provider, backup.synced_at = store.name, datetime.now(UTC)
            await audit.record(
                session,
                ctx.caller,
                action="backup.sync",
                target=self.name,
                outcome=AuditOutcome.completed,
                detail={
                    "id": self.backup_id,
                    "key": uploaded.key,
                    "provider": store.name,
                    "confirmedBy": uploaded.confirmed_by,
                },
            )
        log.info(
            "backup %s synced to %s as %s (confirmed by %s)",
            self.name,
            store.name,
            uploaded.key,
            uploaded.confirmed_by,
        )
        return backup

    async def _failed(
        self, ctx: Context, error: StorageError | OSError | UnsafePath
    ) -> SystemBackup:
        reason = error.detail if isinstance(error, UnsafePath) else str(error)
        reason = logs.scrub(ctx.services.settings, reason)
        if isinstance(error, UnsafePath):
            await paths.record_refusal(
                ctx.services,
                error,
                actor=ctx.caller.actor,
                action="backup.sync",
                target=self.name,
                detail={"id": self.backup_id},
            )
        async with transaction(ctx.services.sessions) as session:
            backup = await backups.get_visible(session, self.backup_id)
            backup.sync_attempts += 1
            backup.sync_status, backup.sync_error = SyncStatus.pending, reason
            backup.next_sync_at = datetime.now(UTC) + backoff(backup.sync_attempts)
            await audit.record(
                session,
                ctx.caller,
                action="backup.sync",
                target=self.name,
                outcome=AuditOutcome.failed,
                detail={
                    "id": self.backup_id,
                    "error": reason,
                    "retryAt": backup.next_sync_at.isoformat(),
                },
            )
        log.warning(
            "cloud sync of %s failed (attempt %d), retry at %s: %s",
            self.name,
            backup.sync_attempts,
            backup.next_sync_at,
            reason,
        )
        return backup


async def request(services: Services, backup_id: str) -> None:
    """Mark a backup to be synced; the next scheduler tick does it."""
    async with transaction(services.sessions) as session:
        await session.execute(
            update(SystemBackup)
            .where(SystemBackup.id == backup_id)
            .values(
                sync_requested=True, sync_status=SyncStatus.pending, next_sync_at=datetime.now(UTC)
            )
        )


async def claim_due(services: Services, at: datetime) -> list[str]:
    """The backups whose sync is pending and due at `at`, each claimed with a lease (so only one
    process uploads it); the caller syncs them."""
    if services.storage is None:
        return []
    async with transaction(services.sessions) as session:
        due = (
            await session.execute(
                select(SystemBackup.id, SystemBackup.next_sync_at).where(
                    SystemBackup.sync_status == SyncStatus.pending,
                    SystemBackup.status == BackupStatus.completed,
                    SystemBackup.deleted_at.is_(None),
                    SystemBackup.next_sync_at <= at,
                )
            )
        ).all()
    claimed: list[str] = []
    for backup_id, when in due:
        async with transaction(services.sessions) as session:
            won = await session.execute(
                update(SystemBackup)
                .where(
                    SystemBackup.id == backup_id,
                    SystemBackup.sync_status == SyncStatus.pending,
                    SystemBackup.next_sync_at == when,
                )
                .values(next_sync_at=at + LEASE)
                .returning(SystemBackup.id)
            )
            if won.first() is not None:
                claimed.append(backup_id)
    return claimed
