"""Append to the audit trail. Callers pass their own session; this never commits."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.audit.models import AuditLog
from api.audit.schemas import AuditList, AuditOut
from api.db import transaction
from api.states import AuditOutcome

log = logging.getLogger("nexus_backup.audit")


@dataclass(frozen=True)
class Caller:
    """Who asked: the actor the audit trail names and, for HTTP, the client's address."""

    actor: str
    address: str | None = None


SYSTEM = Caller("system")
CLI = Caller("cli")


async def record(
    session: AsyncSession,
    caller: Caller,
    *,
    action: str,
    target: str | None,
    outcome: AuditOutcome,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Append one audit row for `caller` (the transaction is the caller's)."""
    session.add(
        AuditLog(
            at=at or datetime.now(UTC),
            actor=caller.actor,
            action=action,
            target=target,
            outcome=outcome,
            detail=detail,
            client_address=caller.address,
        )
    )
    log.info("audit %s %s %s by %s", action, target or "-", outcome, caller.actor)


async def record_apart(
    sessions: async_sessionmaker[AsyncSession],
    caller: Caller,
    *,
    action: str,
    target: str | None,
    outcome: AuditOutcome,
    detail: dict[str, Any] | None = None,
) -> None:
    """One audit row in a short transaction of its own: after work that held none open (a
    network call, a check that refused), or that must be recorded even if the caller's own
    transaction rolls back."""
    async with transaction(sessions) as session:
        await record(session, caller, action=action, target=target, outcome=outcome, detail=detail)


# pg_advisory_xact_lock(class, hashtext(key)): one writer per aggregated row at a time.
_REFUSAL_LOCK = 0x6E6578_02
OVERFLOW_ACTOR = "*"


async def record_counted(
    session: AsyncSession,
    caller: Caller,
    *,
    action: str,
    target: str | None,
    outcome: AuditOutcome,
    reason: str,
    at: datetime,
    rows_per_minute: int,
) -> None:
    """A refusal (or failed login) counted, not appended: one row per (action, outcome,
    actor, client address, reason) and minute, whose detail.count says how many; past
    `rows_per_minute` distinct rows in a minute, the rest are counted in one summary row. So a
    flood of anonymous requests adds at most rows_per_minute + 1 rows a minute, and the first
    refusal of each kind is still recorded with its target."""
    actor, client_address = caller.actor, caller.address
    window = at.replace(second=0, microsecond=0)
    if await _count_into(session, actor, action, outcome, reason, client_address, window, at):
        log.info("audit %s %s %s by %s (counted)", action, target or "-", outcome, actor)
        return
    rows = (
        await session.execute(
            select(func.count())
            .select_from(AuditLog)
            .where(
                AuditLog.action == action,
                AuditLog.outcome == outcome,
                AuditLog.at >= window,
                AuditLog.at < window + timedelta(minutes=1),
            )
        )
    ).scalar_one()
    if rows < rows_per_minute:
        await record(
            session,
            caller,
            action=action,
            target=target,
            outcome=outcome,
            detail={"reason": reason, "count": 1},
            at=at,
        )
        return
    summary = f"more than {rows_per_minute} distinct {action} rows this minute"
    if not await _count_into(session, OVERFLOW_ACTOR, action, outcome, summary, None, window, at):
        await record(
            session,
            Caller(OVERFLOW_ACTOR),
            action=action,
            target=None,
            outcome=outcome,
            detail={"reason": summary, "count": 1},
            at=at,
        )


async def _count_into(
    session: AsyncSession,
    actor: str,
    action: str,
    outcome: str,
    reason: str,
    client_address: str | None,
    window: datetime,
    at: datetime,
) -> bool:
    """Add one to this minute's row for the key, if there is one (under a lock per key, so
    concurrent processes do not both insert it)."""
    key = "|".join((action, outcome, actor, client_address or "-", reason, window.isoformat()))
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:lock, hashtext(:key))"),
        {"lock": _REFUSAL_LOCK, "key": key},
    )
    address = (
        AuditLog.client_address.is_(None)
        if client_address is None
        else AuditLog.client_address == client_address
    )
    row = (
        await session.execute(
            select(AuditLog)
            .where(
                AuditLog.action == action,
                AuditLog.at >= window,
                AuditLog.at < window + timedelta(minutes=1),
                AuditLog.outcome == outcome,
                AuditLog.actor == actor,
                address,
                AuditLog.detail["reason"].astext == reason,
            )
            .order_by(AuditLog.id)
            .limit(1)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if row is None:
        return False
    detail = dict(row.detail or {})
    count = detail.get("count")
    detail["count"] = (count if isinstance(count, int) else 1) + 1
    detail["lastAt"] = at.isoformat()
    row.detail = detail
    return True


async def list_entries(
    session: AsyncSession,
    *,
    limit: int,
    offset: int,
    action: str | None = None,
    actor: str | None = None,
) -> AuditList:
    """One page of the audit trail, newest first, with the total; filters by action and actor."""
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
