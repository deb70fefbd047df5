"""What production refuses to start with, and what readiness reports: each check alone.

`nexus-backup serve` with NEXUS_ENV=production runs `check_production` first and stops with one
line naming the fix; `nexus-backup check` prints every check's result in any mode; GET
/health/ready (api.health) runs the live ones (catalog, backup folder, pg_dump, storage).

Every check function raises an `AppError` (ConfigError mostly) whose message says what is wrong
and what to do, and returns a short description of what it found when all is well. No message
ever contains a secret.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
from pydantic import SecretStr
from sqlalchemy import text

from api.config import Settings
from api.errors import AppError, ConfigError, SourceError
from api.sources import postgres

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from api.storage.base import Storage

# The placeholders of .env.production.example all start with this.
PLACEHOLDER_PREFIX = "change-me"
# Secrets every scanner tries first, compared lower-case with only letters and digits kept
# (so `Change_Me`, `your-secret-key` and `YOUR_SECRET_KEY` are all caught).
WELL_KNOWN_SECRETS = frozenset(
    {
        "postgres",
        "postgresql",
        "password",
        "password1",
        "password123",
        "passw0rd",
        "pass",
        "secret",
        "secretkey",
        "supersecret",
        "s3cr3t",
        "admin",
        "administrator",
        "root",
        "toor",
        "guest",
        "test",
        "testing",
        "example",
        "default",
        "changeme",
        "changeit",
        "letmein",
        "qwerty",
        "123456",
        "12345678",
        "123456789",
        "minioadmin",
        "minio123",
        "yoursecretkey",
        "mysecretkey",
        "jwtsecret",
        "yourjwtsecret",
        "nexus",
        "gknexus",
        # The AWS documentation's example secret access key.
        "wjalrxutnfemik7mdengbpxrficyexamplekey",
    }
)
JWT_MIN_BYTES = 32
DATABASE_TIMEOUT_SECONDS = 10.0
STORAGE_TIMEOUT_SECONDS = 10.0
# The key the storage check asks about (a HEAD request): it need not exist.
STORAGE_PROBE_KEY = ".nexus-backup-probe"


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: ok True/False, or None when it was skipped; `detail` is what was
    found, or the problem and its fix."""

    name: str
    ok: bool | None
    detail: str
    # False: reported, never a reason to refuse startup (a bucket outage must not stop local
    # backups; the sync is retried).
    fatal: bool = True


def one_line(message: str) -> str:
    return " ".join(message.split())


# -- secrets (pure) ---------------------------------------------------------------------------


def _letters_and_digits(value: str) -> str:
    return "".join(c for c in value.lower() if c.isalnum())


def weak_secret(value: str) -> str | None:
    """Why `value` must not be used as a secret (empty, a placeholder, a well-known default),
    or None."""
    stripped = value.strip()
    if not stripped:
        return "is empty"
    if _letters_and_digits(stripped).startswith(_letters_and_digits(PLACEHOLDER_PREFIX)):
        return "is still the placeholder of .env.production.example"
    if _letters_and_digits(stripped) in WELL_KNOWN_SECRETS:
        return "is a well-known default"
    return None


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def url_password(url: str) -> str | None:
    """The password a postgresql:// URL carries (in the authority or as ?password=), or None
    when it has none (libpq then uses .pgpass, PGPASSFILE, a certificate or peer auth)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True).get("password")
    if query:
        return query[-1]
    if parts.password is not None:
        return unquote(parts.password)
    return None


def _jwt_problem(settings: Settings) -> str | None:
    fix = (
        "set it to the GK-Nexus app's JWT secret, at least 32 random bytes (e.g. "
        "`openssl rand -hex 32`, in both), or leave it unset"
    )
    secret = _secret(settings.nexus_jwt_secret)
    if secret is None:
        if settings.nexus_jwt_issuer or settings.nexus_jwt_audience:
            return (
                "NEXUS_JWT_ISSUER/NEXUS_JWT_AUDIENCE are set but NEXUS_JWT_SECRET is empty: "
                + fix.removesuffix(", or leave it unset")
            )
        return None
    reason = weak_secret(secret)
    if reason is None and len(secret.encode()) < JWT_MIN_BYTES:
        reason = f"is shorter than {JWT_MIN_BYTES} bytes"
    if reason is None and len(set(secret)) < 8:
        reason = "has almost no variety (a repeated character is not a secret)"
    return f"NEXUS_JWT_SECRET {reason}: {fix}" if reason else None


def _storage_problems(settings: Settings) -> list[str]:
    problems = []
    bucket = settings.backup_s3_bucket
    key_id = _secret(settings.backup_s3_access_key_id)
    key = _secret(settings.backup_s3_secret_access_key)
    unset = "or unset BACKUP_S3_* to keep backups local only"
    if not bucket and (key_id or key):
        problems.append(
            f"BACKUP_S3_ACCESS_KEY_ID/BACKUP_S3_SECRET_ACCESS_KEY are set but BACKUP_S3_BUCKET "
            f"is empty: set the bucket, {unset}"
        )
    if bucket and not key_id:
        problems.append(
            f"BACKUP_S3_BUCKET is set but BACKUP_S3_ACCESS_KEY_ID is empty: set the access key "
            f"id of a key for bucket {bucket}, {unset}"
        )
    if bucket and not key:
        problems.append(
            f"BACKUP_S3_BUCKET is set but BACKUP_S3_SECRET_ACCESS_KEY is empty: set the secret "
            f"of the access key for bucket {bucket}, {unset}"
        )
    if key_id and (reason := weak_secret(key_id)) and reason != "is a well-known default":
        problems.append(f"BACKUP_S3_ACCESS_KEY_ID {reason}: set the bucket's access key id")
    if key and (reason := weak_secret(key)):
        problems.append(
            f"BACKUP_S3_SECRET_ACCESS_KEY {reason}: create an access key for the bucket (on "
            "MinIO, not the root user's) and set its secret"
        )
    return problems


def _notify_problems(settings: Settings) -> list[str]:
    problems = []
    password = _secret(settings.notify_smtp_password)
    if settings.notify_smtp_username and not password:
        problems.append(
            "NOTIFY_SMTP_USERNAME is set but NOTIFY_SMTP_PASSWORD is empty: set the SMTP "
            "account's password, or unset NOTIFY_SMTP_USERNAME for a server without login"
        )
    if password and (reason := weak_secret(password)):
        problems.append(f"NOTIFY_SMTP_PASSWORD {reason}: set the SMTP account's real password")
    webhook = _secret(settings.notify_webhook_url)
    if webhook and PLACEHOLDER_PREFIX in webhook.lower():
        problems.append(
            "NOTIFY_WEBHOOK_URL is still the placeholder of .env.production.example: set your "
            "webhook's URL, or leave it empty"
        )
    return problems


def _database_problems(settings: Settings) -> list[str]:
    problems = []
    for setting, url in (
        ("DATABASE_URL", _secret(settings.database_url)),
        ("CATALOG_DATABASE_URL", _secret(settings.catalog_database_url)),
    ):
        password = url_password(url) if url else None
        if password is None:
            continue
        reason = weak_secret(password)
        if reason:
            problems.append(
                f"the password in {setting} {reason}: give the database user a strong password "
                f"(e.g. `openssl rand -hex 24`; ALTER ROLE ... PASSWORD in PostgreSQL) and put "
                f"it in {setting}"
            )
    return problems


def secret_problems(settings: Settings) -> list[str]:
    """Every default, placeholder, empty or short secret, and every configured feature whose
    secret is missing; one line each, naming the setting and the fix. Pure."""
    jwt = _jwt_problem(settings)
    return [
        *([jwt] if jwt else []),
        *_database_problems(settings),
        *_storage_problems(settings),
        *_notify_problems(settings),
    ]


# -- the backup folder --------------------------------------------------------------------------


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _why(error: OSError) -> str:
    return os.strerror(error.errno).lower() if error.errno else str(error)


def check_backup_dir(path: Path) -> str:
    """BACKUP_DIR exists (created when its parent allows) and takes a file: a temporary file is
    really created, written, synced and removed."""
    user = _user()
    fix = f"make it writable by user {user}, or set BACKUP_DIR to a writable folder"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise ConfigError(f"BACKUP_DIR {path} is not a folder: {fix}") from None
    except OSError as error:
        raise ConfigError(
            f"BACKUP_DIR {path} does not exist and cannot be created ({_why(error)}): create "
            f"it, writable by user {user}, or set BACKUP_DIR to a writable folder"
        ) from None
    if not path.is_dir():
        raise ConfigError(f"BACKUP_DIR {path} is not a folder: {fix}")
    try:
        fd, name = tempfile.mkstemp(prefix=".nexus-write-check-", dir=path)
        try:
            os.write(fd, b"nexus-backup write check\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as error:
        raise ConfigError(f"BACKUP_DIR {path} is not writable ({_why(error)}): {fix}") from None
    return f"{path} is writable"


# -- databases ----------------------------------------------------------------------------------


def _where(url: str) -> str:
    env = postgres.libpq_env(url)
    return f"{env.get('PGHOST', 'localhost')}:{env.get('PGPORT', '5432')}/{env['PGDATABASE']}"


def _connect_reason(error: BaseException, password: str | None) -> tuple[str, str]:
    """(why, what to check) for a failed connection; never the password."""
    if isinstance(error, socket.gaierror):
        why = "unknown host"
    elif isinstance(error, TimeoutError):
        why = "timed out"
    elif isinstance(error, ConnectionRefusedError) or "Connect call failed" in str(error):
        why = "connection refused"
    elif isinstance(error, asyncpg.InvalidPasswordError):
        why = "password authentication failed"
    elif isinstance(error, asyncpg.InvalidCatalogNameError):
        why = "the database does not exist"
    elif isinstance(error, OSError) and error.errno:
        why = os.strerror(error.errno).lower()
    else:
        why = one_line(str(error))[:200] or type(error).__name__
    if password:
        why = why.replace(password, "***")
    if "password" in why or "authentication" in why:
        todo = "check the user and password in"
    elif "does not exist" in why:
        todo = "create the database, or check its name in"
    else:
        todo = "check that PostgreSQL is running and reachable, and the host and port in"
    return why, todo


async def _connect(url: str, *, setting: str, what: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(postgres.asyncpg_dsn(url), timeout=DATABASE_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        why, todo = _connect_reason(error, url_password(url))
        raise ConfigError(
            f"cannot reach the {what} at {_where(url)} ({why}): {todo} {setting}"
        ) from None


async def check_database(url: str, *, setting: str, what: str) -> str:
    """The database at `url` accepts a connection (within DATABASE_TIMEOUT_SECONDS)."""
    conn = await _connect(url, setting=setting, what=what)
    try:
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return f"reachable at {_where(url)} (PostgreSQL {version})"


async def catalog_reachable(engine: AsyncEngine, within: float = 5.0) -> str:
    """The catalog answers `SELECT 1` through the service's own pool, within `within` seconds."""
    try:
        async with asyncio.timeout(within), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except AppError:
        raise  # CatalogUnavailable names where and what to check
    except TimeoutError:
        raise ConfigError(
            f"the catalog database did not answer within {within:g} s: check that PostgreSQL "
            "is running and not overloaded"
        ) from None
    except Exception as error:
        raise ConfigError(
            f"the catalog database failed a query ({one_line(str(error))[:200]}): check "
            "CATALOG_DATABASE_URL / DATABASE_URL and the server's log"
        ) from None
    return "answers queries"


# -- pg_dump ------------------------------------------------------------------------------------


async def check_pg_dump(settings: Settings) -> str:
    """The pg_dump that backups will use (api.sources.postgres.find_tool) is at least as new
    as the server of DATABASE_URL."""
    url = settings.require_database_url()
    conn = await _connect(url, setting="DATABASE_URL", what="application database")
    try:
        server_major, server_text = await postgres.server_version(conn)
    finally:
        await conn.close()
    tool = postgres.find_tool("pg_dump", settings, server_major)
    try:
        dump_major, dump_text = await asyncio.to_thread(postgres.tool_version, tool)
    except (OSError, subprocess.SubprocessError, SourceError) as error:
        raise ConfigError(
            f"cannot run {tool} --version ({one_line(str(error))[:200]}): install "
            f"postgresql-client-{server_major} or set PG_BIN_DIR to its bin folder"
        ) from None
    try:
        postgres.check_pg_dump_version(dump_major, server_major)
    except SourceError as error:
        raise ConfigError(error.detail) from None
    return f"{tool} {dump_text} can dump server {server_text}"


# -- cloud storage ------------------------------------------------------------------------------


async def check_storage(storage: Storage, within: float = STORAGE_TIMEOUT_SECONDS) -> str:
    """The bucket answers (a HEAD request for STORAGE_PROBE_KEY) within `within` seconds."""
    try:
        async with asyncio.timeout(within):
            await storage.stat(STORAGE_PROBE_KEY)
    except TimeoutError:
        raise ConfigError(
            f"the {storage.name} storage did not answer within {within:g} s: check "
            "BACKUP_S3_ENDPOINT and the network"
        ) from None
    return f"the {storage.name} bucket answers"


# -- running them -------------------------------------------------------------------------------


async def run_check(name: str, check: Callable[[], Awaitable[str] | str]) -> CheckResult:
    """Run one check; its AppError becomes a failed result with the error's one line."""
    try:
        outcome = check()
        detail = await outcome if not isinstance(outcome, str) else outcome
    except AppError as error:
        return CheckResult(name, False, one_line(error.detail))
    return CheckResult(name, True, detail)


async def run_checks(settings: Settings, *, storage: bool = True) -> list[CheckResult]:
    """Every startup check, in order, each run even when an earlier one failed (pg_dump is
    skipped when the application database is unreachable). `storage`: also ask the bucket,
    when one is configured (reported, never a reason to refuse startup)."""
    results = [CheckResult("secrets", False, problem) for problem in secret_problems(settings)]
    if not results:
        results.append(CheckResult("secrets", True, "no default, empty or short secret"))
    results.append(
        await run_check(
            "backup_dir", lambda: asyncio.to_thread(check_backup_dir, settings.backup_dir)
        )
    )
    if settings.database_url is None:
        results.append(await run_check("database", settings.require_database_url))
        return results
    catalog_setting = "CATALOG_DATABASE_URL" if settings.catalog_database_url else "DATABASE_URL"
    results.append(
        await run_check(
            "catalog",
            lambda: check_database(
                settings.catalog_url(), setting=catalog_setting, what="catalog database"
            ),
        )
    )
    database = results[-1]
    if not settings.catalog_is_app_database:
        database = await run_check(
            "database",
            lambda: check_database(
                settings.require_database_url(),
                setting="DATABASE_URL",
                what="application database",
            ),
        )
        results.append(database)
    if database.ok:
        results.append(await run_check("pg_dump", lambda: check_pg_dump(settings)))
    else:
        results.append(CheckResult("pg_dump", None, "skipped: the database is unreachable"))
    if storage:
        results.append(await _storage_result(settings))
    return results


async def _storage_result(settings: Settings) -> CheckResult:
    from api.storage import service as storage_service

    if not settings.cloud_configured:
        return CheckResult("storage", None, "not configured (backups stay local)")
    try:
        store = storage_service.from_settings(settings)
    except AppError as error:
        return CheckResult("storage", False, one_line(error.detail), fatal=False)
    assert store is not None
    result = await run_check("storage", lambda: check_storage(store))
    return CheckResult(result.name, result.ok, result.detail, fatal=False)


async def check_production(settings: Settings) -> None:
    """Refuse (ConfigError, one line) what production must not start with: a default, empty or
    short secret, an unreachable database, an unwritable BACKUP_DIR, a pg_dump older than the
    server. The first problem is named; the others are counted."""
    results = await run_checks(settings, storage=False)
    problems = [r for r in results if r.ok is False and r.fatal]
    if not problems:
        return
    more = len(problems) - 1
    suffix = f" (and {more} more: run `nexus-backup check`)" if more else ""
    raise ConfigError(problems[0].detail + suffix)


__all__ = [
    "CheckResult",
    "catalog_reachable",
    "check_backup_dir",
    "check_database",
    "check_pg_dump",
    "check_production",
    "check_storage",
    "run_check",
    "run_checks",
    "secret_problems",
    "url_password",
    "weak_secret",
]
