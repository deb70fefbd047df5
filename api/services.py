"""What every entry point (CLI, API, scheduler) shares: settings and the catalog engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api import migrate
from api.config import Settings
from api.db import make_engine, make_sessionmaker
from api.storage import service as storage_service

if TYPE_CHECKING:
    from api.storage.base import Storage


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    storage: Storage | None = None

    @property
    def database_url(self) -> str:
        return self.settings.require_database_url()

    async def close(self) -> None:
        await self.engine.dispose()


async def open_services(settings: Settings, *, migrate_catalog: bool = True) -> Services:
    setting = "CATALOG_DATABASE_URL" if settings.catalog_database_url else "DATABASE_URL"
    engine = make_engine(settings.catalog_url(), setting)
    if migrate_catalog:
        try:
            await migrate.upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
    return Services(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        storage=storage_service.from_settings(settings),
    )
