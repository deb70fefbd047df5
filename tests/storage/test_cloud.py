"""Cloud storage end to end against moto's S3 server over real HTTP on 127.0.0.1: verified sync,
outages that never fail a backup, presigned downloads, delete, restore from the cloud, and a new
server that has only the bucket."""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import httpx

from api.scheduler import sync_due
from tests.conftest import Api, App, database_state, tree_state
from tests.s3server import Answer, S3Server


async def test_sync_to_cloud_uploads_archive_and_sidecar_and_confirms_them(
    capi: Api, s3: S3Server, bucket: str
) -> None:
    headers = await capi.headers()
    response = await capi.client.post(
        "/backups?wait=true", headers=headers, json={"name": "off-site", "syncToCloud": True}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["isCloudSynced"] is True
    assert body["syncStatus"] == "synced"
    assert body["cloudPath"] == "off-site.tar.gz"
    assert body["cloudProvider"] == "minio"  # a custom endpoint that is neither AWS nor R2
    assert sorted(await s3.raw_keys(bucket)) == ["off-site.tar.gz", "off-site.tar.gz.sha256"]
    async with s3.client() as client:
        obj = await client.get_object(Bucket=bucket, Key="off-site.tar.gz")
        data = await obj["Body"].read()
    assert data == Path(body["filePath"]).read_bytes()
    downloads = [
        r for r in s3.requests if r.method == "GET" and r.path == f"/{bucket}/off-site.tar.gz"
    ]
    assert downloads == [], "the sync was confirmed by the bucket's checksum, not a download"
    parts = s3.part_sizes()
    if len(parts) > 1:
        sizes = list(parts.values())
        assert len(set(sizes[:-1])) == 1, f"unequal multipart parts: {sizes}"


async def test_a_cloud_outage_never_fails_the_backup_and_the_sync_is_retried(
    capi: Api, s3: S3Server, bucket: str
) -> None:
    headers = await capi.headers()
    s3.fail("PUT", "", times=1000)
    response = await capi.client.post(
        "/backups?wait=true", headers=headers, json={"name": "stormy", "syncToCloud": True}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["isCloudSynced"] is False
    assert body["syncStatus"] == "pending"
    assert body["syncError"]
    assert body["syncAttempts"] == 1
    retry_at = datetime.fromisoformat(body["nextSyncAt"])
    assert retry_at > datetime.fromisoformat(body["completedAt"])
    assert Path(body["filePath"]).is_file()
    assert await s3.raw_keys(bucket) == []
    assert await s3.pending_uploads(bucket) == []
    status = (await capi.client.get("/storage", headers=headers)).json()
    assert status["pendingSyncs"] == 1
    assert status["lastSyncError"]

    s3.reset()
    assert await sync_due(capi.operations, retry_at - timedelta(seconds=1)) == []  # not yet
    synced = await sync_due(capi.operations, retry_at)
    assert synced == [body["id"]]
    after = (await capi.client.get(f"/backups/{body['id']}", headers=headers)).json()
    assert after["isCloudSynced"] is True
    assert after["syncError"] is None


async def test_sync_endpoint_uploads_an_existing_backup(
    capi: Api, s3: S3Server, bucket: str
) -> None:
    headers = await capi.headers()
    body = (
        await capi.client.post("/backups?wait=true", headers=headers, json={"name": "later"})
    ).json()
    assert body["isCloudSynced"] is False
    assert body["syncStatus"] == "none"
    synced = await capi.client.post(f"/backups/{body['id']}/sync", headers=headers)
    assert synced.status_code == 200, synced.text
    assert synced.json()["isCloudSynced"] is True
    assert "later.tar.gz" in await s3.raw_keys(bucket)


async def test_presigned_download_when_the_local_archive_is_gone(capi: Api) -> None:
    headers = await capi.headers()
    body = (
        await capi.client.post(
            "/backups?wait=true", headers=headers, json={"name": "remote-only", "syncToCloud": True}
        )
    ).json()
    original = Path(body["filePath"]).read_bytes()
    Path(body["filePath"]).unlink()
    link = (await capi.client.get(f"/backups/{body['id']}/download", headers=headers)).json()
    assert "X-Amz-Signature" in link["url"]
    async with httpx.AsyncClient() as plain:
        fetched = await plain.get(link["url"])
    assert fetched.status_code == 200
    assert fetched.content == original


async def test_delete_removes_the_cloud_copy_too(capi: Api, s3: S3Server, bucket: str) -> None:
    headers = await capi.headers()
    body = (
        await capi.client.post(
            "/backups?wait=true", headers=headers, json={"name": "doomed", "syncToCloud": True}
        )
    ).json()
    s3.fail("DELETE", "", times=1000)
    refused = await capi.client.delete(f"/backups/{body['id']}", headers=headers)
    assert refused.status_code == 503
    assert Path(body["filePath"]).is_file(), "nothing may be deleted when the cloud refuses"
    s3.reset()
    assert (await capi.client.delete(f"/backups/{body['id']}", headers=headers)).status_code == 200
    assert await s3.raw_keys(bucket) == []
    assert not Path(body["filePath"]).exists()


async def test_no_catalog_transaction_stays_open_while_the_cloud_copy_is_deleted(
    capi: Api, s3: S3Server, bucket: str
) -> None:
    """The deletion commits its mark before any network call: a slow bucket never holds a
    catalog transaction (and its row locks) open."""
    headers = await capi.headers()
    body = (
        await capi.client.post(
            "/backups?wait=true", headers=headers, json={"name": "slow-bucket", "syncToCloud": True}
        )
    ).json()
    s3.fail("DELETE", "", times=1, mode="hang")
    deleting = asyncio.create_task(capi.client.delete(f"/backups/{body['id']}", headers=headers))
    assert await asyncio.to_thread(s3.wait_until_held), "the DELETE never reached the bucket"
    open_transactions = capi.app.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
    )
    s3.reset()  # the held request is dropped; the client's retry goes through
    response = await deleting
    assert open_transactions.strip() == "0", "a catalog transaction was open during the delete"
    assert response.status_code == 200, response.text
    assert await s3.raw_keys(bucket) == []
    assert not Path(body["filePath"]).exists()


async def test_restore_fetches_and_verifies_the_cloud_copy_when_local_is_gone(capi: Api) -> None:
    headers = await capi.headers()
    before = tree_state(capi.app.uploads), database_state(capi.app)
    body = (
        await capi.client.post(
            "/backups?wait=true", headers=headers, json={"name": "from-cloud", "syncToCloud": True}
        )
    ).json()
    Path(body["filePath"]).unlink()
    Path(body["filePath"] + ".sha256").unlink()
    capi.app.sql("DELETE FROM invoices")
    (capi.app.uploads / "new.txt").write_text("new")
    started = await capi.client.post(
        f"/backups/{body['id']}/restore", headers=headers, json={"confirm": "from-cloud"}
    )
    assert started.status_code == 202, started.text
    done = await capi.wait_restore(started.json()["id"], headers)
    assert done["status"] == "completed", done
    assert (tree_state(capi.app.uploads), database_state(capi.app)) == before
    assert Path(body["filePath"]).is_file()


async def test_a_refused_cloud_download_fails_the_restore_and_leaves_no_archive(
    capi: Api, s3: S3Server
) -> None:
    headers = await capi.headers()
    before = database_state(capi.app)
    body = (
        await capi.client.post(
            "/backups?wait=true", headers=headers, json={"name": "garbled", "syncToCloud": True}
        )
    ).json()
    Path(body["filePath"]).unlink()
    Path(body["filePath"] + ".sha256").unlink()

    def wrong_range(answer: Answer) -> None:
        answer.set_header("Content-Range", "bytes 1-1/1")

    s3.rewrite("GET", times=10, edit=wrong_range)
    refused = await capi.client.post(
        f"/backups/{body['id']}/restore", headers=headers, json={"confirm": "garbled"}
    )
    assert refused.status_code == 503, refused.text
    assert "cloud copy could not be downloaded" in refused.json()["detail"]
    assert "refused the download" in refused.json()["detail"]
    folder = capi.services.settings.backup_dir
    assert sorted(p.name for p in folder.iterdir()) == [], "no archive, whole or partial, is left"
    assert database_state(capi.app) == before


async def test_storage_status_and_test_never_show_a_secret(
    capi: Api, s3: S3Server, bucket: str
) -> None:
    headers = await capi.headers()
    status = await capi.client.get("/storage", headers=headers)
    assert status.status_code == 200
    body = status.json()
    assert body["configured"] is True
    assert body["bucket"] == bucket
    assert body["endpointHost"] == "127.0.0.1"
    assert s3.secret_key not in status.text
    assert s3.access_key not in status.text
    ok = (await capi.client.post("/storage/test", headers=headers)).json()
    assert ok["ok"] is True, ok
    assert await s3.raw_keys(bucket) == []
    s3.fail("PUT", "", times=1000)
    failed = await capi.client.post("/storage/test", headers=headers)
    assert failed.json()["ok"] is False
    assert s3.secret_key not in failed.text


async def test_without_cloud_settings_sync_requests_say_what_to_configure(api: Api) -> None:
    headers = await api.headers()
    response = await api.client.post("/backups", headers=headers, json={"syncToCloud": True})
    assert response.status_code == 409
    assert response.json()["error"] == "NotConfigured"
    assert "BACKUP_S3_BUCKET" in response.json()["detail"]
    assert (await api.client.get("/storage", headers=headers)).json()["configured"] is False


async def test_a_new_server_with_only_the_bucket_sees_and_restores_every_backup(
    app: App, capi: Api, cluster: object, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    headers = await capi.headers()
    names = []
    for name in ("dr-one", "dr-two"):
        body = (
            await capi.client.post(
                "/backups?wait=true", headers=headers, json={"name": name, "syncToCloud": True}
            )
        ).json()
        assert body["isCloudSynced"] is True
        names.append(name)
    before = tree_state(app.uploads), database_state(app)

    # The new machine: the same application database, but its catalog and backup folder are
    # gone; only the bucket is left.
    app.sql("DROP SCHEMA nexus_backup CASCADE")
    shutil.rmtree(app.backups)
    env = {
        "BACKUP_S3_ENDPOINT": s3.proxy_endpoint,
        "BACKUP_S3_BUCKET": bucket,
        "BACKUP_S3_ACCESS_KEY_ID": s3.access_key,
        "BACKUP_S3_SECRET_ACCESS_KEY": s3.secret_key,
        "BACKUP_S3_REGION": "us-east-1",
    }
    imported = app.cli("catalog", "import", **env)
    assert "imported dr-one" in imported.stdout
    assert "imported dr-two" in imported.stdout
    assert s3.secret_key not in imported.stdout + imported.stderr
    listed = app.cli("list", "--json", **env).stdout
    assert "dr-one" in listed
    assert "dr-two" in listed
    again = app.cli("catalog", "import", **env)
    assert "0 imported" in again.stderr

    app.sql("DELETE FROM clients")
    app.cli("restore", "dr-two", "--yes", **env)
    assert (tree_state(app.uploads), database_state(app)) == before
