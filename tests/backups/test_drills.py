"""Restore drills: a deep verify restores a backup into a scratch database, checks it (row counts
against the manifest, every member's checksum, the VERIFY_SQL sanity queries), drops the
scratch database whatever happened, and records its outcome on the backup; the newest backup
that passed is the installation's newest proven restorable; a failed drill is notified."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import tarfile
from typing import Any

import pytest

from api.sources import postgres
from tests.conftest import Api, App, api_for, database_state, tree_state
from tests.notify.conftest import (  # the receiver fixture, for this module
    Receiver,
    notify_settings,
    notifying,
    receiver,  # noqa: F401
)


def _scratch_databases(app: App) -> str:
    return app.sql("SELECT datname FROM pg_database WHERE datname LIKE 'nexus_verify_%'").strip()


async def _backup(api: Api, headers: dict[str, str]) -> dict[str, Any]:
    response = await api.client.post("/backups?wait=true", headers=headers)
    assert response.status_code in (200, 201), response.text
    backup: dict[str, Any] = response.json()
    assert backup["status"] == "completed", backup
    return backup


async def _drill(api: Api, headers: dict[str, str], backup_id: str) -> dict[str, Any]:
    response = await api.client.post(f"/backups/{backup_id}/verify?deep=true", headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def _record(api: Api, headers: dict[str, str], backup_id: str) -> dict[str, Any]:
    record: dict[str, Any] = (await api.client.get(f"/backups/{backup_id}", headers=headers)).json()
    return record


async def test_a_passing_drill_is_recorded_and_is_the_newest_proven_restorable(
    api: Api,
) -> None:
    headers = await api.headers()
    first = await _backup(api, headers)
    second = await _backup(api, headers)
    assert (await api.client.get("/backups/drills/latest", headers=headers)).json() is None
    assert second["verifiedAt"] is None
    assert second["verifyOutcome"] is None
    live = database_state(api.app), tree_state(api.app.uploads)

    result = await _drill(api, headers, first["id"])

    assert result["ok"] is True, result
    assert result["tablesChecked"] > 0
    record = await _record(api, headers, first["id"])
    assert record["verifyOutcome"] == "passed"
    assert record["verifiedAt"] is not None
    assert isinstance(record["verifyDurationMs"], int)
    assert record["verifyDurationMs"] >= 0
    assert record["verifyError"] is None
    latest = (await api.client.get("/backups/drills/latest", headers=headers)).json()
    assert latest == {"id": first["id"], "name": first["name"], "verifiedAt": record["verifiedAt"]}
    listed = (await api.client.get("/backups", headers=headers)).json()["items"]
    assert {b["id"]: b["verifyOutcome"] for b in listed} == {
        first["id"]: "passed",
        second["id"]: None,
    }
    assert _scratch_databases(api.app) == "", "the scratch database was dropped"
    assert (database_state(api.app), tree_state(api.app.uploads)) == live, "live data untouched"

    await _drill(api, headers, second["id"])
    latest = (await api.client.get("/backups/drills/latest", headers=headers)).json()
    assert latest["id"] == second["id"], "the newer backup proven restorable wins"
    refused = await api.client.get(
        "/backups/drills/latest", headers=await api.headers("ACCOUNTANT")
    )
    assert refused.status_code == 403


async def test_a_tampered_archive_fails_the_drill_with_its_reason(api: Api) -> None:
    headers = await api.headers()
    backup = await _backup(api, headers)
    assert (await _drill(api, headers, backup["id"]))["ok"] is True
    path = api.app.backups / backup["filePath"].rsplit("/", 1)[-1]
    assert path.is_file(), path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    live = database_state(api.app), tree_state(api.app.uploads)

    result = await _drill(api, headers, backup["id"])

    assert result["ok"] is False
    record = await _record(api, headers, backup["id"])
    assert record["verifyOutcome"] == "failed"
    assert record["verifyError"] == result["problem"]
    assert "corrupt" in record["verifyError"]
    assert isinstance(record["verifyDurationMs"], int)
    latest = (await api.client.get("/backups/drills/latest", headers=headers)).json()
    assert latest is None, "a backup whose last drill failed is not proven restorable"
    assert _scratch_databases(api.app) == ""
    assert (database_state(api.app), tree_state(api.app.uploads)) == live


async def test_a_row_count_mismatch_fails_the_drill(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await api.headers()
    backup = await _backup(api, headers)
    counted = postgres.table_row_counts

    async def one_row_lost(url: str) -> dict[str, int]:
        counts = await counted(url)
        table = sorted(counts)[0]
        counts[table] -= 1
        return counts

    monkeypatch.setattr(postgres, "table_row_counts", one_row_lost)
    result = await _drill(api, headers, backup["id"])

    assert result["ok"] is False
    record = await _record(api, headers, backup["id"])
    assert record["verifyOutcome"] == "failed"
    assert "other row counts than recorded" in record["verifyError"]
    assert _scratch_databases(api.app) == ""


@pytest.mark.parametrize(
    ("verify_sql", "problem"),
    [
        ("SELECT count(*) > 0 FROM clients; SELECT true", None),
        ("SELECT true; SELECT count(*) = 0 FROM clients", "returned False"),
        ("SELECT count(*) > 0 FROM no_such_table", "no_such_table"),
        ("CREATE TABLE drill_wrote (id int); SELECT true", "read-only"),
    ],
    ids=["true-passes", "false-fails", "error-fails", "write-refused"],
)
async def test_verify_sql_sanity_queries_decide_the_drill(
    app: App, verify_sql: str, problem: str | None
) -> None:
    served = api_for(app, {"verify_sql": verify_sql})
    api = await anext(served)
    try:
        headers = await api.headers()
        backup = await _backup(api, headers)
        live = database_state(app), tree_state(app.uploads)
        result = await _drill(api, headers, backup["id"])
        record = await _record(api, headers, backup["id"])
    finally:
        await served.aclose()
    if problem is None:
        assert result["ok"] is True, result
        assert record["verifyOutcome"] == "passed"
    else:
        assert result["ok"] is False, result
        assert record["verifyOutcome"] == "failed"
        assert "VERIFY_SQL query" in record["verifyError"]
        assert problem in record["verifyError"], record["verifyError"]
    assert _scratch_databases(app) == ""
    assert (database_state(app), tree_state(app.uploads)) == live


async def test_a_refused_drill_records_nothing(api: Api) -> None:
    from api.locks import DEEP_VERIFY_LOCK, MutationLock

    headers = await api.headers()
    backup = await _backup(api, headers)
    running = MutationLock(api.services.engine, DEEP_VERIFY_LOCK)
    assert await running.try_acquire()
    try:
        refused = await api.client.post(
            f"/backups/{backup['id']}/verify?deep=true", headers=headers
        )
    finally:
        await running.release()
    assert refused.status_code == 409
    record = await _record(api, headers, backup["id"])
    assert (record["verifiedAt"], record["verifyOutcome"], record["verifyDurationMs"]) == (
        None,
        None,
        None,
    )


async def test_a_failed_drill_sends_a_webhook(
    app: App,
    receiver: Receiver,  # noqa: F811 (the fixture imported above)
) -> None:
    settings = notify_settings(receiver, None, verify_sql="SELECT false")
    async with notifying(app, settings) as api:
        headers = await api.headers()
        backup = await _backup(api, headers)
        await api.operations.notifier.drain()
        receiver.posts.clear()
        result = await _drill(api, headers, backup["id"])
        await api.operations.notifier.drain()
    assert result["ok"] is False
    drills = receiver.of("drill_failed")
    assert len(drills) == 1, receiver.posts
    assert drills[0]["backup"] == backup["name"]
    assert "VERIFY_SQL query 'SELECT false' returned False" in drills[0]["error"]


async def test_cli_verify_deep_passes_and_fails_with_exit_codes(api: Api) -> None:
    headers = await api.headers()
    backup = await _backup(api, headers)
    path = api.app.backups / backup["filePath"].rsplit("/", 1)[-1]

    passed = api.app.cli("verify", "--deep", backup["name"])
    assert f"OK {backup['name']} ({backup['id']}) restores" in passed.stdout
    assert (await _record(api, headers, backup["id"]))["verifyOutcome"] == "passed"
    by_path = api.app.cli("verify", "--deep", str(path))
    assert backup["id"] in by_path.stdout, "an archive path names its catalogued backup"

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    failed = api.app.cli("verify", "--deep", backup["id"], check=False)

    assert failed.returncode == 1, failed
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith(f"nexus-backup: error: restore drill of {backup['name']}")
    assert "FAILED" in lines[0]
    assert "corrupt" in lines[0]
    record = await _record(api, headers, backup["id"])
    assert record["verifyOutcome"] == "failed"
    assert _scratch_databases(api.app) == ""
    unknown = api.app.cli("verify", "--deep", "no-such-backup", check=False)
    assert unknown.returncode == 1
    assert "not a catalogued backup" in unknown.stderr


async def test_a_cancelled_drill_drops_its_scratch_database_and_records_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.audit.service import CLI
    from api.operations import VerifyOp

    headers = await api.headers()
    backup = await _backup(api, headers)
    loading = asyncio.Event()

    async def load_never_ends(url: str, settings: object, sql: object) -> None:
        loading.set()
        await asyncio.Event().wait()  # until cancelled

    monkeypatch.setattr(postgres, "load_sql", load_never_ends)
    handle = await api.operations.submit(VerifyOp(backup["id"], deep=True), CLI)
    await loading.wait()
    assert _scratch_databases(api.app) != "", "the drill is inside its scratch database"
    handle.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await handle.task

    assert _scratch_databases(api.app) == ""
    record = await _record(api, headers, backup["id"])
    assert (record["verifiedAt"], record["verifyOutcome"]) == (None, None)


async def test_an_upload_changed_inside_the_archive_fails_the_drill(api: Api) -> None:
    """The catalog's checksum made to match (a consistent forgery of the file): the upload's own
    SHA-256 in manifest.json still catches it."""
    headers = await api.headers()
    backup = await _backup(api, headers)
    path = api.app.backups / backup["filePath"].rsplit("/", 1)[-1]
    with tarfile.open(path, "r:gz") as source:
        members = [(m, source.extractfile(m).read() if m.isfile() else None) for m in source]  # type: ignore[union-attr]
    changed = next(
        m.name
        for m, data in members
        if m.name.startswith("uploads/") and data  # a byte to flip
    )
    forged = io.BytesIO()
    with tarfile.open(fileobj=forged, mode="w:gz") as target:
        for member, data in members:
            if member.name == changed:
                assert data is not None
                data = bytes([data[0] ^ 0x01]) + data[1:]  # same size, other content
            target.addfile(member, io.BytesIO(data) if data is not None else None)
    path.write_bytes(forged.getvalue())
    digest = hashlib.sha256(forged.getvalue()).hexdigest()
    api.app.sql(
        f"UPDATE nexus_backup.system_backup SET checksum = '{digest}', "
        f"file_size = {len(forged.getvalue())} WHERE id = '{backup['id']}'"
    )

    result = await _drill(api, headers, backup["id"])

    assert result["ok"] is False, result
    record = await _record(api, headers, backup["id"])
    assert record["verifyOutcome"] == "failed"
    assert changed in record["verifyError"]
    assert "does not match its manifest" in record["verifyError"]
    assert "the manifest says" in record["verifyError"]
    assert _scratch_databases(api.app) == ""
