"""The REST API end to end: backups, progress, one mutation at a time, download links,
restore, verify and the audit trail, over the real ASGI app on real PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from asgi_lifespan import LifespanManager

from api.auth import service as auth
from api.backups import runner
from api.db import transaction
from api.main import create_app
from api.operations.backup import BackupOp
from api.operations.engine import Context
from tests.conftest import Api, App, database_state, tree_state


async def _audit(api: Api, headers: dict[str, str], action: str) -> list[dict[str, object]]:
    body = (await api.client.get(f"/audit?action={action}&limit=500", headers=headers)).json()
    return list(body["items"])


async def test_create_answers_202_pending_then_completes(api: Api) -> None:
    headers = await api.headers()
    response = await api.client.post("/backups", headers=headers, json={"name": "bg"})
    assert response.status_code == 202, response.text
    pending = response.json()
    assert pending["status"] == "pending"
    assert pending["name"] == "bg"
    assert pending["type"] == "manual"
    done = await api.wait_backup(pending["id"], headers)
    assert done["status"] == "completed", done
    assert done["checksum"] == hashlib.sha256(Path(str(done["filePath"])).read_bytes()).hexdigest()
    assert done["tableCount"] == 5
    assert done["uploadedFilesCount"] > 0
    assert done["progress"] is None
    assert done["createdBy"].startswith("token:")


async def test_progress_is_readable_while_a_backup_runs(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The backup is held in its verifying phase, half way through the archive, until the test
    # has read the record: the engine's ~1 s progress flush then happens while it runs.
    release = threading.Event()
    real_check_written = runner.check_written

    def held_check_written(path: Path, built: Any, on_progress: Callable[[int], None]) -> None:
        half, done = path.stat().st_size // 2, 0

        def advance(amount: int) -> None:
            nonlocal done
            on_progress(amount)
            done += amount
            if done >= half:
                assert release.wait(60), "the test never released the backup"

        real_check_written(path, built, advance)

    flushed: asyncio.Queue[tuple[str | None, int, int | None]] = asyncio.Queue()
    real_save_progress = BackupOp.save_progress

    async def observed_save_progress(
        self: BackupOp, ctx: Context, phase: str | None, done: int, total: int | None
    ) -> None:
        await real_save_progress(self, ctx, phase, done, total)
        flushed.put_nowait((phase, done, total))

    monkeypatch.setattr(runner, "check_written", held_check_written)
    monkeypatch.setattr(BackupOp, "save_progress", observed_save_progress)
    headers = await api.headers()
    started = (await api.client.post("/backups", headers=headers, json={"name": "slow"})).json()
    try:
        while True:  # the first flush of the held position
            phase, done, total = await asyncio.wait_for(flushed.get(), 60)
            if phase == "verifying" and done > 0:
                break
        body = (await api.client.get(f"/backups/{started['id']}", headers=headers)).json()
    finally:
        release.set()
    assert body["status"] == "in_progress", body
    progress = body["progress"]
    assert {"phase", "bytesDone", "bytesTotal", "percent"} <= set(progress), progress
    assert (progress["phase"], progress["bytesDone"], progress["bytesTotal"]) == (
        "verifying",
        done,
        total,
    )
    assert 0 < progress["percent"] < 100, progress
    assert (await api.wait_backup(started["id"], headers))["status"] == "completed"


async def test_wait_true_answers_201_when_the_backup_completes(api: Api) -> None:
    headers = await api.headers()
    response = await api.client.post(
        "/backups?wait=true",
        headers=headers,
        json={"name": "ci-pre-deploy", "type": "pre_update", "description": "before v2"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["type"] == "pre_update"
    assert body["description"] == "before v2"
    assert Path(body["filePath"]).is_file()


async def test_wait_true_answers_500_with_reason_and_id_when_the_backup_fails(app: App) -> None:
    shutil.rmtree(app.uploads)  # the backup itself fails: UPLOADS_DIR is gone
    fastapi = create_app(app.settings())
    async with LifespanManager(fastapi) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            api = Api(app, client, fastapi.state.services, fastapi)
            headers = await api.headers()
            response = await client.post("/backups?wait=true", headers=headers, json={})
            assert response.status_code == 500
            body = response.json()
            assert body["error"] == "BackupFailed"
            assert "UPLOADS_DIR" in body["detail"]
            record = (await client.get(f"/backups/{body['backupId']}", headers=headers)).json()
            assert record["status"] == "failed"
            assert "UPLOADS_DIR" in record["errorMessage"]
            failed = await _audit(api, headers, "backup.run")
            assert failed[0]["outcome"] == "failed"


async def test_two_concurrent_creates_give_one_run_and_one_409(api: Api) -> None:
    headers = await api.headers()
    first, second = await asyncio.gather(
        api.client.post("/backups", headers=headers, json={"name": "one"}),
        api.client.post("/backups", headers=headers, json={"name": "two"}),
    )
    codes = sorted([first.status_code, second.status_code])
    assert codes == [202, 409], (first.text, second.text)
    winner, loser = (first, second) if first.status_code == 202 else (second, first)
    assert loser.json()["error"] == "Busy"
    assert winner.json()["name"] in loser.json()["detail"]
    await api.wait_backup(winner.json()["id"], headers)
    listed = (await api.client.get("/backups", headers=headers)).json()
    assert listed["total"] == 1


async def test_deleting_a_running_backup_answers_409(api: Api) -> None:
    headers = await api.headers()
    (api.app.uploads / "big.bin").write_bytes(__import__("os").urandom(30 * 1024 * 1024))
    started = (await api.client.post("/backups", headers=headers, json={"name": "busy"})).json()
    response = await api.client.delete(f"/backups/{started['id']}", headers=headers)
    assert response.status_code == 409
    assert "busy" in response.json()["detail"]
    assert (await api.wait_backup(started["id"], headers))["status"] == "completed"


async def test_delete_removes_archive_and_sidecar_and_hides_the_backup(api: Api) -> None:
    headers = await api.headers()
    body = (
        await api.client.post("/backups?wait=true", headers=headers, json={"name": "gone"})
    ).json()
    path = Path(body["filePath"])
    response = await api.client.delete(f"/backups/{body['id']}", headers=headers)
    assert response.status_code == 200
    assert response.json()["deletedAt"] is not None
    assert not path.exists()
    assert not path.with_name(path.name + ".sha256").exists()
    assert (await api.client.get(f"/backups/{body['id']}", headers=headers)).status_code == 404
    assert (await api.client.get("/backups", headers=headers)).json()["total"] == 0
    assert (await _audit(api, headers, "backup.delete"))[0]["target"] == "gone"


async def test_list_filters_pages_and_counts(api: Api) -> None:
    headers = await api.headers()
    for name in ("a", "b", "c"):
        await api.client.post("/backups?wait=true", headers=headers, json={"name": name})
    await api.client.post(
        "/backups?wait=true", headers=headers, json={"name": "d", "type": "pre_update"}
    )
    page = (await api.client.get("/backups?limit=2&offset=1", headers=headers)).json()
    assert page["total"] == 4
    assert [b["name"] for b in page["items"]] == ["c", "b"]
    typed = (await api.client.get("/backups?type=pre_update", headers=headers)).json()
    assert [b["name"] for b in typed["items"]] == ["d"]
    failed = (await api.client.get("/backups?status=failed", headers=headers)).json()
    assert failed["total"] == 0
    bad = await api.client.get("/backups?limit=0", headers=headers)
    assert bad.status_code == 422
    assert bad.json()["error"] == "Unprocessable"


async def test_download_link_streams_the_archive_until_it_expires(api: Api) -> None:
    headers = await api.headers()
    body = (
        await api.client.post("/backups?wait=true", headers=headers, json={"name": "dl"})
    ).json()
    link = (await api.client.get(f"/backups/{body['id']}/download", headers=headers)).json()
    assert set(link) == {"url", "expiresAt"}
    url = urlsplit(link["url"])
    download = await api.client.get(f"{url.path}?{url.query}")  # no credentials needed
    assert download.status_code == 200
    archive = Path(body["filePath"]).read_bytes()
    assert download.content == archive
    assert download.headers["content-length"] == str(len(archive))
    assert 'filename="dl.tar.gz"' in download.headers["content-disposition"]

    query = parse_qs(url.query)
    tampered = await api.client.get(
        f"{url.path}?expires={int(query['expires'][0]) + 3600}&signature={query['signature'][0]}"
    )
    assert tampered.status_code == 403
    other_sig = query["signature"][0][:-1] + ("0" if query["signature"][0][-1] != "0" else "1")
    assert (
        await api.client.get(f"{url.path}?expires={query['expires'][0]}&signature={other_sig}")
    ).status_code == 403

    # A correctly signed link whose time is up: the server must refuse it.
    async with transaction(api.services.sessions) as session:
        key = await auth.signing_key(session)
    past = int(time.time()) - 1
    expired_sig = auth.sign(key, f"download:{body['id']}:{past}")
    expired = await api.client.get(f"{url.path}?expires={past}&signature={expired_sig}")
    assert expired.status_code == 403
    assert "expired" in expired.json()["detail"]

    actions = {
        a["action"] for a in (await api.client.get("/audit", headers=headers)).json()["items"]
    }
    assert {"backup.download_link", "backup.download"} <= actions


async def test_restore_over_the_api_round_trips_and_keeps_serving(api: Api) -> None:
    headers = await api.headers()
    before = tree_state(api.app.uploads), database_state(api.app)
    body = (
        await api.client.post("/backups?wait=true", headers=headers, json={"name": "rt"})
    ).json()
    api.app.sql("DELETE FROM invoice_lines; CREATE TABLE later (x int);")
    (api.app.uploads / "later.txt").write_text("later")

    wrong = await api.client.post(
        f"/backups/{body['id']}/restore", headers=headers, json={"confirm": "nope"}
    )
    assert wrong.status_code == 400
    assert "rt" in wrong.json()["detail"]
    assert api.app.sql("SELECT count(*) FROM invoice_lines").strip() == "0"

    started = await api.client.post(
        f"/backups/{body['id']}/restore", headers=headers, json={"confirm": "rt"}
    )
    assert started.status_code == 202, started.text
    restore = started.json()
    assert restore["status"] == "in_progress"
    assert (await api.client.get("/health")).json() == {"status": "ok"}
    busy = await api.client.post("/backups", headers=headers, json={"name": "during"})
    assert busy.status_code == 409
    done = await api.wait_restore(restore["id"], headers)
    assert done["status"] == "completed", done
    assert done["preRestoreBackupId"]

    assert (tree_state(api.app.uploads), database_state(api.app)) == before
    listed = (await api.client.get("/backups", headers=headers)).json()
    assert {b["name"] for b in listed["items"]} >= {"rt"}
    assert any(b["type"] == "pre_restore" for b in listed["items"])
    outcomes = [a["outcome"] for a in await _audit(api, headers, "restore.run")]
    assert outcomes[0] == "completed"


async def test_verify_passes_and_deep_verify_test_restores(api: Api) -> None:
    headers = await api.headers()
    body = (await api.client.post("/backups?wait=true", headers=headers, json={"name": "v"})).json()
    plain = (await api.client.post(f"/backups/{body['id']}/verify", headers=headers)).json()
    assert plain["ok"] is True
    assert plain["sha256"] == body["checksum"]
    deep = (
        await api.client.post(f"/backups/{body['id']}/verify?deep=true", headers=headers)
    ).json()
    assert deep["ok"] is True, deep
    assert deep["tablesChecked"] == 5
    leftovers = api.app.sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'nexus_verify_%'")
    assert leftovers.strip() == "0"


async def test_verify_reports_a_corrupted_archive(api: Api) -> None:
    headers = await api.headers()
    body = (await api.client.post("/backups?wait=true", headers=headers, json={"name": "c"})).json()
    path = Path(body["filePath"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    result = (await api.client.post(f"/backups/{body['id']}/verify", headers=headers)).json()
    assert result["ok"] is False
    assert "corrupt" in result["problem"]
    audit = await _audit(api, headers, "backup.verify")
    assert audit[0]["outcome"] == "failed"


async def test_every_action_is_audited_with_actor_and_address(api: Api) -> None:
    headers = await api.headers()
    body = (
        await api.client.post("/backups?wait=true", headers=headers, json={"name": "au"})
    ).json()
    await api.client.post(f"/backups/{body['id']}/verify", headers=headers)
    await api.client.get(f"/backups/{body['id']}/download", headers=headers)
    await api.client.delete(f"/backups/{body['id']}", headers=headers)
    await api.client.get("/backups")  # refused: no credentials
    items = (await api.client.get("/audit?limit=100", headers=headers)).json()["items"]
    actions = [i["action"] for i in items]
    for action in (
        "backup.create",
        "backup.run",
        "backup.verify",
        "backup.download_link",
        "backup.delete",
        "auth.refused",
    ):
        assert action in actions, f"{action} missing from {actions}"
    mine = [i for i in items if i["action"] != "auth.refused"]
    assert all(i["actor"].startswith("token:") for i in mine)
    assert all(i["clientAddress"] for i in items)
    page = (await api.client.get("/audit?limit=2&offset=1", headers=headers)).json()
    assert page["total"] == len(items)
    assert [i["id"] for i in page["items"]] == [i["id"] for i in items[1:3]]
