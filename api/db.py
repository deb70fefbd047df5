"""The catalog database: Base with a naming convention, engine and session factories."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from api.config import CATALOG_SCHEMA
from api.errors import CatalogUnavailable

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


CATALOG_SETTINGS = "CATALOG_DATABASE_URL / DATABASE_URL"


# A pooled connection idle for longer than this is pinged before it is handed out (a server
# restart or an idle timeout may have closed it); one returned moments ago is not: the ping
# (BEGIN, a query, ROLLBACK) was three round trips on every checkout, a tenth of the CPU time of
# a busy API. A connection that died in that moment fails its request with CatalogUnavailable,
# and the disconnect empties the pool for the next requests.
PING_AFTER_IDLE_SECONDS = 1.0


def make_engine(url: str, setting: str = CATALOG_SETTINGS) -> AsyncEngine:
    """The catalog engine. A connection that cannot be opened (refused, unknown host, wrong
    password, no such database) raises CatalogUnavailable naming where and `setting`."""
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_size=5,
        connect_args={"server_settings": {"search_path": CATALOG_SEARCH_PATH}},
    )

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def returned(dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def ping(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at <= PING_AFTER_IDLE_SECONDS:
            return  # just opened, or just used
        try:
            dbapi_connection.ping()
        except Exception as error:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError(f"pooled catalog connection is gone: {error}") from error

    @event.listens_for(engine.sync_engine, "do_connect")
    def connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as error:
            raise catalog_unavailable(error, cparams, setting) from error

    @event.listens_for(engine.sync_engine, "handle_error")
    def lost(context: ExceptionContext) -> BaseException | None:
        # The server went away under an open connection (restart, failover, killed backend).
        if context.is_disconnect and not context.is_pre_ping:
            parts = engine.url
            return CatalogUnavailable(
                f"lost the connection to the catalog database at {parts.host or 'localhost'}:"
                f"{parts.port or 5432}/{parts.database or ''}: check that PostgreSQL is "
                "running, then try again"
            )
        return None

    return engine


def catalog_unavailable(
    error: BaseException, params: dict[str, Any], setting: str
) -> CatalogUnavailable:
    """'cannot reach the catalog database at host:port/db (why): check <setting> ...'; the
    password never appears, not even inside the driver's message."""
    where = (
        f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
        f"/{params.get('database') or params.get('user') or ''}"
    )
    why = _reason(error)
    password = params.get("password")
    if isinstance(password, str) and password:
        why = why.replace(password, "***")
    if "password" in why or "authentication" in why:
        todo = f"check the user and password in {setting}"
    elif "does not exist" in why:
        todo = f"check the database name in {setting}, or create the database"
    else:
        todo = f"check {setting} and that PostgreSQL is running"
    return CatalogUnavailable(f"cannot reach the catalog database at {where} ({why}): {todo}")


def _reason(error: BaseException) -> str:
    cause = error.__cause__ if error.__cause__ is not None else error
    if isinstance(cause, socket.gaierror):
        return "unknown host"
    if isinstance(cause, TimeoutError):
        return "timed out"
    if isinstance(cause, ConnectionRefusedError) or "Connect call failed" in str(cause):
        return "connection refused"
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno).lower()
    text = " ".join(str(cause).split())
    return text or type(cause).__name__


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A short transaction: commits on success, rolls back on error."""
    async with factory() as session, session.begin():
        yield session
