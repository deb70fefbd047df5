"""/schedules: cron schedules that start `scheduled` backups."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.deps import AdminDep, ServicesDep, SessionDep, caller, require_destroyer
from api.schedules import cron, service
from api.schedules.models import BackupSchedule
from api.schedules.schemas import ScheduleCreate, ScheduleOut, SchedulePreview, ScheduleUpdate
from api.schemas import Storable, errors

RETENTION = "set a schedule's retention (it deletes backups)"

router = APIRouter(prefix="/schedules", tags=["schedules"])


def to_out(schedule: BackupSchedule) -> ScheduleOut:
    return ScheduleOut.model_validate(
        {
            **{c: getattr(schedule, c) for c in ScheduleOut.model_fields if c != "description"},
            "description": cron.describe(schedule.cron_expression),
        }
    )


@router.get(
    "", operation_id="schedule_list", response_model=list[ScheduleOut], responses=errors(401, 403)
)
async def list_schedules(session: SessionDep, _: AdminDep) -> list[ScheduleOut]:
    """All schedules, with their next run time."""
    return [to_out(s) for s in await service.list_schedules(session)]


@router.get(
    "/preview",
    operation_id="schedule_preview",
    response_model=SchedulePreview,
    responses=errors(401, 403, 422),
)
async def preview(
    _: AdminDep,
    cron_expression: Annotated[str, Query(alias="cron", min_length=1, max_length=200), Storable],
    timezone: Annotated[str, Query(min_length=1, max_length=64), Storable] = "UTC",
) -> SchedulePreview:
    """The next 5 run times of a cron expression in a timezone, and what it means in words."""
    expression, zone = service.checked(cron_expression, timezone)
    return SchedulePreview(
        cron_expression=expression,
        timezone=zone,
        description=cron.describe(expression),
        next_runs=cron.next_runs(expression, zone, datetime.now(UTC), 5),
    )


@router.post(
    "",
    operation_id="schedule_create",
    status_code=201,
    response_model=ScheduleOut,
    responses=errors(401, 403, 422),
)
async def create_schedule(
    body: ScheduleCreate,
    request: Request,
    services: ServicesDep,
    principal: AdminDep,
) -> ScheduleOut:
    """Create a schedule; an invalid cron expression or timezone answers 422 with the reason.
    Retention deletes backups, so setting retentionDays needs a role that may delete."""
    if body.retention_days is not None:
        await require_destroyer(services, request, principal, RETENTION)
    schedule = await service.create(services.sessions, caller(request, principal), body)
    return to_out(schedule)


@router.patch(
    "/{schedule_id}",
    operation_id="schedule_update",
    response_model=ScheduleOut,
    responses=errors(401, 403, 404, 422),
)
async def update_schedule(
    schedule_id: str,
    body: ScheduleUpdate,
    request: Request,
    services: ServicesDep,
    principal: AdminDep,
) -> ScheduleOut:
    """Change a schedule; its next run is computed again from now. Retention deletes backups,
    so changing retentionDays needs a role that may delete."""
    if body.retention_days:  # 0 or none keeps every backup: no deletion to authorise
        await require_destroyer(services, request, principal, RETENTION)
    schedule = await service.change(
        services.sessions, caller(request, principal), schedule_id, body
    )
    return to_out(schedule)


@router.delete(
    "/{schedule_id}",
    operation_id="schedule_delete",
    status_code=204,
    responses=errors(401, 403, 404),
)
async def delete_schedule(
    schedule_id: str, request: Request, services: ServicesDep, principal: AdminDep
) -> Response:
    """Delete a schedule; the backups it made stay."""
    await service.delete(services.sessions, caller(request, principal), schedule_id)
    return Response(status_code=204)


@router.post(
    "/{schedule_id}/toggle",
    operation_id="schedule_toggle",
    response_model=ScheduleOut,
    responses=errors(401, 403, 404),
)
async def toggle_schedule(
    schedule_id: str, request: Request, services: ServicesDep, principal: AdminDep
) -> ScheduleOut:
    """Enable or disable a schedule."""
    schedule = await service.toggle(services.sessions, caller(request, principal), schedule_id)
    return to_out(schedule)
