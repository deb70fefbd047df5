"""Catalog queries about restores."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import NotFound
from api.restores.models import SystemRestore
from api.restores.schemas import RestoreList, RestoreOut


async def get(session: AsyncSession, restore_id: str) -> SystemRestore:
    restore = await session.get(SystemRestore, restore_id)
    if restore is None:
        raise NotFound(f"no restore with id {restore_id}")
    return restore


async def running(session: AsyncSession) -> Sequence[SystemRestore]:
    query = select(SystemRestore).where(SystemRestore.status.in_(("pending", "in_progress")))
    return (await session.execute(query)).scalars().all()


async def list_restores(session: AsyncSession, *, limit: int, offset: int) -> RestoreList:
    """One page of restores and dry runs, newest first, with the total."""
    query = select(SystemRestore).order_by(SystemRestore.created_at.desc())
    rows = (await session.execute(query.limit(limit).offset(offset))).scalars().all()
    total = (await session.execute(select(func.count()).select_from(SystemRestore))).scalar_one()
    return RestoreList(
        items=[RestoreOut.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
    )
