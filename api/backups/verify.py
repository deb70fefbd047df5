"""Re-check a catalogued backup: checksums and manifest (every member, uploads included, against
the SHA-256 manifest.json records); `deep` also test-restores the database into a scratch
database, compares every table's row count with the manifest and runs the VERIFY_SQL sanity
queries there: a restore drill, whose outcome is recorded on the backup (`record_drill`)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.archive.manifest import DATABASE_NAME
from api.archive.reader import read_archive
from api.backups.models import SystemBackup
from api.errors import ArchiveError, SourceError
from api.services import Services
from api.sources import postgres


@dataclass
class Verification:
    ok: bool
    sha256: str | None = None
    layout: str | None = None
    problem: str | None = None
    warnings: list[str] = field(default_factory=list)
    tables_checked: int | None = None
    path: Path | None = None
    checksum_source: str | None = None
    upload_files: int | None = None
    database_size: int | None = None


def _scratch_url(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


async def verify(
    services: Services, backup: SystemBackup, path: Path | None, *, deep: bool
) -> Verification:
    """Check the backup's archive at `path` (already confined to BACKUP_DIR); `deep` also
    test-restores its database into a scratch database."""
    if backup.status != "completed" or path is None:
        return Verification(ok=False, problem=f"backup {backup.name!r} is {backup.status}")
    if not path.is_file():
        return Verification(ok=False, problem=f"the archive is missing at {path}")
    scratch_dir = services.settings.backup_dir / f".verify-{secrets.token_hex(6)}"
    database_file = scratch_dir / DATABASE_NAME

    def stage(name: str) -> BinaryIO | None:
        if not deep or name != DATABASE_NAME:
            return None
        scratch_dir.mkdir(mode=0o700)
        return open(database_file, "xb")

    try:
        try:
            result = await asyncio.to_thread(
                read_archive,
                path,
                expected_sha256=backup.checksum,
                checksum_source="catalog",
                stage=stage,
            )
        except ArchiveError as error:
            return Verification(ok=False, problem=error.detail)
        outcome = Verification(
            ok=True, sha256=result.sha256, layout=result.layout, warnings=result.warnings
        )
        if deep and DATABASE_NAME in result.members:
            # Compared with the rows counted in database.sql (which verification already found
            # equal to the manifest's), so seed-layout archives get a deep check too.
            problem, checked = await _test_restore(services, database_file, result.dump_tables)
            outcome.tables_checked = checked
            if problem:
                outcome.ok, outcome.problem = False, problem
        return outcome
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)


async def _test_restore(
    services: Services, sql: Path, expected: dict[str, int]
) -> tuple[str | None, int]:
    url = services.settings.require_database_url()
    name = f"nexus_verify_{secrets.token_hex(6)}"
    conn = await postgres.connect(url)
    try:
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        except Exception as error:
            raise SourceError(
                f"a deep verify needs to create a scratch database, which failed ({error}): "
                "grant CREATEDB to the DATABASE_URL user, or verify without deep"
            ) from None
        try:
            scratch = _scratch_url(url, name)
            try:
                await postgres.load_sql(scratch, services.settings, sql)
            except SourceError as error:
                return f"database.sql does not restore: {error.detail}", 0
            counts = await postgres.table_row_counts(scratch)
            differing = [
                t for t in sorted(set(expected) | set(counts)) if counts.get(t) != expected.get(t)
            ]
            if differing:
                first = differing[0]
                return (
                    f"{len(differing)} table(s) restored with other row counts than recorded, "
                    f"e.g. {first}: {counts.get(first)} vs {expected.get(first)}"
                ), len(counts)
            problem = await _sanity_queries(scratch, services.settings.verify_sql)
            return problem, len(counts)
        finally:
            with contextlib.suppress(Exception):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# A sanity query that runs longer fails the drill (it must not hold the drill lock for ever).
SANITY_TIMEOUT_MS = 60_000


def sanity_queries(setting: str | None) -> list[str]:
    """VERIFY_SQL split at its semicolons, blanks left out."""
    return [query.strip() for query in (setting or "").split(";") if query.strip()]


async def _sanity_queries(url: str, setting: str | None) -> str | None:
    """The first VERIFY_SQL query that errors or does not return one row whose first column is
    true, as the drill's problem; each runs in a read-only transaction with a timeout."""
    queries = sanity_queries(setting)
    if not queries:
        return None
    conn = await postgres.connect(url)
    try:
        for query in queries:
            try:
                async with conn.transaction(readonly=True):
                    await conn.execute(f"SET LOCAL statement_timeout = {SANITY_TIMEOUT_MS}")
                    # The app's tables by their plain names; the built-ins first, so a restored
                    # function cannot stand in for one.
                    await conn.execute("SET LOCAL search_path = pg_catalog, public")
                    rows = await conn.fetch(query)
            except Exception as error:
                return f"VERIFY_SQL query {query!r} failed: {error}"
            if len(rows) != 1 or len(rows[0]) == 0 or rows[0][0] is not True:
                shown = rows[0][0] if len(rows) == 1 and len(rows[0]) else f"{len(rows)} rows"
                return f"VERIFY_SQL query {query!r} returned {shown}, not one row with true"
        return None
    finally:
        await conn.close()


async def record_drill(
    session: AsyncSession,
    backup_id: str,
    *,
    at: datetime,
    passed: bool,
    duration_ms: int,
    error: str | None,
) -> None:
    """Write a finished drill's outcome on its backup (the last one replaces the one before)."""
    await session.execute(
        update(SystemBackup)
        .where(SystemBackup.id == backup_id)
        .values(
            verified_at=at,
            verify_outcome="passed" if passed else "failed",
            verify_duration_ms=duration_ms,
            verify_error=None if passed else error,
        )
    )


async def latest_drill(session: AsyncSession) -> SystemBackup | None:
    """The newest backup (by creation) whose last drill passed: the installation's newest
    backup proven restorable."""
    query = (
        select(SystemBackup)
        .where(
            SystemBackup.deleted_at.is_(None),
            SystemBackup.status == "completed",
            SystemBackup.verify_outcome == "passed",
        )
        .order_by(SystemBackup.created_at.desc(), SystemBackup.id)
        .limit(1)
    )
    backup: SystemBackup | None = (await session.execute(query)).scalars().first()
    return backup
