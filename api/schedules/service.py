"""Schedules in the catalog. Queries take the session first and never commit; the changes a
router asks for (create, change, delete, toggle) run and audit in a short transaction each."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.audit import service as audit
from api.db import transaction
from api.errors import NotFound, Unprocessable
from api.schedules import cron
from api.schedules.models import BackupSchedule
from api.schedules.schemas import ScheduleCreate, ScheduleUpdate
from api.states import AuditOutcome

Sessions = async_sessionmaker[AsyncSession]


def now() -> datetime:
    return datetime.now(UTC)


def checked(expression: str, timezone: str) -> tuple[str, str]:
    """The normalised cron expression and timezone, or a 422 naming the field and the fix."""
    try:
        expression = cron.parse(expression)
    except cron.CronError as error:
        raise Unprocessable(f"cronExpression: {error}") from None
    try:
        timezone = cron.check_timezone(timezone)
    except cron.CronError as error:
        raise Unprocessable(f"timezone: {error}") from None
    return expression, timezone


def _name(name: str) -> str:
    name = name.strip()
    if not name or any(ord(c) < 32 for c in name):
        raise Unprocessable("name: give 1-200 printable characters")
    return name


async def get(session: AsyncSession, schedule_id: str) -> BackupSchedule:
    schedule = await session.get(BackupSchedule, schedule_id)
    if schedule is None:
        raise NotFound(f"no schedule with id {schedule_id}")
    return schedule


async def list_schedules(session: AsyncSession) -> Sequence[BackupSchedule]:
    query = select(BackupSchedule).order_by(BackupSchedule.created_at, BackupSchedule.id)
    return (await session.execute(query)).scalars().all()


async def _create(session: AsyncSession, data: ScheduleCreate) -> BackupSchedule:
    expression, timezone = checked(data.cron_expression, data.timezone)
    at = now()
    schedule = BackupSchedule(
        id=secrets.token_hex(16),
        name=_name(data.name),
        cron_expression=expression,
        timezone=timezone,
        is_enabled=data.is_enabled,
        retention_days=data.retention_days,
        sync_to_cloud=data.sync_to_cloud,
        next_run_at=cron.next_run(expression, timezone, at) if data.is_enabled else None,
        success_count=0,
        failure_count=0,
        created_at=at,
        updated_at=at,
    )
    session.add(schedule)
    return schedule


async def _change(session: AsyncSession, schedule_id: str, data: ScheduleUpdate) -> BackupSchedule:
    schedule = await get(session, schedule_id)
    fields = data.model_fields_set
    expression, timezone = checked(
        data.cron_expression
        if "cron_expression" in fields and data.cron_expression
        else schedule.cron_expression,
        data.timezone if "timezone" in fields and data.timezone else schedule.timezone,
    )
    if "name" in fields and data.name is not None:
        schedule.name = _name(data.name)
    if "retention_days" in fields:
        schedule.retention_days = data.retention_days or None
    if "sync_to_cloud" in fields and data.sync_to_cloud is not None:
        schedule.sync_to_cloud = data.sync_to_cloud
    if "is_enabled" in fields and data.is_enabled is not None:
        schedule.is_enabled = data.is_enabled
    schedule.cron_expression, schedule.timezone = expression, timezone
    _reschedule(schedule)
    return schedule


async def _toggle(session: AsyncSession, schedule_id: str) -> BackupSchedule:
    schedule = await get(session, schedule_id)
    schedule.is_enabled = not schedule.is_enabled
    _reschedule(schedule)
    return schedule


def _reschedule(schedule: BackupSchedule) -> None:
    """The next fire time from now: runs missed while disabled are not made up."""
    at = now()
    schedule.updated_at = at
    schedule.next_run_at = (
        cron.next_run(schedule.cron_expression, schedule.timezone, at)
        if schedule.is_enabled
        else None
    )


async def _delete(session: AsyncSession, schedule_id: str) -> BackupSchedule:
    """Delete the schedule; its backups stay (their scheduleId becomes null)."""
    schedule = await get(session, schedule_id)
    await session.delete(schedule)
    return schedule


async def _audited(
    sessions: Sessions,
    caller: audit.Caller,
    action: str,
    apply: Callable[[AsyncSession], Awaitable[BackupSchedule]],
    detail: Callable[[BackupSchedule], dict[str, Any]],
) -> BackupSchedule:
    """`apply` a change and audit it, in one short transaction."""
    async with transaction(sessions) as session:
        schedule = await apply(session)
        await audit.record(
            session,
            caller,
            action=action,
            target=schedule.name,
            outcome=AuditOutcome.completed,
            detail=detail(schedule),
        )
    return schedule


async def create(sessions: Sessions, caller: audit.Caller, data: ScheduleCreate) -> BackupSchedule:
    """Check and add a schedule, audited."""
    return await _audited(
        sessions,
        caller,
        "schedule.create",
        lambda session: _create(session, data),
        lambda s: {"id": s.id, "cron": s.cron_expression, "timezone": s.timezone},
    )


async def change(
    sessions: Sessions, caller: audit.Caller, schedule_id: str, data: ScheduleUpdate
) -> BackupSchedule:
    """Check and apply a change (the next run is computed again from now), audited."""
    changes = data.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return await _audited(
        sessions,
        caller,
        "schedule.update",
        lambda session: _change(session, schedule_id, data),
        lambda s: {"id": s.id, **changes},
    )


async def delete(sessions: Sessions, caller: audit.Caller, schedule_id: str) -> BackupSchedule:
    """Delete a schedule, audited; the backups it made stay."""
    return await _audited(
        sessions,
        caller,
        "schedule.delete",
        lambda session: _delete(session, schedule_id),
        lambda s: {"id": s.id},
    )


async def toggle(sessions: Sessions, caller: audit.Caller, schedule_id: str) -> BackupSchedule:
    """Enable or disable a schedule, audited."""
    return await _audited(
        sessions,
        caller,
        "schedule.toggle",
        lambda session: _toggle(session, schedule_id),
        lambda s: {"id": s.id, "isEnabled": s.is_enabled},
    )


async def due(session: AsyncSession, at: datetime) -> Sequence[BackupSchedule]:
    query = (
        select(BackupSchedule)
        .where(BackupSchedule.is_enabled.is_(True), BackupSchedule.next_run_at <= at)
        .order_by(BackupSchedule.next_run_at, BackupSchedule.id)
    )
    return (await session.execute(query)).scalars().all()


async def claim(
    session: AsyncSession, schedule: BackupSchedule, fire_time: datetime, at: datetime
) -> bool:
    """Compare-and-set on nextRunAt: of any number of processes, exactly one claims a fire time.

    The next run is computed from `at`, so fire times missed while down run once, not per miss.
    """
    following = cron.next_run(schedule.cron_expression, schedule.timezone, at)
    result = await session.execute(
        update(BackupSchedule)
        .where(
            BackupSchedule.id == schedule.id,
            BackupSchedule.is_enabled.is_(True),
            BackupSchedule.next_run_at == fire_time,
        )
        .values(next_run_at=following, last_run_at=at)
        .returning(BackupSchedule.id)
    )
    return result.first() is not None


async def count_outcome(session: AsyncSession, schedule_id: str, success: bool) -> None:
    column = BackupSchedule.success_count if success else BackupSchedule.failure_count
    await session.execute(
        update(BackupSchedule)
        .where(BackupSchedule.id == schedule_id)
        .values({column.key: column + 1})
    )
