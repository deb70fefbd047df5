"""What /notifications answers: the configuration (never a secret) and a test-send's result."""

from __future__ import annotations

from datetime import datetime

from api.config import SmtpSecurity
from api.schemas import Schema


class LastDelivery(Schema):
    at: datetime
    event: str
    delivered: bool
    detail: str | None


class WebhookConfig(Schema):
    configured: bool
    host: str | None  # the host only: the URL's path is its secret
    last_delivery: LastDelivery | None


class EmailConfig(Schema):
    configured: bool
    host: str | None
    port: int
    security: SmtpSecurity
    username: str | None
    password_set: bool
    from_address: str | None
    to: list[str]
    last_delivery: LastDelivery | None


class NotificationConfig(Schema):
    webhook: WebhookConfig
    email: EmailConfig
    on_success: bool
    alert_no_backup_hours: int | None
    last_no_backup_alert_at: datetime | None


class ChannelResult(Schema):
    channel: str
    delivered: bool
    detail: str


class NotificationTest(Schema):
    delivered: bool  # every configured channel
    channels: list[ChannelResult]
