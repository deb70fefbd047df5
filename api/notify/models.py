"""What notifications keep in the catalog: the no-backup alert's state (shared by replicas) and
each channel's last delivery outcome."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base


class NotifyAlert(Base):
    """One row per alert kind (today only `no_backup`). `alerted_for` names the stale period
    the alert was sent for (the newest completed backup's time, or `watching_since` when there
    is none): a replica sends only when its atomic UPDATE changes it."""

    __tablename__ = "notify_alert"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    watching_since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    alerted_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    alerted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class NotifyDelivery(Base):
    """The last delivery to one channel (`webhook`, `email`): when, what, and how it went."""

    __tablename__ = "notify_delivery"

    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    event: Mapped[str] = mapped_column(String(40))
    delivered: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str | None] = mapped_column(Text)
