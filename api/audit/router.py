"""/audit: the audit trail, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.audit import service as audit
from api.audit.schemas import AuditList
from api.deps import AdminDep, SessionDep
from api.schemas import Storable, errors

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get(
    "", operation_id="audit_list", response_model=AuditList, responses=errors(401, 403, 422)
)
async def list_audit(
    session: SessionDep,
    _: AdminDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    action: Annotated[str | None, Query(max_length=60), Storable] = None,
    actor: Annotated[str | None, Query(max_length=200), Storable] = None,
) -> AuditList:
    """Who did what to which backup, and how it ended; filters by action and actor."""
    return await audit.list_entries(session, limit=limit, offset=offset, action=action, actor=actor)
