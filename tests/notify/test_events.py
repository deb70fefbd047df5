"""An event is rendered once, in plain words, with the time in UTC (zone shown) and the host;
the webhook's fields carry the same facts; success kinds wait for NOTIFY_ON_SUCCESS."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest

from api.config import Settings
from api.notify.channels import Webhook
from api.notify.events import Event, EventKind, render
from api.notify.service import Notifier


def test_the_text_says_what_failed_when_in_utc_where_and_why() -> None:
    at = datetime(2026, 12, 3, 3, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    event = Event(
        EventKind.backup_failed,
        at=at,
        status="failed",
        backup="nightly-2026-12-03",
        error="pg_dump failed: permission denied for table invoices",
        link="/backups/abc",
    )
    message = render(event, "backup-host-1")
    assert message.text.splitlines() == [
        "[Nexus Backup on backup-host-1] Backup nightly-2026-12-03 FAILED",
        "When: 2026-12-03 02:00:05 UTC",
        "Backup: nightly-2026-12-03",
        "Error: pg_dump failed: permission denied for table invoices",
        "Details: /backups/abc",
    ]
    assert message.fields == {
        "text": message.text,
        "event": "backup_failed",
        "backup": "nightly-2026-12-03",
        "status": "failed",
        "error": "pg_dump failed: permission denied for table invoices",
        "at": "2026-12-03T02:00:05+00:00",
        "host": "backup-host-1",
        "link": "/backups/abc",
    }


@pytest.mark.parametrize("on_success", [False, True])
def test_success_is_wanted_only_with_notify_on_success(on_success: bool) -> None:
    notifier = Notifier(Settings(_env_file=None, notify_on_success=on_success))  # type: ignore[call-arg]
    at = datetime(2026, 12, 3, tzinfo=UTC)
    assert notifier.wanted(Event(EventKind.backup_failed, at=at, status="failed"))
    assert notifier.wanted(Event(EventKind.backup_completed, at=at, status="completed")) is (
        on_success
    )
    assert notifier.wanted(Event(EventKind.restore_completed, at=at, status="completed")) is (
        on_success
    )


def test_httpx_request_lines_name_the_webhook_host_but_not_its_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    Webhook("https://hooks.example.test/services/T1/B2/TOPSECRET?token=QUERYSECRET", 1.0)
    caplog.set_level(logging.INFO, logger="httpx")
    logging.getLogger("httpx").info(
        'HTTP Request: %s %s "%s %d %s"',
        "POST",
        "https://hooks.example.test/services/T1/B2/TOPSECRET?token=QUERYSECRET",
        "HTTP/1.1",
        200,
        "OK",
    )
    assert "hooks.example.test" in caplog.text
    assert "TOPSECRET" not in caplog.text
    assert "QUERYSECRET" not in caplog.text
