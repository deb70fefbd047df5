"""Backup API schemas: the seed's field names, camelCase."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, computed_field

from api.backups.names import BackupName
from api.schemas import Schema
from api.states import BackupPhase, BackupStatus, BackupType, Compression, SyncStatus


class Progress(Schema):
    phase: BackupPhase | None
    bytes_done: int
    bytes_total: int | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def percent(self) -> int | None:
        if not self.bytes_total:
            return None
        return min(100, self.bytes_done * 100 // self.bytes_total)


class BackupOut(Schema):
    id: str
    name: str
    description: str | None
    type: BackupType
    status: BackupStatus
    file_path: str | None
    file_size: int | None
    checksum: str | None
    compression: Compression
    cloud_path: str | None
    cloud_provider: str | None
    is_cloud_synced: bool
    sync_requested: bool
    sync_status: SyncStatus
    sync_error: str | None
    sync_attempts: int
    next_sync_at: datetime | None
    synced_at: datetime | None
    table_count: int | None
    record_count: int | None
    uploaded_files_count: int | None
    app_version: str | None
    schema_version: str | None
    error_message: str | None
    schedule_id: str | None
    created_by: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    deleted_at: datetime | None
    verified_at: datetime | None = Field(
        default=None, description="When the last restore drill (deep verify) ended"
    )
    verify_outcome: Literal["passed", "failed"] | None = None
    verify_duration_ms: int | None = None
    verify_error: str | None = Field(default=None, description="Why the last drill failed")
    progress: Progress | None = None


class BackupList(Schema):
    items: list[BackupOut]
    total: int
    limit: int
    offset: int


class BackupCreate(Schema):
    name: BackupName | None = None
    description: str | None = Field(default=None, max_length=2000)
    type: Literal[BackupType.manual, BackupType.pre_update] = BackupType.manual
    sync_to_cloud: bool = Field(default=False, description="Upload to cloud storage when done")


class DownloadLink(Schema):
    url: str
    expires_at: datetime


class RestoreRequestIn(Schema):
    confirm: str = Field(
        min_length=1, max_length=200, description="The backup's name, typed back to confirm"
    )
    force: bool = Field(default=False, description="Restore even a newer app version's backup")


class VerifyOut(Schema):
    ok: bool
    backup_id: str
    sha256: str | None
    layout: str | None
    problem: str | None
    warnings: list[str]
    deep: bool
    tables_checked: int | None = None


class LatestDrill(Schema):
    """The newest backup proven restorable: its last restore drill passed."""

    id: str
    name: str
    verified_at: datetime
