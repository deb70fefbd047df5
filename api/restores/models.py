"""system_restore: one row per restore (or dry run), with its safety backup."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base


class SystemRestore(Base):
    __tablename__ = "system_restore"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    backup_id: Mapped[str | None] = mapped_column(
        ForeignKey("system_backup.id", ondelete="SET NULL"), index=True
    )
    archive_path: Mapped[str] = mapped_column(Text)
    # status and phase hold api.states RestoreStatus and RestorePhase values (no CHECK here).
    status: Mapped[str] = mapped_column(String(20))
    phase: Mapped[str | None] = mapped_column(String(40))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    pre_restore_backup_id: Mapped[str | None] = mapped_column(
        ForeignKey("system_backup.id", ondelete="SET NULL")
    )
    error_message: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
