"""Structured logs (api.logs): the formats, the request and operation ids, and redaction.

The canary test runs every logger at DEBUG (botocore, urllib3, asyncio, httpx included) over a
backup, a failing backup, an upload to S3, a download link and a restore, in the real CLI and
in the in-process API, with every secret set to a distinctive canary: none may appear in what
the root handler writes.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from api import logs
from api.config import Settings, get_settings
from api.errors import ConfigError
from api.middleware import AccessLog
from api.operations.engine import Context, Operation, Operations
from api.services import Services
from tests.conftest import Api, App, cloud_settings, free_port, run_server
from tests.s3server import S3Server

# -- canaries: distinctive values that must never reach a log line ---------------------------

DB_PASSWORD = "CanaryDbPw7Q2x9Lm"
JWT_SECRET = "CanaryJwtSecret-4Hq8Zt-0123456789abcdefXYZ"
S3_KEY_ID = "AKIACANARYKEY7Q2X9LM"
S3_SECRET = "CanaryS3Secret/9d4c+1b7e0Zq"
SMTP_PASSWORD = "CanarySmtpPw-5k2Jw8"
WEBHOOK_SECRET = "CanaryWebhookPath-3e6f0a2bC8"
REQUEST_ID = "canary-request.1_A"

VERBOSE = ("botocore", "aiobotocore", "urllib3", "asyncio", "httpx", "httpcore", "uvicorn")


def _redactor(**settings: object) -> logs.Redactor:
    return logs.Redactor(logs.secret_values(Settings(_env_file=None, **settings)))  # type: ignore[call-arg]


# -- redaction, pattern by pattern ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("connecting to postgresql://app:hunter2pw@db:5432/gk_nexus", "hunter2pw"),
        ("GET https://user:s3cr3tpw@example.com/path", "s3cr3tpw"),
        ("postgresql+asyncpg://app:pw%40x9@db/app failed", "pw%40x9"),
        ("header Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
        ("sent Bearer abcDEF0123456789 upstream", "abcDEF0123456789"),
        ("token nxb_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5 used", "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5"),
        ("Cookie: nexus_session=Q2xvc2VkU2Vzc2lvbjEyMzQ; theme=dark", "Q2xvc2VkU2Vzc2lvbjEyMzQ"),
        ("set nexus_session=Q2xvc2VkU2Vzc2lvbjEyMzQ", "Q2xvc2VkU2Vzc2lvbjEyMzQ"),
        (
            "GET /b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20260101"
            "%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=300"
            "&X-Amz-SignedHeaders=host&X-Amz-Signature=0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        ),
        ("X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Fus-east-1", "AKIAEXAMPLE"),
        ("https://s3/b/k?AWSAccessKeyId=AKIAOLDSTYLE&Signature=a%2Bb%3D&Expires=1", "AKIAOLDSTYLE"),
        ("https://s3/b/k?AWSAccessKeyId=AKIAOLDSTYLE&Signature=aXbYcZ0123&Expires=1", "aXbYcZ0123"),
        ("X-Amz-Security-Token=FQoGZXIvYXdzEXAMPLETOKEN&x=1", "FQoGZXIvYXdzEXAMPLETOKEN"),
        ("X-Amz-Security-Token: FQoGZXIvYXdzEXAMPLETOKEN", "FQoGZXIvYXdzEXAMPLETOKEN"),
        (
            "Sending http request: <AWSPreparedRequest stream_output=False, method=PUT, "
            "url=http://127.0.0.1:9/b/k, headers={'User-Agent': b'Botocore/1.40', "
            "'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIADUMPED/20260101/us-east-1/s3/"
            "aws4_request, SignedHeaders=host;x-amz-date, Signature=9a8b7c6d5e4f30211203f4e5', "
            "'X-Amz-Security-Token': b'FQoGSESSIONTOKEN'}>",
            "AKIADUMPED",
        ),
        ("Signature:\n9a8b7c6d5e4f302112030405060708090a0b0c0d", "9a8b7c6d5e4f3021"),
        ("Authorization: AWS4-HMAC-SHA256 Credential=AKIALINE/x, Signature=77aa", "AKIALINE"),
        ("login with password=CorrectHorse9 refused", "CorrectHorse9"),
        ("NEXUS_JWT_SECRET=verylongsecretvalue0123", "verylongsecretvalue0123"),
        ("?token=tok3nValue&page=2", "tok3nValue"),
        ("{'password': 'two words', 'user': 'x'}", "two words"),
        ('{"client_secret": "JSONSecretValue"}', "JSONSecretValue"),
        ("aws_secret_access_key='KwargSecretValue'", "KwargSecretValue"),
        ("/backups/abc/file?expires=1700000000&signature=LinkSignatureValue", "LinkSignature"),
    ],
)
def test_each_pattern_masks_its_secret(text: str, secret: str) -> None:
    redacted = logs.Redactor().redact(text)
    assert secret not in redacted, redacted
    assert logs.MASK in redacted, redacted


@pytest.mark.parametrize(
    "text",
    [
        "backup nightly-2026 completed: 5 tables, 1200 rows",
        "the token: expired",
        "GET /backups/abc/download 200 3ms",
        "Basic auth is not offered",
        "uploaded to s3 as backups/x.tar.gz (key=backups/x.tar.gz)",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert logs.Redactor().redact(text) == text


def test_every_secret_setting_is_masked_by_its_exact_value() -> None:
    hook = f"https://hooks.example.com/services/T0/B0/{WEBHOOK_SECRET}"
    redactor = _redactor(
        database_url=f"postgresql://app:{DB_PASSWORD}@db:5432/app",
        catalog_database_url="postgresql://cat:Cat%2FPass%40word9@db/catalog",
        nexus_jwt_secret=JWT_SECRET,
        backup_s3_access_key_id=S3_KEY_ID,
        backup_s3_secret_access_key=S3_SECRET,
        notify_smtp_password=SMTP_PASSWORD,
        notify_webhook_url=hook,
    )
    text = (
        f"pw {DB_PASSWORD}; jwt {JWT_SECRET}; key {S3_KEY_ID}%2F2026; secret {S3_SECRET} or "
        f"{S3_SECRET.replace('/', '%2F').replace('+', '%2B')}; smtp {SMTP_PASSWORD}; hook "
        f"posted to /services/T0/B0/{WEBHOOK_SECRET}; catalog Cat/Pass@word9 or Cat%2FPass%40word9"
    )
    redacted = redactor.redact(text)
    for secret in (DB_PASSWORD, JWT_SECRET, S3_KEY_ID, S3_SECRET, SMTP_PASSWORD, WEBHOOK_SECRET):
        assert secret not in redacted, (secret, redacted)
    assert "Cat/Pass@word9" not in redacted
    assert "Pass%40word9" not in redacted
    assert "/services/T0/B0/" not in redacted, "a webhook URL's path is its secret"


def test_the_secret_values_cover_every_secret_setting() -> None:
    names = [
        name
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    ]
    secret = {name: f"value-of-{name}-0123456789abcdef" for name in names}
    values = dict(secret)
    values["database_url"] = f"postgresql://u:{secret['database_url']}@db/app"
    values["catalog_database_url"] = f"postgresql://u:{secret['catalog_database_url']}@db/c"
    redactor = _redactor(**values)
    for name in names:
        assert secret[name] not in redactor.redact(f"x {secret[name]} y"), name


def test_short_exact_values_are_not_masked_everywhere() -> None:
    # A three-letter secret would mask every word containing it; startup refuses short ones.
    redactor = _redactor(notify_smtp_password="abc")
    assert redactor.redact("abcdef") == "abcdef"


def test_our_constants_match_the_products() -> None:
    from api.auth.service import TOKEN_PREFIX
    from api.deps import SESSION_COOKIE

    assert logs.TOKEN_PREFIX == TOKEN_PREFIX
    assert logs.SESSION_COOKIE == SESSION_COOKIE


# -- the handler: formats, arguments, tracebacks ----------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger and the loggers a test touches back as they were."""
    root = logging.getLogger()
    names = (*VERBOSE, *logs.CAPPED)
    levels = {name: logging.getLogger(name).level for name in names}
    root_level = root.level
    try:
        yield
    finally:
        logs.uninstall()
        root.setLevel(root_level)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_json_lines_carry_the_fields_and_redact_args_and_tracebacks(
    restore_logging: None,
) -> None:
    out = io.StringIO()
    settings = _settings(log_format="json", log_level="debug", nexus_jwt_secret=JWT_SECRET)
    logs.configure(settings, stream=out)
    log = logging.getLogger("nexus_backup.test")
    request = logs.request_id.set("req-1")
    operation = logs.operation_id.set("op-1")
    try:
        log.debug("connect %s as %r", "postgresql://u:ArgPassword1@h/db", {"token": "DictToken1"})
        try:
            raise RuntimeError(f"failed with secret {JWT_SECRET}")
        except RuntimeError:
            log.exception("it failed at %s", "https://x:TraceUrlPw@h/")
    finally:
        logs.operation_id.reset(operation)
        logs.request_id.reset(request)
    log.info("outside")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [
        "connect postgresql://u:***@h/db as {'token': ***}",
        "it failed at https://x:***@h/",
        "outside",
    ]
    assert {key for line in lines for key in line} == {
        "time",
        "level",
        "logger",
        "message",
        "request_id",
        "operation_id",
        "exc_info",
    }
    assert lines[0]["level"] == "DEBUG"
    assert lines[0]["logger"] == "nexus_backup.test"
    assert lines[0]["time"].endswith("Z")
    assert (lines[1]["request_id"], lines[1]["operation_id"]) == ("req-1", "op-1")
    assert (lines[2]["request_id"], lines[2]["operation_id"]) == (None, None)
    assert "RuntimeError: failed with secret ***" in lines[1]["exc_info"]
    assert JWT_SECRET not in out.getvalue()
    assert "exc_info" not in lines[0]


def test_auto_format_is_json_in_production_and_text_in_development(
    restore_logging: None,
) -> None:
    out = io.StringIO()
    logs.configure(_settings(nexus_env="production"), stream=out)
    logging.getLogger("x").warning("prod")
    assert json.loads(out.getvalue())["message"] == "prod"

    out = io.StringIO()
    logs.configure(_settings(), stream=out)
    request = logs.request_id.set("r9")
    try:
        logging.getLogger("nexus_backup.x").warning("dev %s", "line")
    finally:
        logs.request_id.reset(request)
    text = out.getvalue().strip()
    assert text.endswith(" WARNING nexus_backup.x [r9/-] dev line"), text
    assert len(logging.getLogger().handlers) >= 1
    assert sum(h is logs._installed for h in logging.getLogger().handlers) == 1


def test_configure_replaces_its_own_handler_and_takes_the_level(restore_logging: None) -> None:
    first = logs.configure(_settings(log_level="WARNING"), stream=io.StringIO())
    second = logs.configure(_settings(log_level="DEBUG"), stream=io.StringIO())
    handlers = logging.getLogger().handlers
    assert second in handlers
    assert first not in handlers
    assert logging.getLogger().level == logging.DEBUG
    # SQL, its parameters and rows (hashes, the link-signing key) stay out even at DEBUG.
    assert logging.getLogger("sqlalchemy.engine").level == logging.WARNING
    logs.configure(_settings(log_level="DEBUG"), verbose=False, stream=io.StringIO())
    assert logging.getLogger().level == logging.CRITICAL


def test_an_unknown_log_level_is_a_config_error_naming_the_levels() -> None:
    with pytest.raises(ConfigError, match="LOG_LEVEL 'LOUD' is not a level: use DEBUG"):
        logs.configure(_settings(log_level="loud"), stream=io.StringIO())


def test_uvicorn_logs_through_the_root_handler() -> None:
    from fastapi import FastAPI

    from api.serving import uvicorn_config

    config = uvicorn_config(FastAPI(), _settings(), "127.0.0.1", 8000)
    assert config.log_config is None
    assert config.log_level is None


# -- request ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("abc-123", True),
        ("A.b_C-9", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("has space", False),
        ("new\nline", False),
        ("semi;colon", False),
        ("ünïcode", False),
        ("<script>", False),
        (None, False),
    ],
)
def test_an_incoming_request_id_is_kept_only_when_sane(incoming: str | None, kept: bool) -> None:
    value = logs.sane_request_id(incoming.encode() if incoming is not None else None)
    if kept:
        assert value == incoming
    else:
        assert value != incoming
        assert len(value) == 32
        assert all(c in "0123456789abcdef" for c in value)


async def _echo_app(scope: Any, receive: Any, send: Any) -> None:
    logging.getLogger("nexus_backup.test").info("inside")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": (logs.request_id.get() or "").encode()})


async def test_the_request_id_is_on_every_line_of_the_request_and_in_the_answer(
    restore_logging: None,
) -> None:
    out = io.StringIO()
    logs.configure(_settings(log_format="json"), stream=out)
    transport = httpx.ASGITransport(app=AccessLog(_echo_app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        given = await client.get("/a", headers={"X-Request-ID": REQUEST_ID})
        bad = await client.get("/b", headers={"X-Request-ID": "no way\tjose"})
        none = await client.get("/c")
    assert given.headers["x-request-id"] == REQUEST_ID == given.text
    assert bad.headers["x-request-id"] == bad.text != "no way\tjose"
    assert none.headers["x-request-id"] == none.text
    assert len({given.text, bad.text, none.text}) == 3
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    ids = [
        (line["message"].split()[:2], line["request_id"])
        for line in lines
        if line["logger"].startswith("nexus_backup.")  # not httpx's own line per request
    ]
    assert ids == [
        (["inside"], REQUEST_ID),
        (["GET", "/a"], REQUEST_ID),
        (["inside"], bad.text),
        (["GET", "/b"], bad.text),
        (["inside"], none.text),
        (["GET", "/c"], none.text),
    ]
    assert logs.request_id.get() is None, "the id does not outlive its request"


# -- operation ids ----------------------------------------------------------------------------


class _Logging(Operation[None]):
    kind = "test"

    def __init__(self, name: str, child: Operation[None] | None = None) -> None:
        self.name = name
        self.sub = child

    async def prepare(self, ctx: Context) -> None:
        self.id = f"id-{self.name}"

    async def run(self, ctx: Context) -> None:
        log = logging.getLogger("nexus_backup.test")
        log.info("%s starts", self.name)
        await asyncio.to_thread(log.info, "%s in a thread", self.name)
        if self.sub is not None:
            await ctx.child(self.sub)
        log.info("%s ends", self.name)


async def test_an_operations_lines_carry_its_id_and_a_childs_its_own(
    restore_logging: None,
) -> None:
    out = io.StringIO()
    logs.configure(_settings(log_format="json"), stream=out)
    # No catalog: the operations here only log (the notifier needs the settings alone).
    services = SimpleNamespace(settings=_settings(), sessions=None)
    engine = Operations(cast(Services, services), hooks={})
    request = logs.request_id.set("req-op")
    try:
        await engine.run(_Logging("parent", _Logging("child")))
    finally:
        logs.request_id.reset(request)
    logging.getLogger("nexus_backup.test").info("after")
    seen = [
        (line["message"], line["operation_id"], line["request_id"])
        for line in map(json.loads, out.getvalue().splitlines())
    ]
    assert seen == [
        ("parent starts", "id-parent", "req-op"),
        ("parent in a thread", "id-parent", "req-op"),
        ("child starts", "id-child", "req-op"),
        ("child in a thread", "id-child", "req-op"),
        ("child ends", "id-child", "req-op"),
        ("parent ends", "id-parent", "req-op"),
        ("after", None, None),
    ]


# -- the canary test --------------------------------------------------------------------------


@pytest.fixture
def canary_url(app: App) -> Iterator[str]:
    """DATABASE_URL for `app` logging in as a role whose password is a canary."""
    role = f"canary_{os.getpid()}"
    app.cluster.psql("postgres", f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}';")
    try:
        yield f"postgresql://{role}:{DB_PASSWORD}@127.0.0.1:{app.cluster.port}/{app.database}"
    finally:
        app.cluster.drop_database(app.database)  # the catalog it made is the role's
        app.cluster.psql("postgres", f"DROP ROLE {role};")


def _fake_pg_dump(app: App, folder: Path) -> Path:
    """A PG_BIN_DIR whose pg_dump fails naming the URL it was given, password and all."""
    folder.mkdir()
    script = folder / "pg_dump"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then exec {app.cluster.bin("pg_dump")} --version; fi\n'
        'echo "pg_dump: error: connection to postgresql://$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/'
        '$PGDATABASE failed: PGPASSWORD=$PGPASSWORD" >&2\n'
        "exit 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def _lines(label: str, text: str) -> list[dict[str, Any]]:
    """The JSON log lines of `text`; every other line must be the CLI's own output."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))  # a log line that is not JSON fails here
        else:
            assert line.startswith(("nexus-backup: error:", "backup ", "uploaded ", "restored ")), (
                f"{label}: a line neither JSON nor the CLI's: {line!r}"
            )
    return found


async def test_no_secret_reaches_any_log_line_at_debug(
    app: App, canary_url: str, s3: S3Server, tmp_path: Path, restore_logging: None
) -> None:
    bucket = s3.create_bucket(f"canary-{os.getpid()}")
    cloud = cloud_settings(s3, bucket) | {
        "backup_s3_access_key_id": S3_KEY_ID,  # moto takes any key: these are only canaries
        "backup_s3_secret_access_key": S3_SECRET,
    }
    webhook = f"http://127.0.0.1:{free_port()}/hooks/{WEBHOOK_SECRET}"
    secret_settings: dict[str, object] = {
        "database_url": canary_url,
        "nexus_jwt_secret": JWT_SECRET,
        "notify_smtp_password": SMTP_PASSWORD,
        "notify_webhook_url": webhook,
        "log_level": "DEBUG",
        "log_format": "json",
        **cloud,
    }
    env = {
        key.upper(): (value.get_secret_value() if isinstance(value, SecretStr) else str(value))
        for key, value in secret_settings.items()
    }
    canaries = {
        "database password": DB_PASSWORD,
        "NEXUS_JWT_SECRET": JWT_SECRET,
        "S3 access key id": S3_KEY_ID,
        "S3 secret": S3_SECRET,
        "SMTP password": SMTP_PASSWORD,
        "webhook URL path": WEBHOOK_SECRET,
    }

    def cli(*args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
        return app.cli("-v", *args, check=check, **{**env, **extra})

    # The CLI: a backup uploaded to S3, and a backup whose pg_dump fails naming the URL.
    synced = await asyncio.to_thread(cli, "backup", "-q", "--sync", "canary-synced")
    failed = await asyncio.to_thread(
        cli,
        "backup",
        "-q",
        "canary-failed",
        check=False,
        PG_BIN_DIR=str(_fake_pg_dump(app, tmp_path / "bin")),
    )
    assert failed.returncode == 1, failed.stderr
    listed = await asyncio.to_thread(cli, "list", "--json")
    records = {row["name"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert "uploaded to" in synced.stderr, synced.stderr
    assert records["canary-failed"]["status"] == "failed"
    # What is stored and answered (the record's error, the audit row) is masked like a log line.
    stored = json.dumps(records["canary-failed"])
    assert DB_PASSWORD not in stored, "the failed backup's stored error names the password"
    assert "***" in str(records["canary-failed"].get("errorMessage")), stored
    Path(records["canary-synced"]["filePath"]).unlink()  # so its download link is presigned

    # The API in-process, through the handler, every logger at DEBUG.
    out = io.StringIO()
    settings = app.settings(scheduler_enabled=False, **secret_settings)
    logs.configure(settings, stream=out)
    for name in VERBOSE:
        logging.getLogger(name).setLevel(logging.DEBUG)
    from api.main import create_app

    exposed: dict[str, str] = {}
    fastapi = create_app(settings)
    async with LifespanManager(fastapi) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            api = Api(app, client, fastapi.state.services, fastapi)
            exposed["API token"] = await api.token()
            owner = {"Authorization": f"Bearer {exposed['API token']}"}
            await api.user("canary@example.com", "CanaryLoginPw-8s7d6f")
            exposed["login password"] = "CanaryLoginPw-8s7d6f"
            login = await client.post(
                "/auth/login",
                json={"email": "canary@example.com", "password": "CanaryLoginPw-8s7d6f"},
            )
            assert login.status_code == 200, login.text
            exposed["session cookie"] = login.cookies["nexus_session"]
            client.cookies.clear()
            cookie = {"Cookie": f"nexus_session={exposed['session cookie']}"}
            assert (await client.get("/auth/me", headers=cookie)).status_code == 200

            link = await client.get(
                f"/backups/{records['canary-synced']['id']}/download", headers=cookie
            )
            assert link.status_code == 200, link.text
            url = httpx.URL(link.json()["url"])
            assert "X-Amz-Signature" in str(url), "the link is presigned"
            exposed["presigned signature"] = url.params["X-Amz-Signature"]
            fetched = await asyncio.to_thread(httpx.get, str(url))
            assert fetched.status_code == 200

            started = await client.post(
                "/backups",
                headers={**owner, "X-Request-ID": REQUEST_ID},
                json={"name": "canary-api", "syncToCloud": True},
            )
            assert started.status_code == 202, started.text
            assert started.headers["x-request-id"] == REQUEST_ID
            backup_id = started.json()["id"]
            done = await api.wait_backup(backup_id, owner)
            assert done["status"] == "completed", done
            assert done["isCloudSynced"] is True, done
    logs.uninstall()

    # The CLI again: a restore of the backup whose only copy is in the bucket.
    restored = await asyncio.to_thread(cli, "restore", "-q", "--yes", "canary-synced")

    outputs = {
        "CLI backup --sync": synced.stderr + synced.stdout,
        "CLI failing backup": failed.stderr + failed.stdout,
        "CLI list": listed.stderr,
        "CLI restore": restored.stderr + restored.stdout,
        "in-process API": out.getvalue(),
    }
    for label, text in outputs.items():
        for what, value in {**canaries, **exposed}.items():
            assert value not in text, f"{what} in the {label} output:\n{_around(text, value)}"
    everything = "\n".join(outputs.values())
    assert logs.MASK in everything, "nothing was redacted: were the secrets logged at all?"
    # The whole DATABASE_URL is a secret value: the failure names it masked.
    assert "connection to *** failed: PGPASSWORD=***" in outputs["CLI failing backup"]
    assert "X-Amz-Credential=***" in everything or "Credential=***" in everything

    api_lines = _lines("in-process API", outputs["in-process API"])
    assert len(api_lines) == len(outputs["in-process API"].splitlines())
    request_lines = [line for line in api_lines if line["request_id"] == REQUEST_ID]
    assert any(line["message"].startswith("POST /backups 202") for line in request_lines)
    operation_lines = [line for line in api_lines if line["operation_id"] == backup_id]
    assert any("archived" in line["message"] for line in operation_lines), operation_lines[-5:]
    assert any(line["logger"].startswith(("botocore", "aiobotocore")) for line in operation_lines)
    assert all(line["request_id"] == REQUEST_ID for line in operation_lines), (
        "a background operation keeps the id of the request that started it"
    )

    cli_lines = _lines("CLI backup", synced.stderr)
    synced_id = records["canary-synced"]["id"]
    assert any(
        line["operation_id"] == synced_id and "archived" in line["message"] for line in cli_lines
    )
    for label, run in (("CLI failing backup", failed), ("CLI restore", restored)):
        assert _lines(label, run.stderr), f"{label} logged nothing at DEBUG"


def _around(text: str, value: str) -> str:
    at = text.find(value)
    return text[max(0, at - 300) : at + len(value) + 300]


def test_the_cli_logs_redacted_under_verbose_and_leaves_logging_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from api.cli import main

    @main.command(name="log-a-secret")
    def command() -> None:
        logging.getLogger("nexus_backup.test").warning("using %s", JWT_SECRET)

    monkeypatch.setenv("NEXUS_JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("LOG_FORMAT", "json")
    get_settings.cache_clear()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        result = CliRunner().invoke(main, ["-v", "log-a-secret"])
        quiet = CliRunner().invoke(main, ["log-a-secret"])
    finally:
        main.commands.pop("log-a-secret")
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stderr)["message"] == "using ***"
    assert quiet.stderr == "", "without -v the CLI logs nothing"
    assert (root.handlers, root.level) == (handlers, level)


def test_a_database_urls_name_and_host_stay_readable() -> None:
    redactor = _redactor(
        database_url="postgresql://app:AppPassword9@db.internal:5432/gk_nexus",
        catalog_database_url="postgresql://cat@db.internal/catalog_of_production?password=QueryPw9",
    )
    text = (
        "cannot reach the catalog database at db.internal:5432/gk_nexus or /catalog_of_production"
    )
    assert redactor.redact(text) == text
    assert redactor.redact("AppPassword9 QueryPw9") == "*** ***"


def test_serve_writes_json_lines_uvicorns_included_with_the_request_id(
    app: App, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    with run_server(app, log, LOG_FORMAT="json", NEXUS_JWT_SECRET=JWT_SECRET) as server:
        answer = httpx.get(f"{server.base}/health", headers={"X-Request-ID": REQUEST_ID})
        assert answer.headers["x-request-id"] == REQUEST_ID
        server.output.wait_for(f'"request_id": "{REQUEST_ID}"')
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line is JSON
    assert any(
        line["logger"] == "uvicorn.error" and "Uvicorn running on" in line["message"]
        for line in lines
    )
    assert [line["message"].split()[:3] for line in lines if line["request_id"] == REQUEST_ID] == [
        ["GET", "/health", "200"]
    ]
    assert JWT_SECRET not in log.read_text()


def test_a_header_value_of_backslashes_without_its_closing_quote_is_matched_in_linear_time() -> (
    None
):
    # Two ways to read each backslash would make the failed match exponential (a hang).
    text = "'Authorization': b'" + "\\" * 5000 + "x"
    assert logs.Redactor().redact(text) == text
    assert logs.Redactor().redact(r"'Authorization': 'Bearer a\'b' next") == (
        "'Authorization': 'Bearer ***' next"
    )
