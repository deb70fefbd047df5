"""Catalog queries about backups. Plain async functions taking the session first."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Row, Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.backups.models import SystemBackup
from api.backups.names import ARCHIVE_SUFFIXES as ARCHIVE_SUFFIXES
from api.backups.names import NAME_PATTERN as NAME_PATTERN
from api.backups.names import check_name as check_name
from api.errors import BadRequest, Conflict, NotFound
from api.states import BackupType


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def default_name(kind: str, at: datetime | None = None) -> str:
    stamp = (at or now()).strftime("%Y%m%d-%H%M%S")
    prefixes = {"pre_restore": "pre-restore", "pre_update": "pre-update", "scheduled": "scheduled"}
    prefix = prefixes.get(kind, "gk-nexus-backup")
    return f"{prefix}-{stamp}"


def check_type(kind: str) -> str:
    if kind not in tuple(BackupType):
        raise BadRequest(f"invalid backup type {kind!r}: use one of {', '.join(BackupType)}")
    return kind


def check_description(description: str | None) -> str | None:
    if description is None:
        return None
    if len(description) > 2000:
        raise BadRequest("description is longer than 2000 characters")
    if any(ord(c) < 32 and c not in "\n\t" for c in description):
        raise BadRequest("description contains control characters")
    return description


async def get(session: AsyncSession, backup_id: str) -> SystemBackup:
    backup = await session.get(SystemBackup, backup_id)
    if backup is None:
        raise NotFound(f"no backup with id {backup_id}")
    return backup


async def find(session: AsyncSession, ref: str) -> SystemBackup | None:
    """A catalogued backup by id, unique id prefix (6+ characters), name or archive file name."""
    candidates = [ref]
    for suffix in ARCHIVE_SUFFIXES:
        if ref.endswith(suffix):
            candidates.append(ref[: -len(suffix)])
    query = (
        select(SystemBackup)
        .where(
            or_(SystemBackup.id == ref, SystemBackup.name.in_(candidates)),
            SystemBackup.deleted_at.is_(None),
        )
        .order_by((SystemBackup.status == "completed").desc(), SystemBackup.created_at.desc())
    )
    found = (await session.execute(query)).scalars().first()
    if found is not None or len(ref) < 6 or not re.fullmatch(r"[0-9a-f-]+", ref):
        return found
    matches = (
        (await session.execute(select(SystemBackup).where(SystemBackup.id.startswith(ref))))
        .scalars()
        .all()
    )
    if len(matches) > 1:
        raise Conflict(f"id prefix {ref} matches {len(matches)} backups; give more characters")
    return matches[0] if matches else None


async def by_file(session: AsyncSession, file_path: str) -> SystemBackup | None:
    """The completed backup whose archive is at `file_path`, so its catalog checksum applies."""
    query = select(SystemBackup).where(
        SystemBackup.file_path == file_path,
        SystemBackup.status == "completed",
        SystemBackup.deleted_at.is_(None),
    )
    return (await session.execute(query)).scalars().first()


async def name_taken(session: AsyncSession, name: str) -> bool:
    query = select(SystemBackup.id).where(
        SystemBackup.name == name,
        SystemBackup.status != "failed",
        SystemBackup.deleted_at.is_(None),
    )
    return (await session.execute(query)).first() is not None


def _listed(
    query: Select[Any],
    *,
    status: str | None = None,
    kind: str | None = None,
    include_deleted: bool = False,
) -> Select[Any]:
    """`query` narrowed as the listing narrows it; the partial indexes on (status | type,
    created_at DESC, id) WHERE deleted_at IS NULL serve exactly these filters."""
    if status is not None:
        query = query.where(SystemBackup.status == status)
    if kind is not None:
        query = query.where(SystemBackup.type == kind)
    if not include_deleted:
        query = query.where(SystemBackup.deleted_at.is_(None))
    return query


NEWEST_FIRST = (SystemBackup.created_at.desc(), SystemBackup.id)


def _page_query(
    what: Select[Any],
    limit: int,
    offset: int,
    status: str | None,
    kind: str | None,
    include_deleted: bool,
) -> Select[Any]:
    """`what` of the page's rows: the page's ids are found from an index alone however deep
    the offset, then joined back to their rows, so only the rows shown are read."""
    page = _listed(
        select(SystemBackup.id).order_by(*NEWEST_FIRST).limit(limit).offset(offset),
        status=status,
        kind=kind,
        include_deleted=include_deleted,
    ).subquery("page")
    return what.join(page, SystemBackup.id == page.c.id).order_by(*NEWEST_FIRST)


async def list_backups(
    session: AsyncSession,
    *,
    limit: int = 50,
    offset: int = 0,
    status: str | None = None,
    kind: str | None = None,
    include_deleted: bool = False,
) -> Sequence[SystemBackup]:
    """Backups newest first (ties by id)."""
    query = _page_query(select(SystemBackup), limit, offset, status, kind, include_deleted)
    backups: Sequence[SystemBackup] = (await session.execute(query)).scalars().all()
    return backups


async def list_page(
    session: AsyncSession,
    *,
    limit: int = 50,
    offset: int = 0,
    status: str | None = None,
    kind: str | None = None,
) -> tuple[Sequence[Row[Any]], int]:
    """A page of the backups not deleted, newest first, as plain rows (every column, read by
    attribute like a SystemBackup; no ORM objects to build for a page only shown), and how
    many there are in all. A page that is not full and not past the end says the total
    itself (offset + its rows), without counting."""
    columns = select(*SystemBackup.__table__.columns)
    rows = (await session.execute(_page_query(columns, limit, offset, status, kind, False))).all()
    if len(rows) < limit and (rows or offset == 0):
        return rows, offset + len(rows)
    return rows, await count_backups(session, status=status, kind=kind)


async def running(session: AsyncSession) -> Sequence[SystemBackup]:
    query = select(SystemBackup).where(SystemBackup.status.in_(("pending", "in_progress")))
    return (await session.execute(query)).scalars().all()


async def count_backups(
    session: AsyncSession, *, status: str | None = None, kind: str | None = None
) -> int:
    query = _listed(select(func.count()).select_from(SystemBackup), status=status, kind=kind)
    return int((await session.execute(query)).scalar_one())


async def get_visible(session: AsyncSession, backup_id: str) -> SystemBackup:
    """A backup that has not been deleted, or NotFound."""
    backup = await session.get(SystemBackup, backup_id)
    if backup is None or backup.deleted_at is not None:
        raise NotFound(f"no backup with id {backup_id}")
    return backup


def archive_files(backup: SystemBackup) -> list[Path]:
    if not backup.file_path:
        return []
    path = Path(backup.file_path)
    return [path, path.with_name(path.name + ".sha256")]
