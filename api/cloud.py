"""Off-site copies: upload a completed archive and its sidecar, confirm the remote copy's size
and SHA-256, and only then mark the backup `isCloudSynced`. A cloud outage never fails or
loses the local backup: the sync stays pending, with its reason, and is retried with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select, update

from api import paths
from api.archive.writer import partial_path, publish
from api.audit import service as audit
from api.backups import service as backups
from api.backups.models import SystemBackup
from api.config import Settings
from api.db import transaction
from api.errors import Conflict, NotConfigured, UnsafePath
from api.services import Services
from api.storage.base import Storage, StorageError
from api.storage.s3 import S3Storage, detect_provider

log = logging.getLogger("nexus_backup.cloud")
MAX_BACKOFF = timedelta(hours=1)


def storage_from_settings(settings: Settings) -> Storage | None:
    """The configured bucket, or None when BACKUP_S3_* are not set."""
    if not settings.cloud_configured:
        return None
    assert settings.backup_s3_access_key_id is not None
    assert settings.backup_s3_secret_access_key is not None
    assert settings.backup_s3_bucket is not None
    return S3Storage(
        endpoint=settings.backup_s3_endpoint,
        bucket=settings.backup_s3_bucket,
        access_key_id=settings.backup_s3_access_key_id.get_secret_value(),
        secret_access_key=settings.backup_s3_secret_access_key.get_secret_value(),
        region=settings.backup_s3_region,
        provider=detect_provider(settings.backup_s3_endpoint),
        part_size=settings.backup_s3_part_size_mb * 1024 * 1024,
        prefix=settings.backup_s3_prefix,
    )


def require_storage(services: Services) -> Storage:
    if services.storage is None:
        raise NotConfigured(
            "cloud storage is not configured: set BACKUP_S3_BUCKET, BACKUP_S3_ACCESS_KEY_ID, "
            "BACKUP_S3_SECRET_ACCESS_KEY (and BACKUP_S3_ENDPOINT for R2 or MinIO)"
        )
    return services.storage


def endpoint_host(settings: Settings) -> str | None:
    if settings.backup_s3_endpoint:
        return urlsplit(settings.backup_s3_endpoint).hostname
    return "s3.amazonaws.com" if settings.cloud_configured else None


def backoff(attempts: int) -> timedelta:
    return min(MAX_BACKOFF, timedelta(minutes=2 ** max(0, attempts - 1)))


def archive_key(path: Path) -> str:
    return path.name


async def sync(services: Services, backup_id: str, actor: str = "system") -> SystemBackup:
    """Upload and confirm one backup's archive and sidecar. Never raises for a cloud failure:
    the record says `pending` with the reason and when it is retried."""
    storage = require_storage(services)
    root = services.settings.backup_dir
    async with transaction(services.sessions) as session:
        backup = await backups.get_visible(session, backup_id)
        if backup.status != "completed" or not backup.file_path:
            raise Conflict(
                f"backup {backup.name!r} is {backup.status}: only completed backups sync"
            )
        if backup.sync_status == "syncing":
            raise Conflict(f"backup {backup.name!r} is being synced already")
        # Checked before anything changes: a forged file_path must not upload a host file.
        path = await paths.archive_path(services, backup, action="backup.sync", actor=actor)
        assert path is not None
        backup.sync_status, backup.sync_requested = "syncing", True
        name, size, checksum = backup.name, backup.file_size, backup.checksum
    try:
        key = paths.cloud_key(archive_key(path))
        sidecar = path.with_name(path.name + ".sha256")
        for name_, source in ((key, path), (key + ".sha256", sidecar)):
            try:
                fd = paths.open_file(source, root)
            except FileNotFoundError:
                missing = f"the local file {source} is missing: nothing to upload"
                raise StorageError(missing) from None
            with os.fdopen(fd, "rb") as handle:
                await storage.put(name_, handle, os.fstat(handle.fileno()).st_size)
        info = await storage.stat(key)
        if info is None or info.size != size:
            raise StorageError(
                f"the uploaded object {key} has {info.size if info else 'no'} bytes, not {size}"
            )
        remote = await storage.sha256(key)
        if remote != checksum:
            raise StorageError(f"the uploaded object {key} has SHA-256 {remote}, not {checksum}")
    except (StorageError, OSError, UnsafePath) as error:
        reason = error.detail if isinstance(error, UnsafePath) else str(error)
        if isinstance(error, UnsafePath):
            await paths.record_refusal(
                services,
                error,
                actor=actor,
                action="backup.sync",
                target=name,
                detail={"id": backup_id},
            )
        async with transaction(services.sessions) as session:
            backup = await backups.get_visible(session, backup_id)
            backup.sync_attempts += 1
            backup.sync_status, backup.sync_error = "pending", reason
            backup.next_sync_at = datetime.now(UTC) + backoff(backup.sync_attempts)
            await audit.record(
                session,
                actor,
                "backup.sync",
                name,
                "failed",
                {"id": backup_id, "error": reason, "retryAt": backup.next_sync_at.isoformat()},
            )
        log.warning(
            "cloud sync of %s failed (attempt %d), retry at %s: %s",
            name,
            backup.sync_attempts,
            backup.next_sync_at,
            reason,
        )
        return backup
    except BaseException:
        async with transaction(services.sessions) as session:
            backup = await backups.get_visible(session, backup_id)
            backup.sync_status, backup.next_sync_at = "pending", datetime.now(UTC)
        raise
    async with transaction(services.sessions) as session:
        backup = await backups.get_visible(session, backup_id)
        backup.sync_status, backup.sync_error, backup.next_sync_at = "synced", None, None
        backup.is_cloud_synced, backup.cloud_path = True, key
        backup.cloud_provider, backup.synced_at = storage.name, datetime.now(UTC)
        await audit.record(
            session,
            actor,
            "backup.sync",
            name,
            "completed",
            {"id": backup_id, "key": key, "provider": storage.name},
        )
    log.info("backup %s synced to %s as %s", name, storage.name, key)
    return backup


async def request_sync(services: Services, backup_id: str) -> None:
    """Mark a backup to be synced; the next scheduler tick (or the caller) does it."""
    async with transaction(services.sessions) as session:
        await session.execute(
            update(SystemBackup)
            .where(SystemBackup.id == backup_id)
            .values(sync_requested=True, sync_status="pending", next_sync_at=datetime.now(UTC))
        )


async def retry_due(services: Services, at: datetime | None = None) -> list[str]:
    """Sync every backup whose sync is pending and due; each is claimed so only one process
    uploads it."""
    if services.storage is None:
        return []
    at = at or datetime.now(UTC)
    async with transaction(services.sessions) as session:
        due = (
            await session.execute(
                select(SystemBackup.id, SystemBackup.next_sync_at).where(
                    SystemBackup.sync_status == "pending",
                    SystemBackup.status == "completed",
                    SystemBackup.deleted_at.is_(None),
                    SystemBackup.next_sync_at <= at,
                )
            )
        ).all()
    synced = []
    for backup_id, when in due:
        async with transaction(services.sessions) as session:
            claimed = await session.execute(
                update(SystemBackup)
                .where(
                    SystemBackup.id == backup_id,
                    SystemBackup.sync_status == "pending",
                    SystemBackup.next_sync_at == when,
                )
                .values(next_sync_at=at + timedelta(minutes=30))
                .returning(SystemBackup.id)
            )
            if claimed.first() is None:
                continue
        try:
            result = await sync(services, backup_id)
        except UnsafePath:
            continue  # refused and audited; the other backups still sync
        if result.sync_status == "synced":
            synced.append(backup_id)
    return synced


async def delete_remote(
    services: Services,
    backup: SystemBackup,
    *,
    actor: str = "system",
    client_address: str | None = None,
) -> None:
    """Remove a backup's cloud copy (archive and sidecar); raises StorageError if it cannot,
    UnsafePath (audited) if the catalog's key could reach outside the bucket prefix."""
    key = await paths.archive_key(
        services, backup, action="backup.delete", actor=actor, client_address=client_address
    )
    if key is None:
        return
    storage = require_storage(services)
    await storage.delete(key)
    await storage.delete(key + ".sha256")


async def fetch(
    services: Services, backup: SystemBackup, target: Path, *, actor: str = "system"
) -> None:
    """Download a backup's cloud copy to `target` (hidden temporary name, then published).
    The key must stay inside the bucket prefix and `target` inside BACKUP_DIR (UnsafePath)."""
    storage = require_storage(services)
    key = await paths.archive_key(services, backup, action="backup.fetch", actor=actor)
    assert key is not None
    root = services.settings.backup_dir
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        target = paths.confined(target, root)
        if target.parent != Path(os.path.realpath(root)):
            raise UnsafePath(f"refused: {target} is not directly in BACKUP_DIR", str(target))
    except UnsafePath as error:
        await paths.record_refusal(
            services,
            error,
            actor=actor,
            action="backup.fetch",
            target=backup.name,
            detail={"id": backup.id},
        )
        raise
    temporary = partial_path(target)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            await storage.get(key, handle)
            handle.flush()
            os.fsync(handle.fileno())
        publish(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    sidecar = target.with_name(target.name + ".sha256")
    if backup.checksum and not os.path.lexists(sidecar):
        fd = os.open(sidecar, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{backup.checksum}  {target.name}\n")


async def check(services: Services) -> dict[str, object]:
    """A real round trip of a small object: put, stat, get, checksum, delete."""
    storage = require_storage(services)
    key = f".nexus-backup-test-{os.urandom(6).hex()}"
    payload = os.urandom(1024)
    started = asyncio.get_running_loop().time()
    with tempfile.TemporaryFile() as source:
        source.write(payload)
        source.seek(0)
        await storage.put(key, source, len(payload))
    try:
        info = await storage.stat(key)
        if info is None or info.size != len(payload):
            raise StorageError("the test object was not found after upload")
        with tempfile.TemporaryFile() as target:
            await storage.get(key, target)
            target.seek(0)
            if target.read() != payload:
                raise StorageError("the test object came back different")
    finally:
        await storage.delete(key)
    return {"ok": True, "latencyMs": round((asyncio.get_running_loop().time() - started) * 1000)}
