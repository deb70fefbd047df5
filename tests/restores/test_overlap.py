"""A restore verifies its archive while its safety backup is taken: whichever fails first stops
the other, and nothing live changes."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from api.archive.streams import SAFETY_CODEC, suffix_for
from api.backups import runner as backup_runner
from api.backups.models import SystemBackup
from api.db import transaction
from api.errors import AppError, ArchiveError, SourceError
from api.operations.backup import BackupOp
from api.operations.restore import RestoreOp
from api.restores import runner as restore_runner
from api.restores.runner import RestoreRequest
from api.states import BackupType
from tests.conftest import Api, database_state, tree_state


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


async def test_a_refused_archive_cancels_the_safety_backup_it_overlapped(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = await api.operations.run(BackupOp(name="good"))
    assert good.file_path is not None
    bad = _bad_copy(Path(good.file_path), tmp_path / "elsewhere")
    safety_started = threading.Event()
    real_read_archive = restore_runner.read_archive

    async def held_archive(*args: Any, **kwargs: Any) -> Any:
        safety_started.set()
        await asyncio.Event().wait()  # runs until cancelled

    def read_once_the_safety_backup_runs(*args: Any, **kwargs: Any) -> Any:
        assert safety_started.wait(60), "the safety backup never started"
        return real_read_archive(*args, **kwargs)

    monkeypatch.setattr(backup_runner, "archive", held_archive)
    monkeypatch.setattr(restore_runner, "read_archive", read_once_the_safety_backup_runs)
    before = tree_state(api.app.uploads), database_state(api.app)

    with pytest.raises(ArchiveError, match="corrupt"):
        await api.operations.run(RestoreOp(RestoreRequest(archive=str(bad))))

    assert (tree_state(api.app.uploads), database_state(api.app)) == before
    [safety] = await _safety_backups(api)
    assert safety.status == "failed"
    assert safety.error_message == (
        "cancelled: the restore it was taken for stopped (its archive was refused)"
    )
    assert not list(api.app.backups.glob("pre-restore-*"))


async def test_a_failed_safety_backup_stops_the_restore_before_anything_changes(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = await api.operations.run(BackupOp(name="good"))
    assert good.file_path is not None

    async def failing_archive(*args: Any, **kwargs: Any) -> Any:
        raise SourceError("the backup folder is full")

    monkeypatch.setattr(backup_runner, "archive", failing_archive)
    before = tree_state(api.app.uploads), database_state(api.app)
    parent_before = sorted(os.listdir(api.app.uploads.parent))

    with pytest.raises(AppError, match=r"safety backup failed \(the backup folder is full\)"):
        await api.operations.run(RestoreOp(RestoreRequest(archive=good.file_path)))

    assert (tree_state(api.app.uploads), database_state(api.app)) == before
    assert sorted(os.listdir(api.app.uploads.parent)) == parent_before, "staging left behind"


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
