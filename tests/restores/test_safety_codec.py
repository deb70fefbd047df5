"""A restore's safety backup is written fast (zstd level 1), whatever BACKUP_COMPRESSION says."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import select

from api.archive.streams import SAFETY_CODEC, suffix_for
from api.backups.models import SystemBackup
from api.db import transaction
from api.operations.backup import BackupOp
from api.operations.restore import RestoreOp
from api.restores.runner import RestoreRequest
from api.states import BackupType
from tests.conftest import Api


async def _safety_backups(api: Api) -> list[SystemBackup]:
    async with transaction(api.services.sessions) as session:
        rows = await session.execute(
            select(SystemBackup).where(SystemBackup.type == BackupType.pre_restore)
        )
        return list(rows.scalars())


def _bad_copy(good: Path, folder: Path) -> Path:
    """The archive with one bit flipped in its middle, beside the good one's sidecar."""
    folder.mkdir()
    bad = folder / good.name
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    shutil.copy(good.with_name(good.name + ".sha256"), folder)
    return bad


async def test_the_safety_backup_is_written_with_the_fast_codec(api: Api) -> None:
    good = await api.operations.run(BackupOp(name="good"))
    assert good.file_path is not None
    assert good.file_path.endswith(".tar.gz")

    await api.operations.run(RestoreOp(RestoreRequest(archive=good.file_path)))

    [safety] = await _safety_backups(api)
    assert safety.status == "completed"
    assert safety.compression == SAFETY_CODEC.compression
    assert safety.file_path is not None
    assert safety.file_path.endswith(suffix_for(SAFETY_CODEC.compression))
