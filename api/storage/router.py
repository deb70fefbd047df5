"""/storage: cloud storage status (never a secret) and a real round-trip test."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import AdminDep, ServicesDep, SessionDep, caller
from api.schemas import errors
from api.storage import status as storage_status
from api.storage.schemas import StorageStatus, StorageTest

router = APIRouter(prefix="/storage", tags=["storage"])


@router.get(
    "", operation_id="storage_get", response_model=StorageStatus, responses=errors(401, 403)
)
async def status(session: SessionDep, services: ServicesDep, _: AdminDep) -> StorageStatus:
    """Where backups are copied off-site and how syncing goes. Never shows a secret."""
    return await storage_status.status(session, services)


@router.post(
    "/test",
    operation_id="storage_test",
    response_model=StorageTest,
    responses=errors(401, 403, 503),
)
async def test(request: Request, services: ServicesDep, principal: AdminDep) -> StorageTest:
    """Upload, read back, compare and delete a small object: does the storage really work?"""
    return await storage_status.test(services, caller(request, principal))
