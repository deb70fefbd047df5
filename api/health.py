"""GET /health, /health/live and /health/ready: what load balancers, Docker and Kubernetes ask.

No authentication, and no detail for anonymous callers (a probe needs only the status code; an
attacker would like to know which part is down and where). An admin caller (a Bearer token,
GK-Nexus JWT or session of an admin role) gets each readiness check's name, outcome and reason.

Readiness runs the checks of api.startup: the catalog through the service's pool on every call
(cheap), the slow ones (a file written and synced in BACKUP_DIR, pg_dump --version and a
connection to the app database, a request to the bucket) at most once per READY_TTL_SECONDS by
the app's clock, so frequent probes cost almost nothing. Concurrent probes share one run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api import startup
from api.deps import SESSION_COOKIE, ServicesDep, get_principal, request_time
from api.errors import AppError
from api.schemas import Schema
from api.services import Services
from api.startup import CheckResult

READY_TTL_SECONDS = 10.0

router = APIRouter(prefix="/health", tags=["health"])


class HealthOut(Schema):
    status: Literal["ok", "unavailable"]


class CheckOut(Schema):
    name: str
    ok: bool
    detail: str


class ReadyOut(Schema):
    """`checks` only for an admin caller."""

    status: Literal["ok", "unavailable"]
    checks: list[CheckOut] | None = None


class Readiness:
    """The readiness checks with their cache (one per app, in app.state.readiness)."""

    def __init__(self, ttl: float = READY_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._cache: dict[str, tuple[float, CheckResult]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def _cached(
        self, name: str, now: float, check: Callable[[], Awaitable[str] | str]
    ) -> CheckResult:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:  # a probe arriving meanwhile waits and reads this run's result
            hit = self._cache.get(name)
            if hit is not None and 0 <= now - hit[0] < self.ttl:
                return hit[1]
            result = await startup.run_check(name, check)
            self._cache[name] = (now, result)
            return result

    async def results(self, services: Services, now: float) -> list[CheckResult]:
        settings = services.settings
        checks = [
            self._cached(
                "backup_dir",
                now,
                lambda: asyncio.to_thread(startup.check_backup_dir, settings.backup_dir),
            ),
            self._cached("pg_dump", now, lambda: startup.check_pg_dump(settings)),
        ]
        storage = services.storage
        if storage is not None:
            checks.append(self._cached("storage", now, lambda: startup.check_storage(storage)))
        catalog = await startup.run_check(
            "catalog", lambda: startup.catalog_reachable(services.engine)
        )
        return [catalog, *await asyncio.gather(*checks)]


def readiness(request: Request) -> Readiness:
    found: Readiness | None = getattr(request.app.state, "readiness", None)
    if found is None:
        found = request.app.state.readiness = Readiness()
    return found


async def _admin_asks(request: Request, services: Services) -> bool:
    """Whether the caller is an admin. Anonymous callers cost no catalog query; wrong
    credentials are audited as everywhere, but answered as anonymous (never a 401 here)."""
    if not request.headers.get("authorization") and not request.cookies.get(SESSION_COOKIE):
        return False
    try:
        principal = await get_principal(request, services)
    except AppError:  # refused, or the catalog is down (a token cannot be looked up)
        return False
    return principal.is_admin


_STATUS = {True: "ok", False: "unavailable"}


@router.get(
    "",
    operation_id="health",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "The catalog database is unreachable"}},
)
async def health(services: ServicesDep) -> JSONResponse:
    """Liveness and readiness of the catalog; no authentication, no detail."""
    result = await startup.run_check("catalog", lambda: startup.catalog_reachable(services.engine))
    return JSONResponse({"status": _STATUS[bool(result.ok)]}, status_code=200 if result.ok else 503)


@router.get("/live", operation_id="health_live", response_model=HealthOut)
async def live() -> HealthOut:
    """The process answers: always 200, touches no database (a restart is the only cure for a
    process that cannot say this)."""
    return HealthOut(status="ok")


@router.get(
    "/ready",
    operation_id="health_ready",
    response_model=ReadyOut,
    response_model_exclude_none=True,
    responses={503: {"model": ReadyOut, "description": "A check failed: do not send traffic"}},
)
async def ready(request: Request, services: ServicesDep) -> JSONResponse:
    """Ready to serve: the catalog answers, BACKUP_DIR takes a file, pg_dump can dump the
    server, the bucket answers (when configured). 200 or 503 with `{"status"}`; an admin caller
    also gets `checks` (name, ok, detail)."""
    results = await readiness(request).results(services, request_time(request).timestamp())
    ok = all(result.ok is not False for result in results)
    body = ReadyOut(status="ok" if ok else "unavailable")
    if await _admin_asks(request, services):
        body.checks = [CheckOut(name=r.name, ok=bool(r.ok), detail=r.detail) for r in results]
    return JSONResponse(
        body.model_dump(by_alias=True, exclude_none=True), status_code=200 if ok else 503
    )
