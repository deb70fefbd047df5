"""/audit: the audit trail, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from api.audit.models import AuditLog
from api.audit.schemas import AuditList, AuditOut
from api.deps import AdminDep, SessionDep
from api.schemas import errors

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get(
    "", operation_id="audit_list", response_model=AuditList, responses=errors(401, 403, 422)
)
async def list_audit(
    session: SessionDep,
    _: AdminDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    action: Annotated[str | None, Query(max_length=60)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditList:
    """Who did what to which backup, and how it ended; filters by action and actor."""
    query = select(AuditLog)
    counter = select(func.count()).select_from(AuditLog)
    if action:
        query, counter = (
            query.where(AuditLog.action == action),
            counter.where(AuditLog.action == action),
        )
    if actor:
        query, counter = (
            query.where(AuditLog.actor == actor),
            counter.where(AuditLog.actor == actor),
        )
    rows = (
        (await session.execute(query.order_by(AuditLog.id.desc()).limit(limit).offset(offset)))
        .scalars()
        .all()
    )
    total = (await session.execute(counter)).scalar_one()
    return AuditList(
        items=[AuditOut.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
    )
