"""/notifications: the notification settings (never a secret) and an audited test-send."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import AdminDep, OperationsDep, ServicesDep, SessionDep, caller, request_time
from api.notify import service
from api.notify.schemas import NotificationConfig, NotificationTest
from api.schemas import errors

router = APIRouter(prefix="/notifications", tags=["notifications"])


@router.get(
    "",
    operation_id="notifications_get",
    response_model=NotificationConfig,
    responses=errors(401, 403),
)
async def config(session: SessionDep, services: ServicesDep, _: AdminDep) -> NotificationConfig:
    """Where failures and the no-backup alert are sent, and how the last deliveries went. Never
    shows a secret: the webhook's host only, whether an SMTP password is set."""
    return await service.config(session, services.settings)


@router.post(
    "/test",
    operation_id="notifications_test",
    response_model=NotificationTest,
    responses=errors(401, 403, 409),
)
async def test(
    request: Request, operations: OperationsDep, principal: AdminDep
) -> NotificationTest:
    """Send a test notification to every configured channel and say, per channel, whether it
    was delivered or why not. 409 when no channel is configured."""
    return await service.test(
        operations.notifier, caller(request, principal), request_time(request)
    )
