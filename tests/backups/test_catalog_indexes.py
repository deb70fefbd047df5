"""The migrated catalog has exactly the indexes the models declare for backups and schedules
(names, columns, order, partial predicates), and the listing's queries can be served by them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Index, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from api.backups import service
from api.backups.models import SystemBackup
from api.config import CATALOG_SCHEMA
from api.models import metadata
from api.schedules.models import BackupSchedule
from tests.conftest import Api

TABLES = {"system_backup", "backup_schedule"}


def _index_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_name": lambda name, kind, _: kind != "schema" or name == CATALOG_SCHEMA,
        },
    )
    return [
        diff
        for diff in compare_metadata(context, metadata)
        if isinstance(diff, tuple)
        and diff[0] in ("add_index", "remove_index")
        and diff[1].table.name in TABLES
    ]


def _normal(predicate: str) -> str:
    return re.sub(r"[()\s]", "", predicate).lower()


async def test_the_migrated_indexes_are_the_models_indexes(api: Api) -> None:
    async with api.services.engine.connect() as connection:
        differences = await connection.run_sync(_index_differences)
        rows = await connection.execute(
            text(
                "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid "
                "JOIN pg_namespace n ON n.oid = t.relnamespace "
                "WHERE n.nspname = :schema AND t.relname IN ('system_backup', 'backup_schedule') "
                "AND NOT i.indisprimary"
            ),
            {"schema": CATALOG_SCHEMA},
        )
        migrated = {name: predicate for name, predicate in rows}
    assert not differences, f"models and migrations disagree: {differences}"
    declared: dict[str, Index] = {
        str(index.name): index
        for table in (SystemBackup.__table__, BackupSchedule.__table__)
        for index in table.indexes  # type: ignore[attr-defined]
    }
    assert set(migrated) == set(declared)
    for name, index in declared.items():
        where = index.dialect_options["postgresql"]["where"]
        expected = None
        if where is not None:
            compiled = str(
                where.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
            )
            expected = _normal(compiled.replace(f"{CATALOG_SCHEMA}.system_backup.", ""))
        got = _normal(migrated[name]) if migrated[name] is not None else None
        assert got == expected, f"{name}: migrated WHERE {migrated[name]!r}, model {where}"


async def _plan(api: Api, query: Any) -> str:
    """The plan of `query` when PostgreSQL may not read the whole table (on a catalog this
    small it would: the point is that an index can serve the query)."""
    async with api.services.engine.begin() as connection:
        await connection.execute(text("SET LOCAL enable_seqscan = off"))
        compiled = query.compile(
            dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
        )
        rows = await connection.exec_driver_sql(f"EXPLAIN {compiled}")
        return "\n".join(row[0] for row in rows)


async def test_listing_pages_and_counts_are_read_from_the_partial_indexes(api: Api) -> None:
    ids = select(SystemBackup.id).order_by(*service.NEWEST_FIRST).limit(20).offset(5000)
    cases = {
        "ix_system_backup_visible": [
            service._listed(ids),
            service._listed(select(func.count()).select_from(SystemBackup)),
        ],
        "ix_system_backup_visible_status": [service._listed(ids, status="failed")],
        "ix_system_backup_visible_type": [service._listed(ids, kind="pre_restore")],
    }
    for index, queries in cases.items():
        for query in queries:
            plan = await _plan(api, query)
            assert f"Index Only Scan using {index}" in plan, plan
            assert "Sort" not in plan, f"the index gives the order, no sort needed:\n{plan}"


async def test_due_schedules_are_found_by_index(api: Api) -> None:
    query = (
        select(BackupSchedule.id)
        .where(
            BackupSchedule.is_enabled.is_(True),
            BackupSchedule.next_run_at <= datetime(2026, 1, 1, tzinfo=UTC),
        )
        .order_by(BackupSchedule.next_run_at, BackupSchedule.id)
    )
    assert "ix_backup_schedule_next_run_at" in await _plan(api, query)
