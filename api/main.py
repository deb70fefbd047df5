"""create_app(): the FastAPI service. Lifespan opens the catalog, recovers, and closes it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api import __version__, recovery
from api.config import Settings, get_settings
from api.errors import AppError
from api.services import Services, open_services


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await open_services(settings or get_settings())
        await recovery.recover(services)
        app.state.services = services
        try:
            yield
        finally:
            await services.close()

    app = FastAPI(title="Nexus Backup", version=__version__, lifespan=lifespan)

    @app.exception_handler(AppError)
    async def app_error(request: Request, error: AppError) -> JSONResponse:
        return JSONResponse(
            {"error": error.kind, "detail": error.detail}, status_code=error.status_code
        )

    @app.get("/health", operation_id="health", tags=["health"])
    async def health(request: Request) -> JSONResponse:
        services: Services = request.app.state.services
        try:
            async with services.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    return app
