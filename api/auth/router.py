"""/auth: log in (HttpOnly session cookie), log out, who am I."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response

from api.auth import service, throttle
from api.auth.models import ADMIN_ROLES, AppUser
from api.auth.schemas import LoginIn, MeOut
from api.db import transaction
from api.deps import (
    SESSION_COOKIE,
    AdminDep,
    ServicesDep,
    SessionDep,
    caller,
    client_address,
    record_refusal,
    request_time,
)
from api.errors import Forbidden, TooManyRequests, Unauthorized
from api.schemas import errors
from api.states import AuditOutcome

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/login",
    operation_id="auth_login",
    response_model=MeOut,
    responses=errors(401, 403, 413, 422, 429),
)
async def login(
    body: LoginIn,
    request: Request,
    response: Response,
    session: SessionDep,
    services: ServicesDep,
) -> MeOut:
    """Check email and password; set an HttpOnly, SameSite=Strict session cookie. Too many
    failed logins for an account or from an address: 429 with Retry-After (seconds)."""
    client = client_address(request)
    email = body.email.strip().lower()[:320]
    settings = services.settings
    limits = throttle.Limits(
        per_account=settings.login_max_failures_per_account,
        per_address=settings.login_max_failures_per_address,
        window=timedelta(seconds=settings.login_throttle_seconds),
    )
    async with transaction(services.sessions) as own:
        refusal = await throttle.attempt(own, email, client, request_time(request), limits)
    if refusal is not None:
        await record_refusal(services, request, email[:200], refusal.reason, action="auth.login")
        raise TooManyRequests(
            f"{refusal.reason}: try again in {refusal.retry_after} seconds",
            refusal.retry_after,
        )
    user_id = await service.authenticate_password(services.sessions, email, body.password)
    user = await session.get(AppUser, user_id) if user_id else None
    if user is None or user.role not in ADMIN_ROLES:
        await record_refusal(
            services,
            request,
            email[:200],
            "wrong credentials" if user is None else f"role {user.role}",
            action="auth.login",
            outcome=AuditOutcome.failed,
        )
        if user is None:
            raise Unauthorized("wrong email or password")
        raise Forbidden(f"role {user.role} may not use the backup service")
    await throttle.succeeded(session, email, client)
    cookie, record = await service.open_session(
        session, user, services.settings.session_hours, client
    )
    secure = services.settings.cookie_secure
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=services.settings.session_hours * 3600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" if secure is None else secure,
        path="/",
    )
    return MeOut(actor=user.email, role=user.role, kind="session", csrf_token=record.csrf_token)


@router.post("/logout", operation_id="auth_logout", status_code=204, responses=errors(401, 403))
async def logout(request: Request, services: ServicesDep, principal: AdminDep) -> Response:
    """End the session and clear its cookie."""
    cookie = request.cookies.get(SESSION_COOKIE) if principal.kind == "session" else None
    await service.log_out(services.sessions, caller(request, principal), cookie)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/me", operation_id="auth_me", response_model=MeOut, responses=errors(401, 403))
async def me(principal: AdminDep) -> MeOut:
    """Who is calling, with the CSRF token for cookie sessions."""
    return MeOut(
        actor=principal.actor,
        role=principal.role,
        kind=principal.kind,
        csrf_token=principal.csrf_token,
    )
