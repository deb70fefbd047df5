"""FastAPI dependencies: the services, a request-scoped session, and who is calling."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import service as audit
from api.auth import service as auth
from api.auth.models import ADMIN_ROLES
from api.backups.models import SystemBackup
from api.db import transaction
from api.errors import Forbidden, Unauthorized
from api.operations import Operations
from api.services import Services
from api.states import AuditOutcome

SESSION_COOKIE = "nexus_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_operations(request: Request) -> Operations:
    operations: Operations = request.app.state.operations
    return operations


OperationsDep = Annotated[Operations, Depends(get_operations)]


async def get_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed on success, rolled back on error."""
    async with transaction(services.sessions) as session:
        yield session


# scope="function": commit before the response is sent (a login cookie must find its session).
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def caller(request: Request, principal: auth.Principal) -> audit.Caller:
    """Who asked, as the audit trail and the operations record it."""
    return audit.Caller(principal.actor, client_address(request))


def request_time(request: Request) -> datetime:
    """Now, from the app's clock (create_app(clock=...); tests pass the time in)."""
    clock: Callable[[], datetime] = getattr(request.app.state, "clock", lambda: datetime.now(UTC))
    return clock()


async def record_refusal(
    services: Services,
    request: Request,
    actor: str,
    reason: str,
    *,
    action: str = "auth.refused",
    outcome: AuditOutcome = AuditOutcome.refused,
) -> None:
    """Audit a refusal in its own transaction, counted per caller, reason and minute (a flood
    of anonymous requests does not add a row each)."""
    async with transaction(services.sessions) as session:
        await audit.record_counted(
            session,
            audit.Caller(actor, client_address(request)),
            action=action,
            target=f"{request.method} {request.url.path}"[:500],
            outcome=outcome,
            reason=reason,
            at=request_time(request),
            rows_per_minute=services.settings.audit_refusal_rows_per_minute,
        )


async def _refuse(
    services: Services, request: Request, actor: str, reason: str, error: Exception
) -> Exception:
    await record_refusal(services, request, actor, reason)
    return error


async def get_principal(request: Request, services: ServicesDep) -> auth.Principal:
    """The caller, from `Authorization: Bearer` (API token or GK-Nexus JWT) or the session
    cookie; cookie requests that change state must carry the CSRF token. Looked up in a
    transaction of its own, committed before the route runs: a route that calls the network
    holds no catalog transaction open."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        value = value.strip()
        principal = None
        if scheme.lower() == "bearer" and value:
            if value.startswith(auth.TOKEN_PREFIX):
                async with transaction(services.sessions) as session:
                    principal = await auth.token_principal(session, value)
            else:
                settings = services.settings
                secret = settings.nexus_jwt_secret
                principal = auth.jwt_principal(
                    secret.get_secret_value() if secret else None,
                    value,
                    max_lifetime=settings.jwt_max_lifetime_seconds,
                    issuer=settings.nexus_jwt_issuer,
                    audience=settings.nexus_jwt_audience,
                    at=request_time(request),
                )
        if principal is None:
            raise await _refuse(
                services,
                request,
                "anonymous",
                "invalid bearer credentials",
                Unauthorized("the bearer token is invalid, expired or revoked"),
            )
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        async with transaction(services.sessions) as session:
            principal = await auth.session_principal(session, cookie)
        if principal is None:
            raise await _refuse(
                services,
                request,
                "anonymous",
                "expired session",
                Unauthorized("the session has expired: log in again"),
            )
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            expected = (principal.csrf_token or "").encode()
            if not sent or not hmac.compare_digest(sent.encode("utf-8", "replace"), expected):
                raise await _refuse(
                    services,
                    request,
                    principal.actor,
                    "missing or wrong CSRF token",
                    Forbidden(
                        "missing or wrong X-CSRF-Token header: send the csrfToken that "
                        "POST /auth/login or GET /auth/me returned"
                    ),
                )
        return principal
    error = Unauthorized("authentication required: log in, or send Authorization: Bearer <token>")
    if request.method == "GET" and request.url.path == "/auth/me":
        raise error  # the page asking "am I logged in?" before login: not a refusal worth a row
    raise await _refuse(services, request, "anonymous", "no credentials", error)


async def get_admin(
    request: Request,
    services: ServicesDep,
    principal: Annotated[auth.Principal, Depends(get_principal)],
) -> auth.Principal:
    if not principal.is_admin:
        raise await _refuse(
            services,
            request,
            principal.actor,
            f"role {principal.role} may not use backups",
            Forbidden(
                f"role {principal.role} may not use the backup API; it needs one of "
                + ", ".join(ADMIN_ROLES)
            ),
        )
    return principal


AdminDep = Annotated[auth.Principal, Depends(get_admin)]


async def require_destroyer(
    services: Services, request: Request, principal: auth.Principal, doing: str
) -> None:
    """Refuse (403, audited) a caller whose role may not destroy backups: OWNER only, unless
    DESTRUCTIVE_ROLES widens it. `doing` says what was asked, e.g. "restore or delete"."""
    allowed = services.settings.destructive_role_set
    if principal.role not in allowed:
        raise await _refuse(
            services,
            request,
            principal.actor,
            f"role {principal.role} may not {doing}",
            Forbidden(
                f"role {principal.role} may not {doing}; it needs "
                + ", ".join(sorted(allowed))
                + " (the setting DESTRUCTIVE_ROLES widens this)"
            ),
        )


async def get_destroyer(
    request: Request,
    services: ServicesDep,
    principal: AdminDep,
) -> auth.Principal:
    """Restore and delete destroy data: OWNER only, unless DESTRUCTIVE_ROLES widens them."""
    await require_destroyer(services, request, principal, "restore or delete backups")
    return principal


DestroyerDep = Annotated[auth.Principal, Depends(get_destroyer)]


async def get_backup_deleter(
    backup_id: str,
    request: Request,
    services: ServicesDep,
    principal: DestroyerDep,
) -> auth.Principal:
    """Deleting a safety (pre_restore) backup, the way back from a restore, needs OWNER
    whatever DESTRUCTIVE_ROLES says."""
    if principal.role == "OWNER":
        return principal
    async with transaction(services.sessions) as session:
        backup = await session.get(SystemBackup, backup_id)
    if backup is not None and backup.type == "pre_restore":
        raise await _refuse(
            services,
            request,
            principal.actor,
            f"role {principal.role} may not delete a pre_restore backup",
            Forbidden(
                f"role {principal.role} may not delete a pre_restore (safety) backup: "
                "only OWNER may"
            ),
        )
    return principal


BackupDeleterDep = Annotated[auth.Principal, Depends(get_backup_deleter)]
