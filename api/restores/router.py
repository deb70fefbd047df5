"""/restores: follow a restore started with POST /backups/{id}/restore."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AdminDep, SessionDep
from api.restores import service
from api.restores.schemas import RestoreList, RestoreOut
from api.schemas import errors

router = APIRouter(prefix="/restores", tags=["restores"])


@router.get(
    "", operation_id="restore_list", response_model=RestoreList, responses=errors(401, 403, 422)
)
async def list_restores(
    session: SessionDep,
    _: AdminDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> RestoreList:
    """Restores and dry runs, newest first."""
    return await service.list_restores(session, limit=limit, offset=offset)


@router.get(
    "/{restore_id}",
    operation_id="restore_getById",
    response_model=RestoreOut,
    responses=errors(401, 403, 404),
)
async def get_restore(restore_id: str, session: SessionDep, _: AdminDep) -> RestoreOut:
    """One restore: status, phase, its pre_restore safety backup, and the reason if it failed."""
    return RestoreOut.model_validate(await service.get(session, restore_id))
