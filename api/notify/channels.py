"""The two ways out: a webhook (POST JSON, Slack-compatible) and e-mail over SMTP.

Each `send` makes one attempt and raises DeliveryError with a reason fit for logs and API
answers: it names the host, never the webhook's path or query (where services put their
secret) and never the SMTP password.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from api.config import Settings, SmtpSecurity
from api.notify.events import Event, Message, email


class DeliveryError(Exception):
    """One attempt failed; the message is safe to log (no secret)."""


class Channel(Protocol):
    name: str

    @property
    def host(self) -> str: ...

    async def send(self, message: Message, event: Event, host: str) -> None: ...


def url_host(url: str) -> str:
    """`hooks.slack.com` (with `:port` when given) of a webhook URL: what may be shown."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


class _HideWebhookPaths(logging.Filter):
    """httpx logs each request's full URL at INFO; a webhook's path and query are its secret.
    They are replaced with `…` in every httpx log line."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            if isinstance(record.args, tuple):
                record.args = tuple(self._hide(arg) for arg in record.args)
            record.msg = self._hide(record.msg)
        return True

    def _hide(self, value: object) -> object:
        text = str(value)
        hidden = text
        for secret in self.secrets:
            hidden = hidden.replace(secret, "…")
        return value if hidden == text else hidden


def _secrets(url: str) -> set[str]:
    parts = urlsplit(url)
    return {part for part in (parts.path, parts.query) if part and part != "/"}


_HIDE = _HideWebhookPaths()
logging.getLogger("httpx").addFilter(_HIDE)


@dataclass
class Webhook:
    url: str
    timeout: float
    name: str = "webhook"

    def __post_init__(self) -> None:
        _HIDE.secrets.update(_secrets(self.url))

    @property
    def host(self) -> str:
        return url_host(self.url)

    async def send(self, message: Message, event: Event, host: str) -> None:
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                response = await client.post(self.url, json=message.fields)
        except httpx.TimeoutException:
            raise DeliveryError(
                f"webhook {self.host} did not answer within {self.timeout:g} s"
            ) from None
        except httpx.HTTPError as error:
            raise DeliveryError(f"webhook {self.host}: {self._safe(error)}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryError(
                f"webhook {self.host} answered HTTP {response.status_code}"
                + (f" {response.reason_phrase}" if response.reason_phrase else "")
            )

    def _safe(self, error: Exception) -> str:
        text = str(error) or type(error).__name__
        for secret in _secrets(self.url):
            text = text.replace(secret, "…")
        return text


@dataclass
class Email:
    host_name: str
    port: int
    security: SmtpSecurity
    username: str | None
    password: str | None
    sender: str
    to: list[str]
    timeout: float
    # Tests pass a context trusting their own certificate; by default the system's CAs.
    tls_context: ssl.SSLContext | None = None
    name: str = "email"

    @property
    def host(self) -> str:
        return f"{self.host_name}:{self.port}"

    async def send(self, message: Message, event: Event, host: str) -> None:
        mail = email(message, event, host, self.sender, self.to)
        try:
            await asyncio.to_thread(self._send, mail)
        except smtplib.SMTPAuthenticationError as error:
            raise DeliveryError(
                f"SMTP {self.host} refused the login of {self.username!r}: {error.smtp_code} "
                f"{_text(error.smtp_error)}"
            ) from None
        except smtplib.SMTPRecipientsRefused as error:
            refused = ", ".join(sorted(error.recipients))
            raise DeliveryError(f"SMTP {self.host} refused the recipients {refused}") from None
        except smtplib.SMTPResponseException as error:
            raise DeliveryError(
                f"SMTP {self.host}: {error.smtp_code} {_text(error.smtp_error)}"
            ) from None
        except (TimeoutError, smtplib.SMTPServerDisconnected) as error:
            raise DeliveryError(f"SMTP {self.host}: {error or 'timed out'}") from None
        except (smtplib.SMTPException, OSError) as error:
            raise DeliveryError(f"SMTP {self.host}: {error}") from None

    def _send(self, mail: EmailMessage) -> None:
        context = self.tls_context or ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.security is SmtpSecurity.tls:
            smtp = smtplib.SMTP_SSL(
                self.host_name, self.port, timeout=self.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(self.host_name, self.port, timeout=self.timeout)
        with smtp:
            smtp.ehlo()
            if self.security is SmtpSecurity.starttls:
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(mail, from_addr=self.sender, to_addrs=self.to)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def recipients(settings: Settings) -> list[str]:
    return [address.strip() for address in settings.notify_email_to.split(",") if address.strip()]


def configured(
    settings: Settings, timeout: float, tls_context: ssl.SSLContext | None = None
) -> list[Channel]:
    """The channels the settings configure: the webhook when NOTIFY_WEBHOOK_URL is set, e-mail
    when NOTIFY_SMTP_HOST, NOTIFY_EMAIL_FROM and NOTIFY_EMAIL_TO are."""
    channels: list[Channel] = []
    if settings.notify_webhook_url is not None and settings.notify_webhook_url.get_secret_value():
        channels.append(Webhook(settings.notify_webhook_url.get_secret_value(), timeout))
    to = recipients(settings)
    if settings.notify_smtp_host and settings.notify_email_from and to:
        password = settings.notify_smtp_password
        channels.append(
            Email(
                host_name=settings.notify_smtp_host,
                port=settings.notify_smtp_port,
                security=settings.notify_smtp_security,
                username=settings.notify_smtp_username,
                password=password.get_secret_value() if password else None,
                sender=settings.notify_email_from,
                to=to,
                timeout=timeout,
                tls_context=tls_context,
            )
        )
    return channels
