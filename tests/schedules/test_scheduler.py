"""Schedules over the API, and the scheduler's ticks on real PostgreSQL: exactly once per fire
time across processes, missed windows once, collisions retried, retention."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from api.locks import MutationLock
from api.operations import Operations
from api.scheduler import tick
from api.services import Services, open_services
from tests.conftest import Api, App, run_server


async def _schedule(api: Api, headers: dict[str, str], **body: object) -> dict[str, object]:
    payload = {"name": "nightly", "cronExpression": "0 2 * * *", **body}
    response = await api.client.post("/schedules", headers=headers, json=payload)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _make_due(app: App, schedule_id: object, at: datetime) -> None:
    app.sql(
        f"UPDATE nexus_backup.backup_schedule SET next_run_at = '{at.isoformat()}' "
        f"WHERE id = '{schedule_id}'"
    )


def _scheduled_backups(app: App) -> list[str]:
    rows = app.sql(
        "SELECT status FROM nexus_backup.system_backup WHERE type = 'scheduled' ORDER BY created_at"
    )
    return rows.split()


async def test_weekday_london_schedule_runs_at_0330_london_time(api: Api) -> None:
    headers = await api.headers()
    body = await _schedule(
        api, headers, name="weekdays", cronExpression="30 3 * * 1-5", timezone="Europe/London"
    )
    nxt = datetime.fromisoformat(str(body["nextRunAt"])).astimezone(ZoneInfo("Europe/London"))
    assert (nxt.hour, nxt.minute) == (3, 30)
    assert nxt.weekday() < 5
    assert nxt > datetime.now(UTC)
    assert "03:30" in str(body["description"])
    assert "Monday through Friday" in str(body["description"])
    assert body["isEnabled"] is True
    assert body["successCount"] == 0


async def test_invalid_cron_or_timezone_answers_422_naming_the_field(api: Api) -> None:
    headers = await api.headers()
    for cron_expression, field in (
        ("61 * * * *", "minute"),
        ("0 1 * * * *", "5 fields"),
        ("every day", "cronExpression"),
    ):
        response = await api.client.post(
            "/schedules", headers=headers, json={"name": "x", "cronExpression": cron_expression}
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "Unprocessable"
        assert "cronExpression" in response.json()["detail"]
        assert field in response.json()["detail"], response.json()["detail"]
    bad_zone = await api.client.post(
        "/schedules",
        headers=headers,
        json={"name": "x", "cronExpression": "0 1 * * *", "timezone": "Mars/Olympus"},
    )
    assert bad_zone.status_code == 422
    assert "timezone" in bad_zone.json()["detail"]
    assert (await api.client.get("/schedules", headers=headers)).json() == []


async def test_preview_gives_five_runs_and_plain_words(api: Api) -> None:
    headers = await api.headers()
    response = await api.client.get(
        "/schedules/preview",
        headers=headers,
        params={"cron": "0 */6 * * *", "timezone": "America/New_York"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    runs = [datetime.fromisoformat(r) for r in body["nextRuns"]]
    assert len(runs) == 5
    assert all(b - a == timedelta(hours=6) for a, b in itertools.pairwise(runs))
    assert all(r.astimezone(ZoneInfo("America/New_York")).hour % 6 == 0 for r in runs)
    assert "6 hours" in body["description"]
    bad = await api.client.get("/schedules/preview", headers=headers, params={"cron": "* *"})
    assert bad.status_code == 422


async def test_update_toggle_and_delete_keep_next_run_right(api: Api) -> None:
    headers = await api.headers()
    body = await _schedule(api, headers)
    sid = body["id"]
    changed = (
        await api.client.patch(
            f"/schedules/{sid}", headers=headers, json={"cronExpression": "15 4 * * 0"}
        )
    ).json()
    nxt = datetime.fromisoformat(changed["nextRunAt"])
    assert (nxt.hour, nxt.minute, nxt.isoweekday()) == (4, 15, 7)
    off = (await api.client.post(f"/schedules/{sid}/toggle", headers=headers)).json()
    assert off["isEnabled"] is False
    assert off["nextRunAt"] is None
    on = (await api.client.post(f"/schedules/{sid}/toggle", headers=headers)).json()
    assert on["isEnabled"] is True
    assert on["nextRunAt"] == changed["nextRunAt"]
    bad = await api.client.patch(f"/schedules/{sid}", headers=headers, json={"timezone": "Nope"})
    assert bad.status_code == 422
    assert (await api.client.delete(f"/schedules/{sid}", headers=headers)).status_code == 204
    assert (await api.client.get("/schedules", headers=headers)).json() == []
    actions = {
        a["action"] for a in (await api.client.get("/audit", headers=headers)).json()["items"]
    }
    assert {"schedule.create", "schedule.update", "schedule.toggle", "schedule.delete"} <= actions


async def test_a_due_schedule_runs_once_and_updates_counts(api: Api) -> None:
    headers = await api.headers()
    body = await _schedule(api, headers)
    at = datetime.now(UTC)
    _make_due(api.app, body["id"], at - timedelta(minutes=1))
    ran = await tick(api.operations, at)
    assert len(ran) == 1
    assert await tick(api.operations, at) == []
    schedule = (await api.client.get("/schedules", headers=headers)).json()[0]
    assert schedule["successCount"] == 1
    assert schedule["failureCount"] == 0
    assert datetime.fromisoformat(schedule["lastRunAt"]) == at
    assert datetime.fromisoformat(schedule["nextRunAt"]) > at
    backup = (await api.client.get(f"/backups/{ran[0]}", headers=headers)).json()
    assert backup["type"] == "scheduled"
    assert backup["status"] == "completed"
    assert backup["scheduleId"] == body["id"]
    assert backup["name"].startswith("scheduled-")


async def test_missed_fire_times_run_once_not_once_per_miss(api: Api) -> None:
    headers = await api.headers()
    body = await _schedule(api, headers, cronExpression="*/5 * * * *")
    # A fixed instant one minute past a 5-minute boundary: the next fire time is 4 minutes
    # away whatever the wall clock says, so the second tick 30 s later finds nothing due.
    at = datetime(2026, 3, 2, 12, 1, tzinfo=UTC)
    _make_due(api.app, body["id"], at - timedelta(days=2))  # ~576 fire times missed
    assert len(await tick(api.operations, at)) == 1
    assert len(await tick(api.operations, at + timedelta(seconds=30))) == 0
    assert _scheduled_backups(api.app) == ["completed"]


async def test_a_run_that_meets_a_running_backup_is_retried_not_lost(api: Api) -> None:
    headers = await api.headers()
    body = await _schedule(api, headers)
    at = datetime.now(UTC)
    _make_due(api.app, body["id"], at - timedelta(minutes=1))
    holder = MutationLock(api.services.engine)
    assert await holder.try_acquire()
    try:
        assert await tick(api.operations, at) == []
    finally:
        await holder.release()
    schedule = (await api.client.get("/schedules", headers=headers)).json()[0]
    assert schedule["failureCount"] == 0
    assert datetime.fromisoformat(schedule["nextRunAt"]) <= at, "the due run was dropped"
    assert len(await tick(api.operations, at + timedelta(seconds=60))) == 1


async def test_a_failed_scheduled_run_is_counted_and_recorded(api: Api) -> None:
    headers = await api.headers()
    body = await _schedule(api, headers)
    shutil.rmtree(api.app.uploads)
    at = datetime.now(UTC)
    _make_due(api.app, body["id"], at - timedelta(minutes=1))
    ran = await tick(api.operations, at)
    backup = (await api.client.get(f"/backups/{ran[0]}", headers=headers)).json()
    assert backup["status"] == "failed"
    assert "UPLOADS_DIR" in backup["errorMessage"]
    schedule = (await api.client.get("/schedules", headers=headers)).json()[0]
    assert (schedule["successCount"], schedule["failureCount"]) == (0, 1)


async def test_two_processes_ticking_together_run_each_fire_time_once(app: App, api: Api) -> None:
    headers = await api.headers()
    body = await _schedule(api, headers)
    other: Services = await open_services(app.settings())
    try:
        for n in range(3):
            at = datetime.now(UTC) + timedelta(minutes=n)
            _make_due(app, body["id"], at - timedelta(seconds=1))
            results = await asyncio.gather(tick(api.operations, at), tick(Operations(other), at))
            assert sum(len(r) for r in results) == 1, results
    finally:
        await other.close()
    assert _scheduled_backups(app) == ["completed"] * 3


# APScheduler logs this line when a tick has finished, whether or not it ran anything.
TICK_DONE = "executed successfully"


def test_two_server_processes_on_one_catalog_back_up_once_per_fire_time(
    app: App, tmp_path: Path
) -> None:
    token = app.cli("tokens", "create", "--name", "sched").stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                run_server(app, tmp_path / f"server{n}.log", SCHEDULER_TICK_SECONDS="0.5")
            )
            for n in range(2)
        ]
        created = httpx.post(
            f"{servers[0].base}/schedules",
            headers=headers,
            json={"name": "nightly", "cronExpression": "0 3 29 2 *"},  # never due on its own
            timeout=10,
        )
        assert created.status_code == 201, created.text
        schedule_id = created.json()["id"]
        for fire in range(1, 4):
            marks = [server.output.count(TICK_DONE) for server in servers]
            _make_due(app, schedule_id, datetime.now(UTC) - timedelta(seconds=1))
            # A process's ticks never overlap (max_instances=1), so of the ticks it finishes
            # after the schedule became due, all but the first also began after it: 4 finished
            # ticks are 3 whole ticks in which each process saw the due run, claimed it or
            # found it claimed, and a tick that ran the backup ended with it.
            for server, mark in zip(servers, marks, strict=True):
                server.output.wait_for(TICK_DONE, mark + 4)
            statuses = _scheduled_backups(app)
            logs = [p.read_text() for p in tmp_path.glob("*.log")]
            assert len(statuses) == fire, (statuses, logs)
        assert set(_scheduled_backups(app)) == {"completed"}


async def test_retention_deletes_old_scheduled_backups_but_never_the_newest(api: Api) -> None:
    headers = await api.headers()
    body = await _schedule(api, headers, retentionDays=7)
    at = datetime.now(UTC)
    ids = []
    for n in range(3):
        _make_due(api.app, body["id"], at + timedelta(minutes=n) - timedelta(seconds=1))
        ids += await tick(api.operations, at + timedelta(minutes=n))
    manual = (
        await api.client.post("/backups?wait=true", headers=headers, json={"name": "keep"})
    ).json()
    old = datetime.now(UTC) - timedelta(days=30)
    api.app.sql(
        f"UPDATE nexus_backup.system_backup SET completed_at = '{old.isoformat()}' "
        f"WHERE id IN ('{ids[0]}', '{ids[1]}', '{manual['id']}')"
    )
    paths = {
        i: (await api.client.get(f"/backups/{i}", headers=headers)).json()["filePath"] for i in ids
    }
    _make_due(api.app, body["id"], at + timedelta(minutes=5))
    ids += await tick(api.operations, at + timedelta(minutes=6))
    listed = {
        b["id"]
        for b in (await api.client.get("/backups?limit=100", headers=headers)).json()["items"]
    }
    assert ids[0] not in listed
    assert ids[1] not in listed
    assert ids[2] in listed
    assert ids[3] in listed
    assert manual["id"] in listed, "retention touched a manual backup"
    assert not Path(paths[ids[0]]).exists()
    assert Path(paths[ids[2]]).exists()
    audit = (await api.client.get("/audit?action=backup.retention_delete", headers=headers)).json()
    assert audit["total"] == 2
