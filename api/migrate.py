"""Apply the catalog migrations (Alembic) under an advisory lock, so concurrent starts agree."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from api.config import CATALOG_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
MIGRATION_LOCK = 0x6E6578_01  # "nex" + 1


def alembic_config(connection: Connection | None = None) -> Config:
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
            config = alembic_config(sync)
            if down:
                command.downgrade(config, revision)
            else:
                command.upgrade(config, revision)

        await connection.run_sync(run)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    await _run(engine, revision, down=False)


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    await _run(engine, revision, down=True)
