"""system_backup: one row per backup, whatever started it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.schema import conv

from api.db import Base
from api.states import BackupStatus, BackupType, Compression, SyncStatus, sql_in


class SystemBackup(Base):
    __tablename__ = "system_backup"
    # The names the catalog has: the first migration passed full names through the naming
    # convention, which prefixed them once more; sync_status came later, in plain SQL.
    __table_args__ = (
        CheckConstraint(
            sql_in("type", BackupType), name=conv("ck_system_backup_ck_system_backup_type")
        ),
        CheckConstraint(
            sql_in("status", BackupStatus), name=conv("ck_system_backup_ck_system_backup_status")
        ),
        CheckConstraint(sql_in("sync_status", SyncStatus), name="sync_status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    description: Mapped[str | None] = mapped_column(Text)
    # type, status, sync_status, phase and compression hold api.states values; rows read back
    # plain str, so the attributes are typed str and compare equal to the enum members.
    type: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), index=True)
    file_path: Mapped[str | None] = mapped_column(Text)
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(64))
    compression: Mapped[str] = mapped_column(String(10), default=Compression.gzip.value)
    cloud_path: Mapped[str | None] = mapped_column(Text)
    cloud_provider: Mapped[str | None] = mapped_column(String(10))
    is_cloud_synced: Mapped[bool] = mapped_column(Boolean, default=False)
    table_count: Mapped[int | None] = mapped_column(Integer)
    record_count: Mapped[int | None] = mapped_column(BigInteger)
    uploaded_files_count: Mapped[int | None] = mapped_column(Integer)
    app_version: Mapped[str | None] = mapped_column(String(100))
    schema_version: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    phase: Mapped[str | None] = mapped_column(String(40))
    progress_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    progress_total: Mapped[int | None] = mapped_column(BigInteger)
    sync_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    sync_status: Mapped[str] = mapped_column(String(20), default=SyncStatus.none.value)
    sync_error: Mapped[str | None] = mapped_column(Text)
    sync_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    schedule_id: Mapped[str | None] = mapped_column(
        ForeignKey("backup_schedule.id", ondelete="SET NULL"), index=True
    )
    created_by: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set once a deleted backup's archive, sidecar and cloud copy are gone (recovery finishes
    # a deletion whose process stopped between the two).
    purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
