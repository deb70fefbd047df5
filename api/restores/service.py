"""Catalog queries about restores."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import NotFound
from api.restores.models import SystemRestore


async def get(session: AsyncSession, restore_id: str) -> SystemRestore:
    restore = await session.get(SystemRestore, restore_id)
    if restore is None:
        raise NotFound(f"no restore with id {restore_id}")
    return restore


async def running(session: AsyncSession) -> Sequence[SystemRestore]:
    query = select(SystemRestore).where(SystemRestore.status.in_(("pending", "in_progress")))
    return (await session.execute(query)).scalars().all()
