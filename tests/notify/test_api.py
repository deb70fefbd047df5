"""GET /notifications shows the configuration without a secret; POST /notifications/test sends
to every configured channel and says per channel how it went (audited); both for admins only."""

from __future__ import annotations

import pytest

from tests.conftest import Api, App
from tests.notify.conftest import (
    SECRET_PATH,
    SMTP_PASSWORD,
    SMTP_USER,
    Mailbox,
    Receiver,
    Tls,
    notify_settings,
    notifying,
    secure_mailbox,
)


def _no_secret(text: str) -> None:
    for part in SECRET_PATH.strip("/").split("/"):
        assert part not in text, f"the webhook's path ({part}) was shown"
    assert SMTP_PASSWORD not in text, "the SMTP password was shown"


async def test_the_configuration_is_shown_without_a_secret(
    app: App, receiver: Receiver, mailbox: Mailbox
) -> None:
    settings = notify_settings(receiver, mailbox, notify_on_success=True, alert_no_backup_hours=26)
    async with notifying(app, settings) as api:
        response = await api.client.get("/notifications", headers=await api.headers())
        refused = await api.client.get("/notifications", headers=await api.headers("ACCOUNTANT"))
        anonymous = await api.client.get("/notifications")
    assert response.status_code == 200, response.text
    _no_secret(response.text)
    body = response.json()
    assert body["webhook"] == {
        "configured": True,
        "host": f"127.0.0.1:{receiver.port}",
        "lastDelivery": None,
    }
    assert body["email"] == {
        "configured": True,
        "host": "127.0.0.1",
        "port": mailbox.port,
        "security": "none",
        "username": SMTP_USER,
        "passwordSet": True,
        "fromAddress": "nexus-backup@example.test",
        "to": ["ops@example.test", "oncall@example.test"],
        "lastDelivery": None,
    }
    assert body["onSuccess"] is True
    assert body["alertNoBackupHours"] == 26
    assert refused.status_code == 403
    assert anonymous.status_code == 401


async def test_nothing_configured_is_shown_as_such_and_a_test_send_is_refused(api: Api) -> None:
    headers = await api.headers()
    shown = (await api.client.get("/notifications", headers=headers)).json()
    assert shown["webhook"]["configured"] is False
    assert shown["email"]["configured"] is False
    response = await api.client.post("/notifications/test", headers=headers)
    assert response.status_code == 409, response.text
    assert "NOTIFY_WEBHOOK_URL" in response.json()["detail"]
    assert "NOTIFY_SMTP_HOST" in response.json()["detail"]


async def test_a_test_send_reaches_both_channels_and_reports_each_failure(
    app: App, receiver: Receiver, mailbox: Mailbox
) -> None:
    async with notifying(app, notify_settings(receiver, mailbox)) as api:
        headers = await api.headers()
        ok = await api.client.post("/notifications/test", headers=headers)
        assert ok.status_code == 200, ok.text
        assert ok.json()["delivered"] is True
        assert [(c["channel"], c["delivered"]) for c in ok.json()["channels"]] == [
            ("webhook", True),
            ("email", True),
        ]
        assert [p["event"] for p in receiver.posts] == ["test"]
        assert len(mailbox.messages) == 1
        assert "Test notification" in mailbox.subjects()[0]

        receiver.statuses = [503]
        mailbox.password = "not-what-we-send"
        bad = await api.client.post("/notifications/test", headers=headers)
        assert bad.status_code == 200, bad.text
        _no_secret(bad.text)
        channels = {c["channel"]: c for c in bad.json()["channels"]}
        assert bad.json()["delivered"] is False
        assert channels["webhook"]["delivered"] is False
        assert "HTTP 503" in channels["webhook"]["detail"]
        assert channels["email"]["delivered"] is False
        assert "refused the login" in channels["email"]["detail"]
        assert len(receiver.posts) == 2, "one attempt each: the answer is immediate"

        shown = await api.client.get("/notifications", headers=headers)
        _no_secret(shown.text)
        assert shown.json()["email"]["lastDelivery"]["delivered"] is False
        assert shown.json()["webhook"]["lastDelivery"]["event"] == "test"
        forbidden = await api.client.post(
            "/notifications/test", headers=await api.headers("ACCOUNTANT")
        )
        assert forbidden.status_code == 403
    audit = app.sql(
        "SELECT outcome FROM nexus_backup.audit_log WHERE action = 'notify.test' ORDER BY id"
    )
    assert audit.split() == ["completed", "failed"]


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_e_mail_logs_in_after_starttls_or_over_tls(app: App, tls: Tls, security: str) -> None:
    with secure_mailbox(tls, implicit=security == "tls") as box:
        settings = notify_settings(None, box, notify_smtp_security=security)
        async with notifying(app, settings) as api:
            api.operations.notifier.tls_context = tls.client  # trusts the test certificate
            sent = await api.client.post("/notifications/test", headers=await api.headers())
    assert sent.status_code == 200, sent.text
    assert sent.json()["channels"] == [
        {"channel": "email", "delivered": True, "detail": f"delivered to 127.0.0.1:{box.port}"}
    ]
    assert box.logins == [SMTP_USER]
    assert len(box.messages) == 1


async def test_an_untrusted_smtp_certificate_is_refused(app: App, tls: Tls) -> None:
    with secure_mailbox(tls, implicit=False) as box:
        settings = notify_settings(None, box, notify_smtp_security="starttls")
        async with notifying(app, settings) as api:  # the system's CAs: the test CA is unknown
            sent = await api.client.post("/notifications/test", headers=await api.headers())
    (channel,) = sent.json()["channels"]
    assert channel["delivered"] is False
    assert "CERTIFICATE_VERIFY_FAILED" in channel["detail"]
    assert box.messages == []
