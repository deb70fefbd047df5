"""/storage: cloud storage status (never a secret) and a real round-trip test."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from sqlalchemy import func, select

from api.audit import service as audit
from api.backups.models import SystemBackup
from api.deps import AdminDep, ServicesDep, SessionDep, client_address
from api.schemas import Schema, errors
from api.storage import service as storage_service
from api.storage.base import StorageError

router = APIRouter(prefix="/storage", tags=["storage"])


class StorageStatus(Schema):
    configured: bool
    provider: str | None
    bucket: str | None
    endpoint_host: str | None
    region: str | None
    prefix: str | None
    last_successful_sync_at: datetime | None
    pending_syncs: int
    last_sync_error: str | None


class StorageTest(Schema):
    ok: bool
    latency_ms: int | None
    detail: str


@router.get(
    "", operation_id="storage_get", response_model=StorageStatus, responses=errors(401, 403)
)
async def status(session: SessionDep, services: ServicesDep, _: AdminDep) -> StorageStatus:
    """Where backups are copied off-site and how syncing goes. Never shows a secret."""
    settings = services.settings
    last = (await session.execute(select(func.max(SystemBackup.synced_at)))).scalar_one()
    pending = (
        await session.execute(
            select(func.count())
            .select_from(SystemBackup)
            .where(
                SystemBackup.sync_status.in_(("pending", "syncing")),
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


@router.post(
    "/test",
    operation_id="storage_test",
    response_model=StorageTest,
    responses=errors(401, 403, 503),
)
async def test(
    request: Request, session: SessionDep, services: ServicesDep, principal: AdminDep
) -> StorageTest:
    """Upload, read back, compare and delete a small object: does the storage really work?"""
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
    await audit.record(
        session,
        principal.actor,
        "storage.test",
        None,
        "completed" if outcome.ok else "failed",
        {"detail": outcome.detail},
        client_address(request),
    )
    return outcome
