"""Append to the audit trail. Callers pass their own session; this never commits."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.audit.models import AuditLog

log = logging.getLogger("nexus_backup.audit")


async def record(
    session: AsyncSession,
    actor: str,
    action: str,
    target: str | None,
    outcome: str,
    detail: dict[str, Any] | None = None,
    client_address: str | None = None,
) -> None:
    session.add(
        AuditLog(
            at=datetime.now(UTC),
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            detail=detail,
            client_address=client_address,
        )
    )
    log.info("audit %s %s %s by %s", action, target or "-", outcome, actor)
