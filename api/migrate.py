"""Apply the catalog migrations (Alembic) under an advisory lock, so concurrent starts agree.

Every command migrates first; when the catalog is already at the newest revision (the usual
case) one query says so and Alembic is not even imported (it costs half a second a command).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

from api.config import CATALOG_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
MIGRATION_LOCK = 0x6E6578_01  # "nex" + 1


_REVISION = re.compile(r'^(down_revision|revision) = (None|"([^"]+)")$', re.M)


@lru_cache(maxsize=1)
def head() -> str:
    """The newest revision, read from the migration files as Alembic would find it."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (ROOT / "migrations" / "versions").glob("*.py"):
        for kind, _value, name in _REVISION.findall(path.read_text(encoding="utf-8")):
            if name:
                (revisions if kind == "revision" else parents).add(name)
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the catalog migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


async def current(engine: AsyncEngine) -> str | None:
    """The catalog's revision, or None when it has none yet."""
    try:
        async with engine.connect() as connection:
            return (
                await connection.execute(
                    text(f"SELECT version_num FROM {CATALOG_SCHEMA}.alembic_version")
                )
            ).scalar_one_or_none()
    except DBAPIError as error:
        if "alembic_version" in str(error) and "does not exist" in str(error):
            return None
        raise


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def _run(engine: AsyncEngine, revision: str, down: bool) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
        )
        await connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {CATALOG_SCHEMA}"))

        def run(sync: Connection) -> None:
            from alembic import command

            config = alembic_config(sync)
            if down:
                command.downgrade(config, revision)
            else:
                command.upgrade(config, revision)

        await connection.run_sync(run)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    if revision == "head" and await current(engine) == head():
        return
    await _run(engine, revision, down=False)


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    await _run(engine, revision, down=True)
