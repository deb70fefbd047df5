"""The catalog database: Base with a naming convention, engine and session factories."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from api.config import CATALOG_SCHEMA

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(schema=CATALOG_SCHEMA, naming_convention=NAMING)


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


# Catalog sessions resolve names in pg_catalog, then the catalog schema, and nowhere else: a
# function or operator that a restored dump (or the app) creates in public can never be picked
# by a catalog query, not even by a closer type match (CVE-2018-1058).
CATALOG_SEARCH_PATH = f"pg_catalog, {CATALOG_SCHEMA}"


def make_engine(url: str) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(url),
        pool_pre_ping=True,
        pool_size=5,
        connect_args={"server_settings": {"search_path": CATALOG_SEARCH_PATH}},
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A short transaction: commits on success, rolls back on error."""
    async with factory() as session, session.begin():
        yield session
