"""Schedule API schemas (the seed's field names, camelCase)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from api.schemas import Schema


class ScheduleOut(Schema):
    id: str
    name: str
    cron_expression: str
    timezone: str
    description: str = Field(description="The cron expression in plain words")
    is_enabled: bool
    retention_days: int | None
    sync_to_cloud: bool
    last_run_at: datetime | None
    next_run_at: datetime | None
    success_count: int
    failure_count: int
    created_at: datetime
    updated_at: datetime


class ScheduleCreate(Schema):
    name: str = Field(min_length=1, max_length=200)
    cron_expression: str = Field(min_length=1, max_length=200, examples=["30 3 * * 1-5"])
    timezone: str = Field(default="UTC", min_length=1, max_length=64, examples=["Europe/London"])
    is_enabled: bool = True
    retention_days: int | None = Field(default=None, ge=1, le=36500)
    sync_to_cloud: bool = False


class ScheduleUpdate(Schema):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    cron_expression: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    is_enabled: bool | None = None
    retention_days: int | None = Field(default=None, ge=0, le=36500, description="0 keeps all")
    sync_to_cloud: bool | None = None


class SchedulePreview(Schema):
    cron_expression: str
    timezone: str
    description: str
    next_runs: list[datetime]
