"""GET /metrics (api/metrics.py): Prometheus text read from the catalog at scrape time, after real
backups, a real restore and a real failed sync, parsed with prometheus_client's own parser; an
admin token is required; the scheduler's lag; no global registry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import CatalogSnapshot, render
from api.scheduler import Scheduler, next_due, tick
from tests.auth.helpers import NOW, assert_error
from tests.conftest import Api, App
from tests.probes import Clock, serving
from tests.s3server import S3Server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def _scrape(api: Api, headers: dict[str, str]) -> Samples:
    response = await api.client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4"), response
    return _parse(response.text)


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _backups(samples: Samples) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["status"], dict(labels)["type"]): value
        for (name, labels), value in samples.items()
        if name == "nexus_backups" and value
    }


def _time(value: Any) -> float:
    return datetime.fromisoformat(str(value)).timestamp()


async def test_metrics_need_an_admin(api: Api) -> None:
    anonymous = await api.client.get("/metrics")
    assert_error(anonymous, 401, "Unauthorized")
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert_error(
        await api.client.get("/metrics", headers=await api.headers("ACCOUNTANT")), 403, "Forbidden"
    )


async def test_metrics_report_the_catalog_after_real_backups_and_a_restore(api: Api) -> None:
    headers = await api.headers()
    empty = await _scrape(api, headers)
    assert _backups(empty) == {}
    assert _value(empty, "nexus_backups", status="completed", type="manual") == 0
    assert not any(name == "nexus_backup_last_success_timestamp_seconds" for name, _ in empty)
    assert _value(empty, "nexus_backup_stored_bytes", location="local") == 0

    manual = []
    for name in ("first", "second"):
        response = await api.client.post("/backups?wait=true", headers=headers, json={"name": name})
        assert response.status_code == 201, response.text
        manual.append(response.json())
    schedule = (
        await api.client.post(
            "/schedules", headers=headers, json={"name": "nightly", "cronExpression": "0 2 * * *"}
        )
    ).json()
    at = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # the tick's time, passed in
    api.app.sql(
        "UPDATE nexus_backup.backup_schedule SET next_run_at = "
        f"'{(at - timedelta(minutes=1)).isoformat()}' WHERE id = '{schedule['id']}'"
    )
    [scheduled_id] = await tick(api.operations, at)
    scheduled = (await api.client.get(f"/backups/{scheduled_id}", headers=headers)).json()
    assert scheduled["status"] == "completed", scheduled

    restore = await api.client.post(
        f"/backups/{manual[0]['id']}/restore", headers=headers, json={"confirm": "first"}
    )
    assert restore.status_code == 202, restore.text
    assert (await api.wait_restore(restore.json()["id"], headers))["status"] == "completed"
    listed = (await api.client.get("/backups", headers=headers)).json()["items"]
    [safety] = [b for b in listed if b["type"] == "pre_restore"]

    samples = await _scrape(api, headers)
    assert _backups(samples) == {
        ("completed", "manual"): 2,
        ("completed", "scheduled"): 1,
        ("completed", "pre_restore"): 1,
    }
    assert _value(samples, "nexus_backups", status="failed", type="manual") == 0
    newest = max(listed, key=lambda b: _time(b["completedAt"]))
    assert newest["id"] == safety["id"]
    assert _value(
        samples, "nexus_backup_last_success_timestamp_seconds", schedule="", schedule_id=""
    ) == _time(newest["completedAt"])
    assert _value(
        samples,
        "nexus_backup_last_success_timestamp_seconds",
        schedule="nightly",
        schedule_id=schedule["id"],
    ) == _time(scheduled["completedAt"])
    latest = max(listed, key=lambda b: _time(b["createdAt"]))
    assert _value(samples, "nexus_backup_last_size_bytes") == latest["fileSize"]
    duration = datetime.fromisoformat(latest["completedAt"]) - datetime.fromisoformat(
        latest["startedAt"]
    )
    assert _value(samples, "nexus_backup_last_duration_seconds") == duration.total_seconds()
    assert _value(samples, "nexus_backup_stored_bytes", location="local") == sum(
        b["fileSize"] for b in listed
    )
    assert _value(samples, "nexus_backup_stored_bytes", location="cloud") == 0
    assert _value(samples, "nexus_backup_sync_backlog") == 0
    assert _value(samples, "nexus_restores", status="completed") == 1
    assert _value(samples, "nexus_restores", status="failed") == 0
    assert _value(samples, "nexus_backup_build_info", version=prometheus_version(samples)) == 1
    # The process's own metrics come along; no ticker runs in this app, so no lag is reported.
    assert _value(samples, "process_resident_memory_bytes")
    assert not any(name == "nexus_scheduler_lag_seconds" for name, _ in samples)

    # A deleted backup leaves the counts and the bytes.
    deleted = await api.client.delete(f"/backups/{manual[1]['id']}", headers=headers)
    assert deleted.status_code == 200, deleted.text
    after = await _scrape(api, headers)
    assert _value(after, "nexus_backups", status="completed", type="manual") == 1
    assert _value(after, "nexus_backup_stored_bytes", location="local") == sum(
        b["fileSize"] for b in listed if b["id"] != manual[1]["id"]
    )


def prometheus_version(samples: Samples) -> str:
    [version] = [
        dict(labels)["version"] for name, labels in samples if name == "nexus_backup_build_info"
    ]
    return version


async def test_a_failed_upload_is_sync_backlog_until_it_is_synced(capi: Api, s3: S3Server) -> None:
    headers = await capi.headers()
    s3.fail("PUT", "", times=1000)
    response = await capi.client.post(
        "/backups?wait=true", headers=headers, json={"name": "stormy", "syncToCloud": True}
    )
    body = response.json()
    assert (body["status"], body["syncStatus"]) == ("completed", "pending"), body
    samples = await _scrape(capi, headers)
    assert _value(samples, "nexus_backup_sync_backlog") == 1
    assert _value(samples, "nexus_backup_stored_bytes", location="cloud") == 0

    s3.reset()
    synced = await capi.client.post(f"/backups/{body['id']}/sync", headers=headers)
    assert synced.json()["syncStatus"] == "synced", synced.text
    samples = await _scrape(capi, headers)
    assert _value(samples, "nexus_backup_sync_backlog") == 0
    assert _value(samples, "nexus_backup_stored_bytes", location="cloud") == body["fileSize"]


def test_next_due_is_the_first_grid_instant_after_now() -> None:
    start = datetime(2031, 1, 1, tzinfo=UTC)
    minute = timedelta(minutes=1)
    assert next_due(start, minute, start) == start + minute
    assert next_due(start, minute, start + timedelta(seconds=7)) == start + minute
    assert next_due(start, minute, start + timedelta(minutes=5, seconds=1)) == start + 6 * minute
    assert next_due(start, minute, start - timedelta(seconds=1)) == start + minute


async def test_scheduler_lag_is_how_late_the_last_tick_ran(app: App) -> None:
    clock = Clock()
    async with serving(app, clock) as api:
        headers = await api.headers()
        scheduler = Scheduler(api.operations, clock=lambda: NOW)
        scheduler.due_at = NOW - timedelta(seconds=7)  # as start() plans the first tick
        await scheduler._tick()  # 7 s late
        assert scheduler.lag_seconds == 7
        assert scheduler.due_at == NOW + timedelta(seconds=53)
        api.fastapi.state.scheduler = scheduler
        samples = await _scrape(api, headers)
        assert _value(samples, "nexus_scheduler_lag_seconds") == 7

        # The next tick is overdue (a long backup holds the ticker): the lag grows meanwhile.
        clock.now = NOW + timedelta(seconds=120)
        samples = await _scrape(api, headers)
        assert _value(samples, "nexus_scheduler_lag_seconds") == 67


def test_rendering_never_touches_the_global_registry() -> None:
    before = {name for name, _ in _names(prometheus_client.REGISTRY.collect())}
    first, _ = render(CatalogSnapshot(), None, None)
    second, _ = render(CatalogSnapshot(backups={("failed", "manual"): 3}), 1.5, None)
    assert b"nexus_backups" in first
    assert 'nexus_backups{status="failed",type="manual"} 3.0' in second.decode()
    after = {name for name, _ in _names(prometheus_client.REGISTRY.collect())}
    assert after == before
    assert not any(name.startswith("nexus_") for name in after)


def _names(families: Any) -> Iterator[tuple[str, None]]:
    for family in families:
        yield family.name, None
