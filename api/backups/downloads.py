"""Downloads: a short-lived link to a backup's archive, and the archive such a link opens.

Each checks the archive's path where it is used, signs or verifies, and audits; catalog reads
and the audit row are short transactions of their own, none open while the cloud is asked.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import BinaryIO

from api import paths
from api.audit import service as audit
from api.auth import service as auth
from api.backups import service
from api.backups.schemas import DownloadLink
from api.db import transaction
from api.errors import Conflict, Forbidden, NotFound, UnsafePath
from api.services import Services
from api.states import AuditOutcome, BackupStatus
from api.storage import service as storage
from api.storage.base import CHUNK_SIZE

# The actor a signed link's download is audited as: whoever holds the link.
LINK_HOLDER = "download-link"

# (backup id, expires, signature) -> the URL of this server's backup_file route.
FileUrl = Callable[[str, int, str], str]


def _file_message(backup_id: str, expires: int) -> str:
    return f"download:{backup_id}:{expires}"


async def link(
    services: Services, caller: audit.Caller, backup_id: str, file_url: FileUrl
) -> DownloadLink:
    """A signed link to this server while the local archive exists, else a presigned GET of
    the cloud copy (the bucket stays private); audited."""
    async with transaction(services.sessions) as session:
        backup = await service.get_visible(session, backup_id)
    action = "backup.download_link"
    archive = await paths.archive_path(
        services, backup, action=action, actor=caller.actor, client_address=caller.address
    )
    local = archive is not None and archive.is_file()
    if backup.status != BackupStatus.completed or not (local or backup.is_cloud_synced):
        raise Conflict(f"backup {backup.name!r} has no archive to download ({backup.status})")
    seconds = services.settings.download_link_seconds
    expires = int(time.time()) + seconds
    if local:
        async with transaction(services.sessions) as session:
            key = await auth.signing_key(session)
        url = file_url(backup.id, expires, auth.sign(key, _file_message(backup.id, expires)))
    else:
        cloud_key = await paths.archive_key(
            services, backup, action=action, actor=caller.actor, client_address=caller.address
        )
        if cloud_key is None:
            raise Conflict(f"backup {backup.name!r} has no downloadable copy")
        presigned = await storage.require(services.storage).presign_get(
            cloud_key, seconds, PurePosixPath(cloud_key).name
        )
        if presigned is None:
            raise Conflict(f"backup {backup.name!r} has no downloadable copy")
        url = presigned
    await audit.record_apart(
        services.sessions,
        caller,
        action=action,
        target=backup.name,
        outcome=AuditOutcome.completed,
        detail={"id": backup.id, "expires": expires},
    )
    return DownloadLink(url=url, expires_at=datetime.fromtimestamp(expires, UTC))


@dataclass(frozen=True)
class Download:
    """An opened archive (checked inside BACKUP_DIR), ready to stream."""

    handle: BinaryIO
    name: str
    size: int

    @property
    def media_type(self) -> str:
        return "application/zstd" if self.name.endswith(".zst") else "application/gzip"

    async def chunks(self) -> AsyncIterator[bytes]:
        """The archive's bytes, then the file closed."""
        try:
            while block := await asyncio.to_thread(self.handle.read, CHUNK_SIZE):
                yield block
        finally:
            self.handle.close()


async def open_archive(
    services: Services,
    client_address: str | None,
    backup_id: str,
    *,
    expires: int,
    signature: str,
) -> Download:
    """The archive a signed link points to; Forbidden once expired or altered; audited."""
    caller = audit.Caller(LINK_HOLDER, client_address)
    async with transaction(services.sessions) as session:
        key = await auth.signing_key(session)
        if not auth.signature_ok(key, _file_message(backup_id, expires), signature):
            raise Forbidden("this download link is invalid: ask for a new one")
        if expires < time.time():
            raise Forbidden("this download link has expired: ask for a new one")
        backup = await service.get_visible(session, backup_id)
    action = "backup.download"
    archive = await paths.archive_path(
        services, backup, action=action, actor=caller.actor, client_address=caller.address
    )
    try:
        if backup.status != BackupStatus.completed or archive is None:
            raise FileNotFoundError
        fd = paths.open_file(archive, services.settings.backup_dir)
    except FileNotFoundError:
        raise NotFound(f"backup {backup.name!r} has no archive any more") from None
    except UnsafePath as error:
        await paths.record_refusal(
            services,
            error,
            actor=caller.actor,
            action=action,
            target=backup.name,
            detail={"id": backup.id},
            client_address=caller.address,
        )
        raise
    handle = os.fdopen(fd, "rb")
    try:
        await audit.record_apart(
            services.sessions,
            caller,
            action=action,
            target=backup.name,
            outcome=AuditOutcome.completed,
            detail={"id": backup.id},
        )
    except BaseException:
        handle.close()
        raise
    return Download(handle=handle, name=archive.name, size=os.fstat(handle.fileno()).st_size)
