"""create_app(): the FastAPI service. Lifespan opens the catalog, recovers, runs jobs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI, Response
from fastapi.responses import FileResponse, RedirectResponse

from api import __version__, errors
from api.audit.router import router as audit_router
from api.auth.router import router as auth_router
from api.backups.router import router as backups_router
from api.config import Settings, get_settings
from api.errors import error_response as _error
from api.health import Readiness
from api.health import router as health_router
from api.metrics import router as metrics_router
from api.middleware import AccessLog, BodyLimit, SecurityHeaders
from api.notify.router import router as notify_router
from api.operations import Operations, recovery
from api.restores.router import router as restores_router
from api.scheduler import Scheduler
from api.schedules.router import router as schedules_router
from api.services import open_services
from api.storage.router import router as storage_router

log = logging.getLogger("nexus_backup.http")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings | None = None,
    web_dist: Path | None = None,
    clock: Callable[[], datetime] = _utc_now,
) -> FastAPI:
    """The app; refuses (ConfigError) settings it must not serve with. `clock` is what login
    throttling and refusal counting take as now (tests pass the time in)."""
    settings = settings or get_settings()
    settings.check_serving()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await open_services(settings)
        operations = Operations(services)
        await recovery.recover(operations)
        app.state.services = services
        app.state.operations = operations
        scheduler = Scheduler(operations)
        app.state.scheduler = scheduler  # its lag is a metric
        if services.settings.scheduler_enabled:
            scheduler.start()
        try:
            yield
        finally:
            scheduler.shutdown()
            await operations.shutdown()
            await operations.notifier.close()
            await services.close()

    app = FastAPI(
        title="Nexus Backup",
        version=__version__,
        lifespan=lifespan,
        description=(
            "Backups of the GK-Nexus database and uploads as one verified archive. Every route "
            "but /health, /health/live and /health/ready needs `Authorization: Bearer <token>` "
            "(nexus-backup tokens create) or the session cookie of POST /auth/login (with "
            "X-CSRF-Token on changes). Errors are "
            '`{"error": "<Kind>", "detail": "<what and how to fix>"}`.'
        ),
    )
    app.state.clock = clock
    app.state.readiness = Readiness()
    # Added last = outermost: the headers also go on the 413s of the length check.
    app.add_middleware(
        BodyLimit, limit=settings.max_body_bytes, timeout=settings.http_body_timeout_seconds
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(AccessLog)

    errors.install(app, max_body_bytes=settings.max_body_bytes)

    app.include_router(health_router)
    app.include_router(metrics_router)
    app.include_router(auth_router)
    app.include_router(backups_router)
    app.include_router(restores_router)
    app.include_router(schedules_router)
    app.include_router(storage_router)
    app.include_router(audit_router)
    app.include_router(notify_router)
    mount_web(app, web_dist or WEB_DIST)
    return app


WEB_DIST = Path(__file__).resolve().parent.parent / "web" / "dist"


def mount_web(app: FastAPI, dist: Path) -> None:
    """The admin page (web/dist, built by `make web`) under /app/, with deep links."""

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/app/", status_code=307)

    @app.get("/app", include_in_schema=False)
    @app.get("/app/{path:path}", include_in_schema=False)
    async def web(path: str = "") -> Response:
        index = dist / "index.html"
        if not index.is_file():
            return _error(
                503, "Unavailable", "the web page is not built: run `make web` (or `make run`)"
            )
        if path:
            candidate = (dist / path).resolve()
            if candidate.is_file() and candidate.is_relative_to(dist.resolve()):
                return FileResponse(candidate)
            if path.startswith("assets/"):
                return _error(404, "NotFound", f"no file /app/{path}")
        return FileResponse(index, headers={"Cache-Control": "no-cache"})
