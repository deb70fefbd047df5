"""The storage's status (never a secret) and the audited round-trip test."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import service as audit
from api.backups.models import SystemBackup
from api.services import Services
from api.states import AuditOutcome, SyncStatus
from api.storage import service as storage_service
from api.storage.base import StorageError
from api.storage.schemas import StorageStatus, StorageTest


async def status(session: AsyncSession, services: Services) -> StorageStatus:
    """Where backups are copied off-site and how syncing goes."""
    settings = services.settings
    last = (await session.execute(select(func.max(SystemBackup.synced_at)))).scalar_one()
    pending = (
        await session.execute(
            select(func.count())
            .select_from(SystemBackup)
            .where(
                SystemBackup.sync_status.in_((SyncStatus.pending, SyncStatus.syncing)),
                SystemBackup.deleted_at.is_(None),
            )
        )
    ).scalar_one()
    error = (
        await session.execute(
            select(SystemBackup.sync_error)
            .where(SystemBackup.sync_error.is_not(None), SystemBackup.deleted_at.is_(None))
            .order_by(SystemBackup.next_sync_at.desc().nulls_last())
            .limit(1)
        )
    ).scalar_one_or_none()
    storage = services.storage
    return StorageStatus(
        configured=storage is not None,
        provider=storage.name if storage else None,
        bucket=settings.backup_s3_bucket if storage else None,
        endpoint_host=storage_service.endpoint_host(settings) if storage else None,
        region=settings.backup_s3_region if storage else None,
        prefix=settings.backup_s3_prefix or None if storage else None,
        last_successful_sync_at=last,
        pending_syncs=pending,
        last_sync_error=error,
    )


async def test(services: Services, caller: audit.Caller) -> StorageTest:
    """Upload, read back, compare and delete a small object, with no catalog transaction open
    meanwhile; then audit the result in a short transaction of its own."""
    store = storage_service.require(services.storage)
    try:
        result = await storage_service.round_trip(store)
        outcome = StorageTest(
            ok=True,
            latency_ms=int(str(result["latencyMs"])),
            detail="upload, download and delete worked",
        )
    except StorageError as error:
        outcome = StorageTest(ok=False, latency_ms=None, detail=str(error))
    await audit.record_apart(
        services.sessions,
        caller,
        action="storage.test",
        target=None,
        outcome=AuditOutcome.completed if outcome.ok else AuditOutcome.failed,
        detail={"detail": outcome.detail},
    )
    return outcome
