"""GET /health/live, /health/ready and /health (api/health.py) over the real app and PostgreSQL:
live is always 200; ready is 503 for each failing check (catalog, backup folder, pg_dump,
bucket), anonymous callers see only the status and admins each check; the slow checks are cached
by the app's clock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from api.health import READY_TTL_SECONDS
from tests.auth.helpers import bearer, make_jwt
from tests.conftest import Api, App, cloud_settings
from tests.probes import Clock, old_pg_bin, readonly_mount, serving
from tests.s3server import S3Server


@pytest.fixture
def readonly() -> Iterator[Path]:
    with readonly_mount() as folder:
        yield folder


ADMIN = bearer(make_jwt())


async def _ready(api: Api, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    response = await api.client.get("/health/ready", headers=headers or {})
    return response.status_code, response.json()


def _checks(body: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    return {check["name"]: (check["ok"], check["detail"]) for check in body["checks"]}


async def test_live_ready_and_health_are_ok_for_anyone_without_detail(api: Api) -> None:
    for path in ("/health/live", "/health/ready", "/health"):
        response = await api.client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.json() == {"status": "ok"}, path


async def test_an_admin_gets_each_readiness_check(api: Api) -> None:
    status, body = await _ready(api, await api.headers("KAJ_MANAGER"))
    assert status == 200, body
    assert body["status"] == "ok"
    checks = _checks(body)
    assert list(checks) == ["catalog", "backup_dir", "pg_dump"]  # no bucket configured
    assert all(ok for ok, _ in checks.values()), checks
    assert checks["backup_dir"][1] == f"{api.app.backups} is writable"
    assert "can dump server" in checks["pg_dump"][1]


async def test_a_non_admin_or_a_wrong_credential_gets_no_detail_and_no_401(api: Api) -> None:
    for headers in (
        await api.headers("ACCOUNTANT"),
        bearer("nxb_" + os.urandom(16).hex()),
        bearer("not-a-jwt"),
    ):
        assert await _ready(api, headers) == (200, {"status": "ok"}), headers


async def test_ready_is_503_when_the_catalog_is_gone_and_live_stays_200(app: App) -> None:
    catalog = f"catalog_{os.getpid()}_{os.urandom(3).hex()}"
    url = app.cluster.create_database(catalog)
    try:
        async with serving(app, catalog_database_url=url) as api:
            assert await _ready(api) == (200, {"status": "ok"})
            app.cluster.drop_database(catalog)  # disconnects the pool's sessions

            assert await _ready(api) == (503, {"status": "unavailable"})
            status, body = await _ready(api, ADMIN)
            assert status == 503
            ok, detail = _checks(body)["catalog"]
            assert ok is False
            assert catalog in detail, detail
            assert all(ok for name, (ok, _) in _checks(body).items() if name != "catalog")
            health = await api.client.get("/health")
            assert (health.status_code, health.json()) == (503, {"status": "unavailable"})
            live = await api.client.get("/health/live")
            assert (live.status_code, live.json()) == (200, {"status": "ok"})
    finally:
        app.cluster.drop_database(catalog)


async def test_ready_is_503_when_the_backup_dir_is_read_only(app: App, readonly: Path) -> None:
    async with serving(app, backup_dir=readonly) as api:
        assert await _ready(api) == (503, {"status": "unavailable"})
        status, body = await _ready(api, ADMIN)
        assert status == 503
        checks = _checks(body)
        assert checks["backup_dir"] == (
            False,
            f"BACKUP_DIR {readonly} is not writable (read-only file system): make it writable "
            "by user root, or set BACKUP_DIR to a writable folder",
        )
        assert checks["catalog"][0], checks
        assert checks["pg_dump"][0], checks


async def test_ready_is_503_when_pg_dump_is_older_than_the_server(app: App, tmp_path: Path) -> None:
    async with serving(app, pg_bin_dir=old_pg_bin(tmp_path / "bin")) as api:
        assert await _ready(api) == (503, {"status": "unavailable"})
        status, body = await _ready(api, ADMIN)
        assert status == 503
        ok, detail = _checks(body)["pg_dump"]
        assert ok is False
        assert detail.startswith("pg_dump 9 cannot dump server "), detail
        assert "install postgresql-client-" in detail


async def test_ready_is_503_while_the_bucket_is_missing_and_caches_the_answer(
    app: App, s3: S3Server
) -> None:
    bucket = f"late-{os.urandom(4).hex()}"
    clock = Clock()
    async with serving(app, clock, **cloud_settings(s3, bucket)) as api:
        assert await _ready(api) == (503, {"status": "unavailable"})
        status, body = await _ready(api, ADMIN)
        ok, detail = _checks(body)["storage"]
        assert (status, ok) == (503, False)
        assert f"bucket {bucket} does not exist" in detail, detail

        s3.create_bucket(bucket)
        s3.clear_log()
        # Within the cache's lifetime the answer is the stored one: the bucket is not asked.
        clock.now += timedelta(seconds=READY_TTL_SECONDS - 1)
        assert await _ready(api) == (503, {"status": "unavailable"})
        assert s3.requests == []

        clock.now += timedelta(seconds=1)
        assert await _ready(api) == (200, {"status": "ok"})
        assert s3.requests, "the bucket was not asked again once the cache expired"
        status, body = await _ready(api, ADMIN)
        assert _checks(body)["storage"] == (True, "the minio bucket answers")
