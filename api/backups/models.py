"""system_backup: one row per backup, whatever started it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
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
        # Named as the migrations name them (the convention would prefix the schema).
        Index(conv("ix_system_backup_name"), "name"),
        Index(conv("ix_system_backup_status"), "status"),
        Index(conv("ix_system_backup_next_sync_at"), "next_sync_at"),
        Index(conv("ix_system_backup_schedule_id"), "schedule_id"),
        Index(conv("ix_system_backup_created_at"), "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    # type, status, sync_status, phase and compression hold api.states values; rows read back
    # plain str, so the attributes are typed str and compare equal to the enum members.
    type: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
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
    next_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    schedule_id: Mapped[str | None] = mapped_column(
        ForeignKey("backup_schedule.id", ondelete="SET NULL")
    )
    created_by: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set once a deleted backup's archive, sidecar and cloud copy are gone (recovery finishes
    # a deletion whose process stopped between the two).
    purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The last restore drill (deep verify) that ran to its end: when, "passed" or "failed",
    # how long it took and, when it failed, why.
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    verify_outcome: Mapped[str | None] = mapped_column(Text)
    verify_duration_ms: Mapped[int | None] = mapped_column(Integer)
    verify_error: Mapped[str | None] = mapped_column(Text)


# The listing (not deleted, newest first, optionally of one status or type) and its counts read
# these partial indexes alone, at any offset; the purge scan reads the few unpurged deletions.
_VISIBLE = SystemBackup.deleted_at.is_(None)
_NEWEST_FIRST = (SystemBackup.created_at.desc(), SystemBackup.id)
Index(conv("ix_system_backup_visible"), *_NEWEST_FIRST, postgresql_where=_VISIBLE)
Index(
    conv("ix_system_backup_visible_status"),
    SystemBackup.status,
    *_NEWEST_FIRST,
    postgresql_where=_VISIBLE,
)
Index(
    conv("ix_system_backup_visible_type"),
    SystemBackup.type,
    *_NEWEST_FIRST,
    postgresql_where=_VISIBLE,
)
Index(
    conv("ix_system_backup_unpurged"),
    SystemBackup.id,
    postgresql_where=SystemBackup.deleted_at.is_not(None) & SystemBackup.purged_at.is_(None),
)
