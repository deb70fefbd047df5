"""Real receivers on 127.0.0.1 for the notification tests: an HTTP server recording webhook
posts (aiohttp, in the test's event loop) and an SMTP server recording mail (aiosmtpd's
Controller, in its thread), with or without AUTH. Tests drain the notifier, then read what
arrived: nothing polls, nothing sleeps."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ipaddress
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.conftest import Api, App, api_for, free_port

# Where a webhook service puts its secret: the path. It must never be shown or logged.
SECRET_PATH = "/services/T0SECRET/B0SECRET/xoxbSECRETSECRETSECRET"
SMTP_USER = "nexus-mailer"
SMTP_PASSWORD = "smtp-pa55word-NEVER-SHOWN"


@dataclass
class Receiver:
    """A webhook receiver: records every POST; answers `statuses` in order (then 200), or
    holds requests while `hold` is set."""

    statuses: list[int] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    hold: bool = False
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SECRET_PATH}"

    def of(self, event: str) -> list[dict[str, Any]]:
        return [post for post in self.posts if post.get("event") == event]

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        self.posts.append(await request.json())
        self.arrived.set()
        if self.hold:
            await self.release.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok" if status == 200 else "broken")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recorder = Receiver()
    server = web.Application()
    server.router.add_post("/{tail:.*}", recorder.handle)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets = site._server.sockets if site._server else ()  # type: ignore[union-attr]
    recorder.port = sockets[0].getsockname()[1]
    try:
        yield recorder
    finally:
        recorder.release.set()
        await runner.cleanup()


class Mailbox:
    """What the SMTP server accepted, and the password it takes (changeable mid-test)."""

    def __init__(self, auth: bool) -> None:
        self.auth = auth
        self.password = SMTP_PASSWORD
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []
        self.logins: list[str] = []
        self.port = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == SMTP_USER
            and data.password.decode() == self.password
        )
        if ok:
            self.logins.append(SMTP_USER)
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]

    def body(self, index: int = 0) -> str:
        part = self.messages[index].get_body(("plain",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]


def _smtp(auth: bool) -> Iterator[Mailbox]:
    box = Mailbox(auth)
    box.port = free_port()
    options: dict[str, Any] = {}
    if auth:
        # Plain-text AUTH on 127.0.0.1 only (aiosmtpd otherwise offers AUTH after TLS only); a
        # wrong password is refused (535), and each test checks the login happened.
        options = {"authenticator": box.authenticate, "auth_require_tls": False}
    controller = Controller(box, hostname="127.0.0.1", port=box.port, **options)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """An SMTP server that requires AUTH (SMTP_USER / SMTP_PASSWORD)."""
    yield from _smtp(auth=True)


@pytest.fixture
def open_mailbox() -> Iterator[Mailbox]:
    """An SMTP server without AUTH."""
    yield from _smtp(auth=False)


def notify_settings(
    receiver: Receiver | None, mailbox: Mailbox | None, **extra: object
) -> dict[str, object]:
    values: dict[str, object] = {}
    if receiver is not None:
        values["notify_webhook_url"] = receiver.url
    if mailbox is not None:
        values.update(
            notify_smtp_host="127.0.0.1",
            notify_smtp_port=mailbox.port,
            notify_smtp_security="none",
            notify_email_from="nexus-backup@example.test",
            notify_email_to="ops@example.test, oncall@example.test",
        )
        if mailbox.auth:
            values.update(notify_smtp_username=SMTP_USER, notify_smtp_password=SMTP_PASSWORD)
    values.update(extra)
    return values


@asynccontextmanager
async def notifying(app: App, settings: dict[str, object]) -> AsyncIterator[Api]:
    """The app with these notification settings; retries without waiting (delays of 0 s)."""
    served = api_for(app, settings)
    api = await anext(served)
    api.operations.notifier.delays = (0.0, 0.0)
    try:
        yield api
    finally:
        await served.aclose()


@dataclass
class Tls:
    """A self-signed certificate for 127.0.0.1: the server's context and a client context that
    trusts it (what an operator's CA bundle would do for a real server)."""

    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    start = datetime(2020, 1, 1, tzinfo=UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=365 * 30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert, private = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, private)
    client = ssl.create_default_context(cafile=str(cert))
    return Tls(server, client)


@contextmanager
def secure_mailbox(tls: Tls, implicit: bool) -> Iterator[Mailbox]:
    """An SMTP server with AUTH after TLS only: STARTTLS, or TLS from the first byte."""
    box = Mailbox(auth=True)
    box.port = free_port()
    options: dict[str, Any] = {"authenticator": box.authenticate}
    if implicit:
        # aiosmtpd counts only STARTTLS as TLS for AUTH; this connection is TLS from the start.
        options.update(ssl_context=tls.server, auth_require_tls=False)
    else:
        options.update(tls_context=tls.server, require_starttls=True)
    controller = Controller(box, hostname="127.0.0.1", port=box.port, **options)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
