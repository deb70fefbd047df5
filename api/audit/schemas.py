"""Audit API schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from api.schemas import Schema
from api.states import AuditOutcome


class AuditOut(Schema):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    outcome: AuditOutcome
    detail: dict[str, Any] | None
    client_address: str | None


class AuditList(Schema):
    items: list[AuditOut]
    total: int
    limit: int
    offset: int
