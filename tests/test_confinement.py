"""Paths from the catalog, a bucket and journals are untrusted (issue #9, item 3).

Each test plays someone who can write the app database (and so the catalog beside it), the
backup folder or the bucket, and asserts a refusal, an audit row `security.refused` and that
nothing outside was read, sent, changed or deleted.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from api.backups.importer import import_archives
from api.errors import UnsafePath
from api.operations import Operations
from api.operations.recovery import recover
from api.restores import runner as restores
from api.restores import swap
from api.services import Services, open_services
from api.storage import service as storage
from tests.conftest import Api, App, cloud_settings, tree_state
from tests.s3server import S3Server

SECRET = b"root:$6$not-for-the-bucket:19000:0:99999:7:::\n"


def _refusals(app: App) -> list[tuple[str, str, str]]:
    """(target, id or journal, path) of every security.refused audit row."""
    rows = app.sql(
        "SELECT coalesce(target, '') || '|' || coalesce(detail->>'id', detail->>'journal', '') "
        "|| '|' || coalesce(detail->>'path', '') FROM nexus_backup.audit_log "
        "WHERE action = 'security.refused' ORDER BY at"
    ).splitlines()
    return [tuple(row.split("|", 2)) for row in rows]  # type: ignore[misc]


def _outside(app: App) -> Path:
    """A file outside BACKUP_DIR that must never be served, uploaded or deleted."""
    victim = app.root / "outside" / "shadow"
    victim.parent.mkdir(exist_ok=True)
    victim.write_bytes(SECRET)
    return victim


async def _backup(api: Api, headers: dict[str, str], name: str) -> dict[str, object]:
    response = await api.client.post("/backups?wait=true", headers=headers, json={"name": name})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _forge(app: App, backup_id: str, **columns: str) -> None:
    """What one SQL injection in the app can do to the catalog in the same database."""
    sets = ", ".join(f"{column} = '{value}'" for column, value in columns.items())
    app.sql(f"UPDATE nexus_backup.system_backup SET {sets} WHERE id = '{backup_id}'")


# ---------------------------------------------------------------------------------------------
# A. catalog file paths


async def test_download_of_a_forged_path_outside_backup_dir_is_refused_and_audited(
    api: Api,
) -> None:
    headers = await api.headers()
    body = await _backup(api, headers, "forged-dl")
    link = (await api.client.get(f"/backups/{body['id']}/download", headers=headers)).json()
    victim = _outside(api.app)
    _forge(api.app, str(body["id"]), file_path=str(victim))

    refused = await api.client.get(f"/backups/{body['id']}/download", headers=headers)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "UnsafePath"
    assert "outside" in refused.json()["detail"]
    url = urlsplit(link["url"])  # signed before the row was changed: still validly signed
    served = await api.client.get(f"{url.path}?{url.query}")
    assert served.status_code == 403, "the signed file route served a file outside BACKUP_DIR"
    assert SECRET not in served.content
    refusals = _refusals(api.app)
    assert ("forged-dl", body["id"], str(victim)) in refusals, refusals
    assert len(refusals) == 2, "both the link and the file route must audit their refusal"


async def test_a_link_in_backup_dir_to_a_file_outside_is_refused(api: Api) -> None:
    headers = await api.headers()
    body = await _backup(api, headers, "linked")
    archive = Path(str(body["filePath"]))
    archive.unlink()
    archive.symlink_to(_outside(api.app))  # the catalog row is untouched: the folder was written

    refused = await api.client.get(f"/backups/{body['id']}/download", headers=headers)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "UnsafePath"
    verified = await api.client.post(f"/backups/{body['id']}/verify", headers=headers)
    assert verified.status_code == 403, verified.text
    assert [r[1] for r in _refusals(api.app)] == [body["id"]] * 2


async def test_restore_of_a_forged_path_is_refused_before_anything_starts(api: Api) -> None:
    headers = await api.headers()
    body = await _backup(api, headers, "forged-restore")
    victim = _outside(api.app)
    _forge(api.app, str(body["id"]), file_path=str(victim))

    refused = await api.client.post(
        f"/backups/{body['id']}/restore", headers=headers, json={"confirm": "forged-restore"}
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "UnsafePath"
    assert api.app.sql("SELECT count(*) FROM nexus_backup.system_restore").strip() == "0"
    assert ("forged-restore", body["id"], str(victim)) in _refusals(api.app)


async def test_an_id_that_names_a_file_is_never_restored_as_a_path(api: Api) -> None:
    headers = await api.headers()
    body = await _backup(api, headers, "id-as-path")
    # Both the id and the path changed: the id now names an existing host file (which is
    # only resolved here, never read).
    api.app.sql(
        "UPDATE nexus_backup.system_backup SET id = '/etc/passwd', file_path = '/etc/passwd' "
        f"WHERE id = '{body['id']}'"
    )
    with pytest.raises(UnsafePath, match="outside"):
        await restores.resolve(api.services, "/etc/passwd", actor="test")
    assert ("id-as-path", "/etc/passwd", "/etc/passwd") in _refusals(api.app)


async def test_verify_of_a_forged_path_is_refused(api: Api) -> None:
    headers = await api.headers()
    body = await _backup(api, headers, "forged-verify")
    victim = _outside(api.app)
    _forge(api.app, str(body["id"]), file_path=str(victim))

    refused = await api.client.post(f"/backups/{body['id']}/verify", headers=headers)
    assert refused.status_code == 403, refused.text
    assert ("forged-verify", body["id"], str(victim)) in _refusals(api.app)


async def test_delete_of_a_forged_path_is_refused_and_the_outside_file_survives(
    api: Api,
) -> None:
    headers = await api.headers()
    body = await _backup(api, headers, "forged-delete")
    victim = _outside(api.app)
    _forge(api.app, str(body["id"]), file_path=str(victim))

    refused = await api.client.delete(f"/backups/{body['id']}", headers=headers)
    assert refused.status_code == 403, refused.text
    assert victim.read_bytes() == SECRET, "a forged file_path deleted a file outside BACKUP_DIR"
    assert (
        api.app.sql(
            f"SELECT deleted_at IS NULL FROM nexus_backup.system_backup WHERE id = '{body['id']}'"
        ).strip()
        == "t"
    ), "the record was marked deleted although nothing was"
    assert ("forged-delete", body["id"], str(victim)) in _refusals(api.app)


async def test_retention_skips_a_forged_path_and_keeps_the_outside_file(api: Api) -> None:
    from datetime import UTC, datetime

    from api.audit.service import Caller
    from api.operations import RetentionOp

    headers = await api.headers()
    schedule = await api.client.post(
        "/schedules",
        headers=headers,
        json={"name": "nightly", "cronExpression": "0 3 * * *", "retentionDays": 1},
    )
    assert schedule.status_code in (200, 201), schedule.text
    schedule_id = schedule.json()["id"]
    body = await _backup(api, headers, "old-scheduled")
    newest = await _backup(api, headers, "new-scheduled")  # retention always keeps the newest
    victim = _outside(api.app)
    old, new = "2030-01-01T02:00:00+00:00", "2030-01-20T02:00:00+00:00"
    _forge(
        api.app,
        str(body["id"]),
        file_path=str(victim),
        schedule_id=schedule_id,
        type="scheduled",
        completed_at=old,
    )
    _forge(api.app, str(newest["id"]), schedule_id=schedule_id, type="scheduled", completed_at=new)
    later = datetime(2030, 1, 31, tzinfo=UTC)  # the old one is past 1 day of retention
    deleted = await api.operations.run(
        RetentionOp(schedule_id, 1, later), Caller("schedule:nightly")
    )
    assert deleted == []
    assert victim.read_bytes() == SECRET
    assert ("old-scheduled", body["id"], str(victim)) in _refusals(api.app)


async def test_recovery_never_deletes_outside_backup_dir_for_a_forged_backup_name(
    app: App, services: Services
) -> None:
    app.backups.mkdir(parents=True, exist_ok=True)
    victim = app.root / "victim.tar.gz"  # BACKUP_DIR/../victim.tar.gz
    victim.write_bytes(SECRET)
    backup_id = str(uuid.uuid4())
    app.sql(
        "INSERT INTO nexus_backup.system_backup (id, name, type, status, compression, "
        "is_cloud_synced, progress_bytes, created_at) VALUES "
        f"('{backup_id}', '../victim', 'manual', 'pending', 'gzip', false, 0, now())"
    )

    notes = await recover(Operations(services))

    assert victim.read_bytes() == SECRET, "recovery deleted a file outside BACKUP_DIR"
    assert any("refused" in note for note in notes), notes
    assert ("../victim", backup_id, "../victim") in _refusals(app)
    status = app.sql(f"SELECT status FROM nexus_backup.system_backup WHERE id = '{backup_id}'")
    assert status.strip() == "failed", "the stale record must still be marked failed"


# ---------------------------------------------------------------------------------------------
# B. cloud keys and cloud copies


async def test_sync_of_a_forged_path_uploads_nothing(capi: Api, s3: S3Server, bucket: str) -> None:
    headers = await capi.headers()
    body = await _backup(capi, headers, "forged-sync")
    victim = _outside(capi.app)
    _forge(capi.app, str(body["id"]), file_path=str(victim))

    refused = await capi.client.post(f"/backups/{body['id']}/sync", headers=headers)
    assert refused.status_code == 403, refused.text
    assert await s3.raw_keys(bucket) == [], "a host file was uploaded to the bucket"
    assert ("forged-sync", body["id"], str(victim)) in _refusals(capi.app)
    row = capi.app.sql(
        f"SELECT sync_status FROM nexus_backup.system_backup WHERE id = '{body['id']}'"
    )
    assert row.strip() == "none", "a refused sync must change nothing"


async def test_a_forged_cloud_key_is_neither_fetched_nor_deleted(
    capi: Api, s3: S3Server, bucket: str
) -> None:
    headers = await capi.headers()
    body = await _backup(capi, headers, "forged-key")
    synced = await capi.client.post(f"/backups/{body['id']}/sync", headers=headers)
    assert synced.status_code == 200, synced.text
    Path(str(body["filePath"])).unlink()
    _forge(capi.app, str(body["id"]), cloud_path="../other-tenant/x.tar.gz", file_path="")
    capi.app.sql(
        f"UPDATE nexus_backup.system_backup SET file_path = NULL WHERE id = '{body['id']}'"
    )
    before = await s3.raw_keys(bucket)

    link = await capi.client.get(f"/backups/{body['id']}/download", headers=headers)
    assert link.status_code == 403, link.text
    deleted = await capi.client.delete(f"/backups/{body['id']}", headers=headers)
    assert deleted.status_code == 403, deleted.text
    restore = await capi.client.post(
        f"/backups/{body['id']}/restore", headers=headers, json={"confirm": "forged-key"}
    )
    assert restore.status_code == 403, restore.text
    assert await s3.raw_keys(bucket) == before
    assert [r[2] for r in _refusals(capi.app)] == ["../other-tenant/x.tar.gz"] * 3


async def test_catalog_import_refuses_bucket_keys_that_climb_out(
    app: App, s3: S3Server, bucket: str
) -> None:
    # A key that a bucket writer planted; S3 takes `..` literally, a file name must not.
    async with s3.client() as client:
        for key in ("../../etc/evil.tar.gz", "a/../../../evil.tar.gz", "..\\evil.tar.gz"):
            await client.put_object(Bucket=bucket, Key=f"tenant/{key}", Body=b"not an archive")
    settings = app.settings(backup_s3_prefix="tenant", **cloud_settings(s3, bucket))
    services = await open_services(settings)
    try:
        report = await import_archives(services)
    finally:
        await services.close()
    assert report.imported == []
    assert len(report.problems) == 3, report.problems
    assert all("refused" in problem for problem in report.problems)
    assert not (app.root / "etc").exists()
    assert not list(app.root.parent.glob("**/evil.tar.gz*"))
    assert len(_refusals(app)) == 3


async def test_catalog_import_refuses_a_link_to_an_archive_outside(app: App) -> None:
    app.backups.mkdir(parents=True, exist_ok=True)
    (app.backups / "planted.tar.gz").symlink_to(_outside(app))
    services = await open_services(app.settings())
    try:
        report = await import_archives(services)
    finally:
        await services.close()
    assert report.imported == []
    assert [r[0] for r in _refusals(app)] == ["planted.tar.gz"]


# ---------------------------------------------------------------------------------------------
# C. journals


def _restore_row(app: App, restore_id: str, status: str = "in_progress") -> None:
    app.sql(
        "INSERT INTO nexus_backup.system_restore (id, archive_path, status, phase, dry_run, "
        f"forced, requested_by, started_at, created_at) VALUES ('{restore_id}', '/x.tar.gz', "
        f"'{status}', 'restoring', false, false, 'cli', now(), now())"
    )


def _journal_data(app: App, restore_id: str, **changes: object) -> dict[str, object]:
    """A journal that, acted on, would swap the live uploads into staging and delete them."""
    uploads = app.uploads.absolute()
    data: dict[str, object] = {
        "restore_id": restore_id,
        "uploads_dir": str(uploads),
        "staged": str(swap.staged_uploads(uploads, restore_id)),
        "staged_inode": os.stat(uploads).st_ino,  # "the live tree is the swapped-in one"
        "uploads_existed": True,
    }
    data.update(changes)
    return data


def _write_journal(path: Path, data: dict[str, object], mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    os.chmod(path, mode)


def _staging_folder(app: App, restore_id: str) -> Path:
    """The staging folder the runner would have made, with the old tree parked in it."""
    staged = swap.staged_uploads(app.uploads.absolute(), restore_id)
    staged.mkdir(parents=True)
    (staged / "old.txt").write_text("old tree\n")
    return staged


async def _recover_refusing(app: App, services: Services, journal: Path) -> None:
    before = tree_state(app.uploads)
    notes = await recover(Operations(services))
    assert tree_state(app.uploads) == before, "a forged journal changed the live uploads"
    assert not os.path.lexists(journal), "the forged journal was kept"
    aside = journal.with_name(journal.name + ".refused")
    assert os.path.lexists(aside), "the refused journal should be moved aside for the operator"
    assert any("refused journal" in note for note in notes), notes
    assert any(r[1] == str(journal) for r in _refusals(app)), _refusals(app)


async def test_a_journal_of_another_user_is_not_acted_on(app: App, services: Services) -> None:
    restore_id = uuid.uuid4().hex
    _restore_row(app, restore_id)
    _staging_folder(app, restore_id)
    journal = swap.journal_path(app.backups, restore_id)
    _write_journal(journal, _journal_data(app, restore_id))
    os.chown(journal, 65534, 65534)
    await _recover_refusing(app, services, journal)


async def test_a_journal_readable_by_others_is_not_acted_on(app: App, services: Services) -> None:
    restore_id = uuid.uuid4().hex
    _restore_row(app, restore_id)
    staged = _staging_folder(app, restore_id)
    journal = swap.journal_path(app.backups, restore_id)
    _write_journal(journal, _journal_data(app, restore_id), mode=0o644)
    await _recover_refusing(app, services, journal)
    # An older version wrote journals with the umask's mode: its parked tree may be the only
    # copy of the uploads, so the staging folder a refused journal names is kept.
    assert (staged / "old.txt").exists(), "the staging folder of a refused journal was removed"


async def test_a_journal_that_is_a_link_is_not_followed(app: App, services: Services) -> None:
    restore_id = uuid.uuid4().hex
    _restore_row(app, restore_id)
    _staging_folder(app, restore_id)
    real = app.root / "elsewhere" / "journal"
    _write_journal(real, _journal_data(app, restore_id))
    app.backups.mkdir(parents=True, exist_ok=True)
    journal = swap.journal_path(app.backups, restore_id)
    journal.symlink_to(real)
    await _recover_refusing(app, services, journal)
    assert real.exists(), "the link's target must not be touched"


async def test_a_journal_of_an_unknown_restore_is_not_acted_on(
    app: App, services: Services
) -> None:
    restore_id = uuid.uuid4().hex  # no catalog row
    _staging_folder(app, restore_id)
    journal = swap.journal_path(app.backups, restore_id)
    _write_journal(journal, _journal_data(app, restore_id))
    await _recover_refusing(app, services, journal)


async def test_a_journal_of_a_finished_restore_is_not_acted_on(
    app: App, services: Services
) -> None:
    restore_id = uuid.uuid4().hex
    _restore_row(app, restore_id, status="failed")
    _staging_folder(app, restore_id)
    journal = swap.journal_path(app.backups, restore_id)
    _write_journal(journal, _journal_data(app, restore_id))
    await _recover_refusing(app, services, journal)


async def test_a_journal_whose_id_does_not_match_its_file_is_not_acted_on(
    app: App, services: Services
) -> None:
    restore_id, other = uuid.uuid4().hex, uuid.uuid4().hex
    _restore_row(app, restore_id)
    _restore_row(app, other)
    _staging_folder(app, restore_id)
    journal = swap.journal_path(app.backups, other)
    _write_journal(journal, _journal_data(app, restore_id))
    await _recover_refusing(app, services, journal)


async def test_a_journal_naming_a_victim_folder_leaves_it_alone(
    app: App, services: Services
) -> None:
    restore_id = uuid.uuid4().hex
    _restore_row(app, restore_id)
    victim = app.root / "important"
    (victim / "uploads").mkdir(parents=True)
    (victim / "uploads" / "keep.txt").write_text("precious\n")
    journal = swap.journal_path(app.backups, restore_id)
    _write_journal(journal, _journal_data(app, restore_id, staged=str(victim / "uploads")))
    await _recover_refusing(app, services, journal)
    assert (victim / "uploads" / "keep.txt").read_text() == "precious\n"


async def test_a_staging_folder_that_is_a_link_is_never_followed(
    app: App, services: Services
) -> None:
    restore_id = uuid.uuid4().hex
    _restore_row(app, restore_id)
    victim = app.root / "important"
    (victim / "uploads").mkdir(parents=True)
    (victim / "uploads" / "keep.txt").write_text("precious\n")
    swap.staging_root(app.uploads.absolute(), restore_id).symlink_to(victim)
    journal = swap.journal_path(app.backups, restore_id)
    _write_journal(journal, _journal_data(app, restore_id))
    await _recover_refusing(app, services, journal)
    assert (victim / "uploads" / "keep.txt").read_text() == "precious\n"


async def test_a_leftover_staging_link_is_unlinked_not_emptied(
    app: App, services: Services
) -> None:
    victim = app.root / "important"
    (victim / "uploads").mkdir(parents=True)
    (victim / "uploads" / "keep.txt").write_text("precious\n")
    link = swap.staging_root(app.uploads.absolute(), "leftover")
    link.symlink_to(victim)
    app.backups.mkdir(parents=True, exist_ok=True)

    await recover(Operations(services))

    assert not os.path.lexists(link), "the leftover link should be removed"
    assert (victim / "uploads" / "keep.txt").read_text() == "precious\n"


def test_journals_are_written_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    journal = swap.Journal("r1", "/u", "/s", 1, True)
    previous = os.umask(0o022)
    try:
        journal.write(tmp_path)
    finally:
        os.umask(previous)
    written = swap.journal_path(tmp_path, "r1")
    assert oct(os.stat(written).st_mode & 0o777) == oct(0o600)
    assert swap.load(written) == journal


async def test_a_legitimate_journal_is_still_acted_on(app: App, services: Services) -> None:
    """The checks accept what the runner writes: an interrupted, uncommitted swap is undone."""
    restore_id = uuid.uuid4().hex
    _restore_row(app, restore_id)
    before = tree_state(app.uploads)
    staged = _staging_folder(app, restore_id)
    journal = swap.Journal(
        restore_id, str(app.uploads.absolute()), str(staged), os.stat(staged).st_ino, True
    )
    app.backups.mkdir(parents=True, exist_ok=True)
    swap.swap_in(journal, app.backups)
    assert (app.uploads / "old.txt").exists()

    notes = await recover(Operations(services))

    assert any("undid interrupted restore" in note for note in notes), notes
    assert tree_state(app.uploads) == before
    assert not swap.journal_path(app.backups, restore_id).exists()
    assert not swap.staging_root(app.uploads.absolute(), restore_id).exists()
    assert _refusals(app) == []


async def test_cloud_fetch_never_writes_outside_backup_dir(capi: Api) -> None:
    from api.backups.models import SystemBackup

    backup = SystemBackup(id="fetched", name="fetched", cloud_path="x.tar.gz", checksum=None)
    target = capi.app.root / "elsewhere.tar.gz"
    with pytest.raises(UnsafePath, match="outside"):
        await storage.fetch(capi.services, backup, target)
    assert not target.exists()
    assert ("fetched", "fetched", str(target)) in _refusals(capi.app)
