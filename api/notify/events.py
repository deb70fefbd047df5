"""What a notification says: the event (pure data) and its one rendering, as plain words for
people (the webhook's `text`, the e-mail's body) and as fields for machines."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """Everything that notifies. The `*_completed` kinds only with NOTIFY_ON_SUCCESS."""

    backup_failed = "backup_failed"
    backup_completed = "backup_completed"
    sync_failed = "sync_failed"
    restore_failed = "restore_failed"
    restore_completed = "restore_completed"
    drill_failed = "drill_failed"
    no_backup = "no_backup"
    test = "test"


SUCCESS_KINDS = frozenset({EventKind.backup_completed, EventKind.restore_completed})


@dataclass(frozen=True)
class Event:
    """One thing worth telling: what (`kind`), about which backup (`backup`, by name), how it
    ended (`status`), why (`error`), when (`at`, UTC) and where to look (`link`, a path of the
    API or the page). `note` adds one sentence (the next sync attempt, the alert's period)."""

    kind: EventKind
    at: datetime
    status: str
    backup: str | None = None
    error: str | None = None
    link: str | None = None
    note: str | None = None


_TITLES = {
    EventKind.backup_failed: "Backup {backup} FAILED",
    EventKind.backup_completed: "Backup {backup} completed",
    EventKind.sync_failed: "Cloud sync of backup {backup} FAILED",
    EventKind.restore_failed: "Restore from {backup} FAILED",
    EventKind.restore_completed: "Restore from {backup} completed",
    EventKind.drill_failed: "Restore drill of backup {backup} FAILED",
    EventKind.no_backup: "No backup has completed recently",
    EventKind.test: "Test notification",
}


def utc_text(at: datetime) -> str:
    """`2026-12-03 02:00:05 UTC`: the zone always shown."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Message:
    """An event rendered once for every channel."""

    title: str
    text: str
    fields: dict[str, Any]


def render(event: Event, host: str) -> Message:
    title = _TITLES[event.kind].format(backup=event.backup or "(unnamed)")
    lines = [f"[Nexus Backup on {host}] {title}", f"When: {utc_text(event.at)}"]
    if event.backup:
        lines.append(f"Backup: {event.backup}")
    if event.error:
        lines.append(f"Error: {event.error}")
    if event.note:
        lines.append(event.note)
    if event.link:
        lines.append(f"Details: {event.link}")
    text = "\n".join(lines)
    fields: dict[str, Any] = {
        "text": text,  # what Slack-compatible receivers show
        "event": event.kind.value,
        "backup": event.backup,
        "status": event.status,
        "error": event.error,
        "at": event.at.astimezone(UTC).isoformat(),
        "host": host,
        "link": event.link,
    }
    return Message(title=title, text=text, fields=fields)


def email(message: Message, event: Event, host: str, sender: str, to: list[str]) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = f"[Nexus Backup {host}] {message.title}"
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Date"] = format_datetime(event.at.astimezone(UTC))
    mail["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    mail.set_content(message.text + "\n")
    return mail
