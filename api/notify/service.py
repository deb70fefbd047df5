"""The notifier: events rendered once and delivered in the background to every configured
channel, retried with backoff, never failing or delaying what they report.

One Notifier per operations engine (`Operations.notifier`). `send()` returns at once; each
channel's delivery is a task of its own: up to `1 + len(delays)` attempts, each bounded by
`timeout`, then given up with a log line. Every outcome is logged (hosts only, never the
webhook's path or the SMTP password) and kept as the channel's last delivery in the catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.audit import service as audit
from api.config import Settings
from api.db import transaction
from api.errors import NotConfigured
from api.notify import channels as channel_module
from api.notify.channels import Channel, DeliveryError
from api.notify.events import SUCCESS_KINDS, Event, EventKind, Message, render
from api.notify.models import NotifyAlert, NotifyDelivery
from api.notify.schemas import (
    ChannelResult,
    EmailConfig,
    LastDelivery,
    NotificationConfig,
    NotificationTest,
    WebhookConfig,
)
from api.states import AuditOutcome

log = logging.getLogger("nexus_backup.notify")

RETRY_DELAYS: tuple[float, ...] = (5.0, 30.0)  # 3 attempts in all
TIMEOUT_SECONDS = 10.0
CLOSE_SECONDS = 10.0  # at shutdown, what pending deliveries still get


@dataclass(frozen=True)
class Outcome:
    """One channel's delivery: delivered, or why not (no secret)."""

    channel: str
    delivered: bool
    detail: str


class Notifier:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        *,
        delays: Sequence[float] = RETRY_DELAYS,
        timeout: float = TIMEOUT_SECONDS,
        host: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.delays = tuple(delays)
        self.timeout = timeout
        self.host = host or socket.gethostname()
        self.tls_context = tls_context
        self._tasks: set[asyncio.Task[Outcome]] = set()

    def channels(self) -> list[Channel]:
        return channel_module.configured(self.settings, self.timeout, self.tls_context)

    def wanted(self, event: Event) -> bool:
        return event.kind not in SUCCESS_KINDS or self.settings.notify_on_success

    @property
    def pending(self) -> int:
        """Deliveries still under way (attempting or waiting to retry)."""
        return sum(not task.done() for task in self._tasks)

    def send(self, event: Event) -> None:
        """Deliver `event` to every configured channel in the background; never raises."""
        try:
            if not self.wanted(event):
                return
            targets = self.channels()
            if not targets:
                return
            message = render(event, self.host)
            for channel in targets:
                task = asyncio.get_running_loop().create_task(
                    self._deliver(channel, message, event)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:
            log.exception("notification %s not sent", event.kind.value)

    async def drain(self) -> list[Outcome]:
        """Wait for every pending delivery (tests, the CLI before it exits)."""
        outcomes: list[Outcome] = []
        seen: set[asyncio.Task[Outcome]] = set()
        while waiting := [task for task in self._tasks if task not in seen]:
            seen.update(waiting)
            done = await asyncio.gather(*waiting, return_exceptions=True)
            outcomes.extend(o for o in done if isinstance(o, Outcome))
        return outcomes

    async def close(self, grace: float = CLOSE_SECONDS) -> None:
        """Give pending deliveries `grace` seconds, then give them up (logged)."""
        tasks = [task for task in self._tasks if not task.done()]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(BaseException):
                await task

    async def test(self, at: datetime) -> list[Outcome]:
        """One attempt to every configured channel, now, with the outcomes."""
        event = Event(
            EventKind.test,
            at=at,
            status="test",
            note="Nexus Backup can reach you here. Nothing needs doing.",
        )
        message = render(event, self.host)
        targets = self.channels()
        outcomes = list(
            await asyncio.gather(*(self._attempt_once(c, message, event) for c in targets))
        )
        for outcome in outcomes:
            await self._remember(outcome, event)
        return outcomes

    async def _attempt_once(self, channel: Channel, message: Message, event: Event) -> Outcome:
        try:
            await channel.send(message, event, self.host)
        except DeliveryError as error:
            log.warning("test notification to %s failed: %s", channel.name, error)
            return Outcome(channel.name, False, str(error))
        except Exception as error:  # a bug must not become a 500 with a traceback
            log.exception("test notification to %s failed", channel.name)
            return Outcome(channel.name, False, f"{type(error).__name__} ({channel.host})")
        log.info("test notification delivered to %s (%s)", channel.name, channel.host)
        return Outcome(channel.name, True, f"delivered to {channel.host}")

    async def _deliver(self, channel: Channel, message: Message, event: Event) -> Outcome:
        attempts = 1 + len(self.delays)
        reason = ""
        try:
            for attempt in range(1, attempts + 1):
                try:
                    await channel.send(message, event, self.host)
                except DeliveryError as error:
                    reason = str(error)
                except Exception as error:
                    log.exception("notification to %s failed unexpectedly", channel.name)
                    reason = f"{type(error).__name__} ({channel.host})"
                else:
                    log.info(
                        "notification %s delivered to %s (%s), attempt %d",
                        event.kind.value,
                        channel.name,
                        channel.host,
                        attempt,
                    )
                    outcome = Outcome(channel.name, True, f"delivered to {channel.host}")
                    await self._remember(outcome, event)
                    return outcome
                if attempt < attempts:
                    delay = self.delays[attempt - 1]
                    log.warning(
                        "notification %s to %s failed (attempt %d of %d), retry in %g s: %s",
                        event.kind.value,
                        channel.name,
                        attempt,
                        attempts,
                        delay,
                        reason,
                    )
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            reason = f"{reason + '; ' if reason else ''}still undelivered at shutdown"
            log.error("notification %s to %s given up: %s", event.kind.value, channel.name, reason)
            raise
        log.error(
            "notification %s to %s given up after %d attempts: %s",
            event.kind.value,
            channel.name,
            attempts,
            reason,
        )
        outcome = Outcome(channel.name, False, f"given up after {attempts} attempts: {reason}")
        await self._remember(outcome, event)
        return outcome

    async def _remember(self, outcome: Outcome, event: Event) -> None:
        """Keep the channel's last delivery in the catalog (for GET /notifications)."""
        if self.sessions is None:
            return
        try:
            async with transaction(self.sessions) as session:
                values = {
                    "at": datetime.now(UTC),
                    "event": event.kind.value,
                    "delivered": outcome.delivered,
                    "detail": outcome.detail,
                }
                await session.execute(
                    insert(NotifyDelivery)
                    .values(channel=outcome.channel, **values)
                    .on_conflict_do_update(index_elements=["channel"], set_=values)
                )
        except Exception as error:
            log.warning("last delivery to %s not recorded: %s", outcome.channel, error)


# -- the API's view and test-send ---------------------------------------------------------


async def config(session: AsyncSession, settings: Settings) -> NotificationConfig:
    """The notification settings without a secret: the webhook's host, not its URL; whether an
    SMTP password is set, not what it is. With each channel's last delivery."""
    last = {
        row.channel: LastDelivery.model_validate(row)
        for row in (await session.execute(select(NotifyDelivery))).scalars()
    }
    alerted_at = (
        await session.execute(select(NotifyAlert.alerted_at).where(NotifyAlert.name == "no_backup"))
    ).scalar_one_or_none()
    webhook = settings.notify_webhook_url
    webhook_url = webhook.get_secret_value() if webhook else ""
    to = channel_module.recipients(settings)
    return NotificationConfig(
        webhook=WebhookConfig(
            configured=bool(webhook_url),
            host=channel_module.url_host(webhook_url) if webhook_url else None,
            last_delivery=last.get("webhook"),
        ),
        email=EmailConfig(
            configured=bool(settings.notify_smtp_host and settings.notify_email_from and to),
            host=settings.notify_smtp_host,
            port=settings.notify_smtp_port,
            security=settings.notify_smtp_security,
            username=settings.notify_smtp_username,
            password_set=settings.notify_smtp_password is not None,
            from_address=settings.notify_email_from,
            to=to,
            last_delivery=last.get("email"),
        ),
        on_success=settings.notify_on_success,
        alert_no_backup_hours=settings.alert_no_backup_hours,
        last_no_backup_alert_at=alerted_at,
    )


NOT_CONFIGURED = (
    "no notification channel is configured: set NOTIFY_WEBHOOK_URL (a Slack-compatible webhook), "
    "or NOTIFY_SMTP_HOST, NOTIFY_EMAIL_FROM and NOTIFY_EMAIL_TO (e-mail), then restart"
)


async def test(notifier: Notifier, caller: audit.Caller, at: datetime) -> NotificationTest:
    """Send a test notification to every configured channel (one attempt each, no catalog
    transaction open meanwhile), then audit the outcome in a short transaction of its own."""
    if not notifier.channels():
        raise NotConfigured(NOT_CONFIGURED)
    outcomes = await notifier.test(at)
    result = NotificationTest(
        delivered=all(o.delivered for o in outcomes),
        channels=[
            ChannelResult(channel=o.channel, delivered=o.delivered, detail=o.detail)
            for o in outcomes
        ],
    )
    if notifier.sessions is not None:
        await audit.record_apart(
            notifier.sessions,
            caller,
            action="notify.test",
            target=",".join(o.channel for o in outcomes),
            outcome=AuditOutcome.completed if result.delivered else AuditOutcome.failed,
            detail={o.channel: o.detail for o in outcomes},
        )
    return result
