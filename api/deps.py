"""FastAPI dependencies: the services, a request-scoped session, and who is calling."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import service as audit
from api.auth import service as auth
from api.auth.models import ADMIN_ROLES
from api.db import transaction
from api.errors import Forbidden, Unauthorized
from api.services import Services

SESSION_COOKIE = "nexus_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed on success, rolled back on error."""
    async with transaction(services.sessions) as session:
        yield session


# scope="function": commit before the response is sent (a login cookie must find its session).
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _refuse(
    services: Services, request: Request, actor: str, reason: str, error: Exception
) -> Exception:
    async with transaction(services.sessions) as session:
        await audit.record(
            session,
            actor,
            "auth.refused",
            f"{request.method} {request.url.path}",
            "refused",
            {"reason": reason},
            client_address(request),
        )
    return error


async def get_principal(
    request: Request, services: ServicesDep, session: SessionDep
) -> auth.Principal:
    """The caller, from `Authorization: Bearer` (API token or GK-Nexus JWT) or the session
    cookie; cookie requests that change state must carry the CSRF token."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        value = value.strip()
        principal = None
        if scheme.lower() == "bearer" and value:
            if value.startswith(auth.TOKEN_PREFIX):
                principal = await auth.token_principal(session, value)
            else:
                secret = services.settings.nexus_jwt_secret
                principal = auth.jwt_principal(secret.get_secret_value() if secret else None, value)
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
