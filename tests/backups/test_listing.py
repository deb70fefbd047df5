"""GET /backups over a catalog of many backups: every page of every filter is the newest-first
order (ties in created_at broken by id), totals are the counts, deleted backups never show."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from api.backups import service
from api.backups.models import SystemBackup
from api.db import transaction
from tests.conftest import Api

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TYPES = ("manual", "scheduled", "pre_update", "pre_restore")
STATUSES = ("completed", "failed", "pending", "in_progress")


def _catalog(count: int) -> list[dict[str, Any]]:
    """Backups with many ties in created_at (up to four share an instant), some deleted."""
    rng = random.Random(7)
    rows = []
    for n in range(count):
        rows.append(
            {
                "id": f"{rng.getrandbits(64):016x}-{n:04d}",
                "name": f"b-{n:04d}",
                "type": rng.choice(TYPES),
                "status": rng.choice(STATUSES),
                "compression": "gzip",
                "is_cloud_synced": False,
                "sync_requested": False,
                "sync_status": "none",
                "sync_attempts": 0,
                "phase": "writing archive" if n % 5 == 0 else None,
                "progress_bytes": n * 10,
                "progress_total": 1000 if n % 2 else None,
                "created_at": START + timedelta(minutes=rng.randrange(count // 4)),
                "deleted_at": START + timedelta(days=1) if rng.random() < 0.2 else None,
            }
        )
    return rows


def _newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id = sorted(rows, key=lambda r: r["id"])
    return sorted(by_id, key=lambda r: r["created_at"], reverse=True)


async def _fill(api: Api, rows: list[dict[str, Any]]) -> None:
    async with transaction(api.services.sessions) as session:
        await session.execute(insert(SystemBackup), rows)


async def _walk(api: Api, headers: dict[str, str], query: str, limit: int) -> list[str]:
    """Every page of `query`, `limit` at a time, then one past the end; the ids in order."""
    ids: list[str] = []
    offset = 0
    while True:
        response = await api.client.get(
            f"/backups?{query}&limit={limit}&offset={offset}", headers=headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert (page["limit"], page["offset"]) == (limit, offset)
        ids += [item["id"] for item in page["items"]]
        total = page["total"]
        if not page["items"]:
            assert total == len(ids), f"{query}: the page past the end says total {total}"
            return ids
        assert total >= len(ids), f"{query}: total {total} but {len(ids)} listed so far"
        offset += limit


async def test_every_page_of_every_filter_is_newest_first_with_ties_by_id(api: Api) -> None:
    rows = _catalog(240)
    await _fill(api, rows)
    visible = [r for r in _newest_first(rows) if r["deleted_at"] is None]
    headers = await api.headers()
    filters: list[tuple[str, dict[str, str]]] = [("", {})]
    filters += [(f"status={s}", {"status": s}) for s in STATUSES]
    filters += [(f"type={t}", {"type": t}) for t in TYPES]
    filters += [("status=completed&type=scheduled", {"status": "completed", "type": "scheduled"})]
    for query, wanted in filters:
        expected = [r["id"] for r in visible if all(r[k] == v for k, v in wanted.items())]
        for limit in (1, 7, 50, 500):
            listed = await _walk(api, headers, query, limit)
            assert listed == expected, f"{query} limit={limit}: pages differ from the order"


async def test_totals_are_the_counts_on_full_partial_and_empty_pages(api: Api) -> None:
    rows = _catalog(60)
    await _fill(api, rows)
    failed = sum(1 for r in rows if r["deleted_at"] is None and r["status"] == "failed")
    headers = await api.headers()
    for offset in (0, failed - 2, failed, failed + 5, 10_000):
        page = (
            await api.client.get(
                f"/backups?status=failed&limit=3&offset={max(0, offset)}", headers=headers
            )
        ).json()
        assert page["total"] == failed, f"offset {offset}: total {page['total']} != {failed}"


async def test_a_listed_backup_reads_as_the_same_backup_alone(api: Api) -> None:
    """The listing reads plain rows; each item is what GET /backups/{id} answers, progress
    included for the running ones."""
    rows = _catalog(40)
    await _fill(api, rows)
    headers = await api.headers()
    items = (await api.client.get("/backups?limit=500", headers=headers)).json()["items"]
    assert any(item["progress"] for item in items)
    for item in items:
        alone = (await api.client.get(f"/backups/{item['id']}", headers=headers)).json()
        assert item == alone


async def test_the_service_listing_with_deleted_keeps_the_order(api: Api) -> None:
    rows = _catalog(50)
    await _fill(api, rows)
    expected = [r["id"] for r in _newest_first(rows)]
    async with transaction(api.services.sessions) as session:
        listed = [
            b.id
            for offset in range(0, 50, 8)
            for b in await service.list_backups(
                session, limit=8, offset=offset, include_deleted=True
            )
        ]
    assert listed == expected
