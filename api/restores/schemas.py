"""Restore API schemas."""

from __future__ import annotations

from datetime import datetime

from api.schemas import Schema
from api.states import RestorePhase, RestoreStatus


class RestoreOut(Schema):
    id: str
    backup_id: str | None
    archive_path: str
    status: RestoreStatus
    phase: RestorePhase | None
    dry_run: bool
    forced: bool
    pre_restore_backup_id: str | None
    error_message: str | None
    requested_by: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime


class RestoreList(Schema):
    items: list[RestoreOut]
    total: int
    limit: int
    offset: int
