"""Failures notify a real webhook receiver and a real SMTP server on 127.0.0.1, in the
background: a failed backup, restore or cloud sync; a completed backup only with
NOTIFY_ON_SUCCESS. A failing or hanging webhook is retried, then given up and logged (its host,
never its path), and never fails or delays the backup."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import shutil
import threading
from typing import Any, ClassVar

import pytest

from api.errors import AppError
from api.operations import BackupOp, RestoreOp
from api.operations.engine import ShuttingDown
from api.restores.runner import RestoreRequest
from tests.conftest import App, cloud_settings, free_port
from tests.notify.conftest import (
    SECRET_PATH,
    SMTP_PASSWORD,
    SMTP_USER,
    Mailbox,
    Receiver,
    notify_settings,
    notifying,
)
from tests.s3server import S3Server

# The test servers' own logs (aiohttp's access log, aiosmtpd's session log) see the secrets.
RECEIVERS = ("aiohttp", "mail.log")


def _no_secret(text: str) -> None:
    assert "SECRET" not in text, "the webhook's path (its secret) was shown or logged"
    assert SMTP_PASSWORD not in text, "the SMTP password was shown or logged"


def _ours(caplog: pytest.LogCaptureFixture) -> str:
    """What this service (and its HTTP client) logged."""
    return "\n".join(
        record.getMessage() for record in caplog.records if not record.name.startswith(RECEIVERS)
    )


async def test_a_failed_backup_sends_one_webhook_post_and_one_email_with_its_name_and_error(
    app: App, receiver: Receiver, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = notify_settings(receiver, mailbox, uploads_dir=app.root / "no-such-uploads")
    async with notifying(app, settings) as api:
        backup = await api.operations.run(BackupOp(name="doomed-nightly"))
        await api.operations.notifier.drain()
    assert backup.status == "failed"
    assert backup.error_message
    assert "UPLOADS_DIR" in backup.error_message
    assert backup.completed_at is not None

    assert receiver.paths == [SECRET_PATH]
    assert len(receiver.posts) == 1, receiver.posts
    post = receiver.posts[0]
    assert post["event"] == "backup_failed"
    assert post["backup"] == "doomed-nightly"
    assert post["status"] == "failed"
    assert post["error"] == backup.error_message
    assert post["at"] == backup.completed_at.isoformat()
    assert post["at"].endswith("+00:00")
    assert post["link"] == f"/backups/{backup.id}"
    assert post["host"]
    for words in ("doomed-nightly", "FAILED", backup.error_message, " UTC", post["host"]):
        assert words in post["text"], f"{words!r} missing from the webhook text:\n{post['text']}"

    assert mailbox.logins == [SMTP_USER]
    assert len(mailbox.messages) == 1
    assert mailbox.recipients == [["ops@example.test", "oncall@example.test"]]
    subject = mailbox.subjects()[0]
    assert "doomed-nightly" in subject
    assert "FAILED" in subject
    body = mailbox.body()
    assert backup.error_message in body
    assert " UTC" in body
    _no_secret(_ours(caplog))


async def test_a_completed_backup_notifies_only_with_notify_on_success(
    app: App, receiver: Receiver, open_mailbox: Mailbox
) -> None:
    async with notifying(app, notify_settings(receiver, open_mailbox)) as api:
        quiet = await api.operations.run(BackupOp(name="quiet"))
        await api.operations.notifier.drain()
    assert quiet.status == "completed"
    assert receiver.posts == []
    assert open_mailbox.messages == []

    settings = notify_settings(receiver, open_mailbox, notify_on_success=True)
    async with notifying(app, settings) as api:
        announced = await api.operations.run(BackupOp(name="announced"))
        await api.operations.notifier.drain()
    assert announced.status == "completed"
    assert [(p["event"], p["backup"], p["status"]) for p in receiver.posts] == [
        ("backup_completed", "announced", "completed")
    ]
    assert receiver.posts[0]["error"] is None
    assert len(open_mailbox.messages) == 1
    assert "announced" in open_mailbox.subjects()[0]


async def test_a_webhook_answering_500_is_retried_then_given_up_and_the_backup_completes(
    app: App, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.statuses = [500, 500, 500]
    settings = notify_settings(receiver, None, notify_on_success=True)
    async with notifying(app, settings) as api:
        done = await api.operations.run(BackupOp(name="despite-the-webhook"))
        outcomes = await api.operations.notifier.drain()
        shown = (await api.client.get("/notifications", headers=await api.headers())).json()
    assert done.status == "completed"
    assert len(receiver.posts) == 3, "three attempts in all"
    assert [(o.channel, o.delivered) for o in outcomes] == [("webhook", False)]
    assert "given up after 3 attempts" in outcomes[0].detail
    assert "HTTP 500" in outcomes[0].detail
    assert "given up after 3 attempts" in _ours(caplog)
    assert f"127.0.0.1:{receiver.port}" in _ours(caplog), "the log names the webhook's host"
    assert "HTTP Request: POST" in _ours(caplog), "httpx's own request lines were captured"
    _no_secret(_ours(caplog))
    last = shown["webhook"]["lastDelivery"]
    assert (last["event"], last["delivered"]) == ("backup_completed", False)
    assert "HTTP 500" in last["detail"]


async def test_a_webhook_that_fails_once_is_delivered_by_the_retry(
    app: App, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    settings = notify_settings(receiver, None, uploads_dir=app.root / "gone")
    async with notifying(app, settings) as api:
        await api.operations.run(BackupOp(name="second-time-lucky"))
        outcomes = await api.operations.notifier.drain()
    assert len(receiver.posts) == 2
    assert [(o.channel, o.delivered) for o in outcomes] == [("webhook", True)]


async def test_a_webhook_on_a_closed_port_is_given_up_and_logged_by_host_only(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nothing listens there
    settings = {
        "notify_webhook_url": f"http://127.0.0.1:{port}{SECRET_PATH}",
        "notify_on_success": True,
    }
    async with notifying(app, settings) as api:
        done = await api.operations.run(BackupOp(name="unheard"))
        outcomes = await api.operations.notifier.drain()
    assert done.status == "completed"
    assert [(o.channel, o.delivered) for o in outcomes] == [("webhook", False)]
    assert f"127.0.0.1:{port}" in outcomes[0].detail
    assert _ours(caplog).count("notification backup_completed to webhook failed (attempt") == 2
    assert "given up after 3 attempts" in _ours(caplog)
    _no_secret(_ours(caplog))


async def test_a_hanging_webhook_does_not_delay_the_backups_record(
    app: App, receiver: Receiver
) -> None:
    receiver.hold = True
    settings = notify_settings(receiver, None, notify_on_success=True)
    async with notifying(app, settings) as api:
        done = await api.operations.run(BackupOp(name="not-held-up"))
        assert done.status == "completed"
        # The deadline only bounds a hang; the post arrives at once.
        await asyncio.wait_for(receiver.arrived.wait(), timeout=60)
        assert api.operations.notifier.pending == 1, "the delivery still waits for the webhook"
        record = (await api.client.get(f"/backups/{done.id}", headers=await api.headers())).json()
        assert record["status"] == "completed"
        receiver.release.set()
        outcomes = await api.operations.notifier.drain()
    assert [(o.channel, o.delivered) for o in outcomes] == [("webhook", True)]


async def test_a_webhook_that_never_answers_times_out_and_is_given_up(
    app: App, receiver: Receiver
) -> None:
    receiver.hold = True
    settings = notify_settings(receiver, None, uploads_dir=app.root / "gone")
    async with notifying(app, settings) as api:
        api.operations.notifier.timeout = 0.2
        failed = await api.operations.run(BackupOp(name="timed-out"))
        outcomes = await api.operations.notifier.drain()
    assert failed.status == "failed"
    assert len(receiver.posts) == 3
    assert not outcomes[0].delivered
    assert "did not answer within 0.2 s" in outcomes[0].detail


async def test_a_failed_restore_notifies_with_the_backup_and_the_reason(
    app: App, receiver: Receiver, open_mailbox: Mailbox
) -> None:
    async with notifying(app, notify_settings(receiver, open_mailbox)) as api:
        pinned = await api.operations.run(BackupOp(name="pinned"))
        other = await api.operations.run(BackupOp(name="other"))
        assert pinned.file_path
        assert other.file_path
        shutil.copy(other.file_path, pinned.file_path)  # valid, but not what the catalog says
        with pytest.raises(AppError) as refused:
            await api.operations.run(RestoreOp(RestoreRequest(archive=pinned.id)))
        await api.operations.notifier.drain()
    failed = receiver.of("restore_failed")
    assert len(failed) == 1, receiver.posts
    assert failed[0]["backup"] == "pinned"
    assert failed[0]["error"] == refused.value.detail
    assert failed[0]["status"] == "failed"
    assert str(failed[0]["link"]).startswith("/restores/")
    assert any("Restore from pinned FAILED" in s for s in open_mailbox.subjects())


async def test_a_failed_cloud_sync_notifies_and_the_backup_stays_completed(
    app: App, receiver: Receiver, s3: S3Server, bucket: str
) -> None:
    s3.fail("PUT", "", times=1000)
    settings = {**cloud_settings(s3, bucket), **notify_settings(receiver, None)}
    try:
        async with notifying(app, settings) as api:
            done = await api.operations.run(BackupOp(name="stormy", sync_to_cloud=True))
            await api.operations.notifier.drain()
    finally:
        s3.reset()
    assert done.status == "completed"
    assert done.sync_status == "pending"
    failed = receiver.of("sync_failed")
    assert len(failed) == 1, receiver.posts
    assert failed[0]["backup"] == "stormy"
    assert failed[0]["error"] == done.sync_error
    assert "The local backup is intact" in failed[0]["text"]
    assert receiver.of("backup_failed") == []


class _Recorder(http.server.BaseHTTPRequestHandler):
    posts: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).posts.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_cli_sends_a_failed_backups_notification_before_it_exits(app: App) -> None:
    _Recorder.posts = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}{SECRET_PATH}"
        result = app.cli(
            "backup",
            "cli-doomed",
            check=False,
            UPLOADS_DIR=str(app.root / "missing"),
            NOTIFY_WEBHOOK_URL=url,
        )
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    assert result.returncode != 0
    assert [(p["event"], p["backup"]) for p in _Recorder.posts] == [("backup_failed", "cli-doomed")]
    assert "UPLOADS_DIR" in _Recorder.posts[0]["error"]
    _no_secret(result.stdout + result.stderr)


async def test_a_backup_interrupted_by_shutdown_notifies_as_failed(
    app: App, receiver: Receiver
) -> None:
    """SIGTERM's stop() cancels a backup whose pg_dump waits on a lock: the record says
    "interrupted by shutdown" and the webhook hears of it like any failed backup."""
    from tests.operations.test_shutdown import holding

    dumping = asyncio.Event()
    loop = asyncio.get_running_loop()

    class Dumping:
        def phase(self, name: str, total: int | None) -> None:
            if name.startswith("dumping"):
                loop.call_soon_threadsafe(dumping.set)

        def advance(self, done: int, total: int | None) -> None:
            pass

    async with notifying(app, notify_settings(receiver, None)) as api:
        with holding(app, "ACCESS EXCLUSIVE"):
            handle = await api.operations.submit(BackupOp(name="cut-short"), views=[Dumping()])
            await asyncio.wait_for(dumping.wait(), timeout=60)
            api.operations.stop()
            with pytest.raises(ShuttingDown, match="interrupted by shutdown"):
                await handle.wait()
        await api.operations.notifier.drain()
    [post] = receiver.posts
    assert post["event"] == "backup_failed"
    assert post["backup"] == "cut-short"
    assert post["error"] == "interrupted by shutdown"
