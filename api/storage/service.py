"""Off-site copies, as storage work: which bucket, upload-and-confirm, delete, fetch, a round
trip. No catalog state lives here; api.operations.sync records what a sync did."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from api import paths
from api.archive.writer import partial_path, publish
from api.config import Settings
from api.errors import NotConfigured, UnsafePath
from api.storage.base import Storage, StorageError, Stored

if TYPE_CHECKING:
    from api.backups.models import SystemBackup
    from api.services import Services


def from_settings(settings: Settings) -> Storage | None:
    """The configured bucket, or None when BACKUP_S3_* are not set."""
    if not settings.cloud_configured:
        return None
    assert settings.backup_s3_access_key_id is not None
    assert settings.backup_s3_secret_access_key is not None
    assert settings.backup_s3_bucket is not None
    from api.storage.s3 import S3Storage, detect_provider  # botocore loads only when needed

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


def require(storage: Storage | None) -> Storage:
    if storage is None:
        raise NotConfigured(
            "cloud storage is not configured: set BACKUP_S3_BUCKET, BACKUP_S3_ACCESS_KEY_ID, "
            "BACKUP_S3_SECRET_ACCESS_KEY (and BACKUP_S3_ENDPOINT for R2 or MinIO)"
        )
    return storage


def endpoint_host(settings: Settings) -> str | None:
    if settings.backup_s3_endpoint:
        return urlsplit(settings.backup_s3_endpoint).hostname
    return "s3.amazonaws.com" if settings.cloud_configured else None


def archive_key(path: Path) -> str:
    """The key an archive is stored under (checked to stay inside the bucket prefix)."""
    return paths.cloud_key(path.name)


@dataclass(frozen=True)
class Uploaded:
    key: str
    confirmed_by: str  # CONFIRMED_BY_CHECKSUM or CONFIRMED_BY_DOWNLOAD (api.storage.base)


async def upload(
    storage: Storage, path: Path, root: Path, size: int | None, checksum: str | None
) -> Uploaded:
    """Upload an archive of `root` and its sidecar, then confirm the remote copy; returns its
    key and how it was confirmed. Raises StorageError (or UnsafePath for a path outside `root`,
    checked before anything is read).

    Each byte is read once: the upload hashes what it sends, which must match the catalog's
    `checksum`; the store then confirms it holds those bytes from its own SHA-256 checksum of
    the parts it verified on receipt, or, when it keeps none, by reading the object back."""
    key = archive_key(path)
    sidecar = path.with_name(path.name + ".sha256")
    sent: list[Stored] = []
    for name, source in ((key, path), (key + ".sha256", sidecar)):
        try:
            fd = paths.open_file(source, root)
        except FileNotFoundError:
            raise StorageError(f"the local file {source} is missing: nothing to upload") from None
        with os.fdopen(fd, "rb") as handle:
            sent.append(await storage.put(name, handle, os.fstat(handle.fileno()).st_size))
    stored = sent[0]
    if stored.size != size:
        raise StorageError(f"the uploaded object {key} has {stored.size} bytes, not {size}")
    if stored.sha256 != checksum:
        raise StorageError(
            f"the uploaded object {key} has SHA-256 {stored.sha256}, not {checksum}: the local "
            "archive no longer matches its catalog checksum"
        )
    return Uploaded(key, await storage.confirm(key, stored))


async def delete_copy(storage: Storage, key: str) -> None:
    """Remove an archive's remote copy and its sidecar (missing objects are fine)."""
    await storage.delete(key)
    await storage.delete(key + ".sha256")


async def fetch(
    services: Services, backup: SystemBackup, target: Path, *, actor: str = "system"
) -> None:
    """Download a backup's cloud copy to `target` (hidden temporary name, then published).
    The key must stay inside the bucket prefix and `target` inside BACKUP_DIR (UnsafePath)."""
    storage = require(services.storage)
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


async def round_trip(storage: Storage) -> dict[str, object]:
    """A real round trip of a small object: put, stat, get, checksum, delete."""
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
