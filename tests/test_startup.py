"""Startup validation (api/startup.py): with NEXUS_ENV=production, `nexus-backup serve` refuses a
default, empty or short secret, an unreachable database, an unwritable BACKUP_DIR and a pg_dump
older than the server, with one line naming the fix and exit code 1; development starts as
before; `nexus-backup check` prints every check in any mode. Real CLI, real PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api import startup
from api.config import Settings
from api.errors import ConfigError
from tests.conftest import App, free_port, run_server
from tests.probes import OLD_PG_DUMP, old_pg_bin, readonly_mount
from tests.s3server import S3Server

PREFIX = "nexus-backup: error: "


@pytest.fixture
def readonly() -> Iterator[Path]:
    with readonly_mount() as folder:
        yield folder


def _refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused `serve` printed (and nothing else, no traceback, exit 1)."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    assert lines[0].startswith(PREFIX), lines
    assert result.stdout == "", result.stdout
    return lines[0].removeprefix(PREFIX)


def _serve(app: App, **env: str) -> str:
    return _refusal(app.cli("serve", "--port", str(free_port()), check=False, **env))


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# -- secrets: pure ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "change-me",
        "change-me-to-a-long-random-value-0123456789",
        "CHANGE_ME_please",
        "postgres",
        "password",
        "Secret",
        "admin",
        "minioadmin",
        "your_secret_key",
        "YOUR-SECRET-KEY",
        "changeme",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ],
)
def test_a_default_placeholder_or_empty_secret_is_weak(value: str) -> None:
    assert startup.weak_secret(value) is not None, value


@pytest.mark.parametrize("value", ["kT9#vq2LmX8pZr4w", "postgres-prod-7f3a9c", "s3cr3t-but-longer"])
def test_a_real_looking_secret_is_not_weak(value: str) -> None:
    assert startup.weak_secret(value) is None


def test_good_settings_have_no_secret_problem() -> None:
    settings = _settings(
        database_url="postgresql://app:Zq8wLk2pXv9r@db:5432/gk_nexus",
        nexus_jwt_secret="f" * 8 + "0123456789abcdef0123456789abcdef",
        backup_s3_bucket="backups",
        backup_s3_access_key_id="AKIAREALKEY000000001",
        backup_s3_secret_access_key="Tq2Vh7Xs9kLp3Wm6Zr8Nc4Bd1Fg5Jy0",
        notify_smtp_username="alerts@example.org",
        notify_smtp_password="Gm7-real-smtp-pass",
    )
    assert startup.secret_problems(settings) == []


def test_a_url_without_password_is_not_a_secret_problem() -> None:
    # libpq then uses .pgpass, PGPASSFILE, a certificate or peer authentication.
    settings = _settings(database_url="postgresql://app@db:5432/gk_nexus")
    assert startup.secret_problems(settings) == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"nexus_jwt_secret": "c" * 40}, "NEXUS_JWT_SECRET has almost no variety"),
        ({"nexus_jwt_secret": "tooshort-but-random-9"}, "NEXUS_JWT_SECRET is shorter than 32"),
        ({"nexus_jwt_issuer": "gk-nexus"}, "NEXUS_JWT_SECRET is empty"),
        (
            {"database_url": "postgresql://app:@db/gk"},
            "the password in DATABASE_URL is empty",
        ),
        (
            {"database_url": "postgresql://app@db/gk?password=postgres"},
            "the password in DATABASE_URL is a well-known default",
        ),
        ({"backup_s3_access_key_id": "AKIAREALKEY000000001"}, "BACKUP_S3_BUCKET is empty"),
        (
            {"backup_s3_bucket": "b", "backup_s3_secret_access_key": "Tq2Vh7Xs9kLp3Wm6Zr8N"},
            "BACKUP_S3_ACCESS_KEY_ID is empty",
        ),
        ({"notify_webhook_url": "https://hooks.example/change-me"}, "NOTIFY_WEBHOOK_URL"),
    ],
)
def test_each_secret_problem_names_the_setting(values: dict[str, object], expected: str) -> None:
    problems = startup.secret_problems(_settings(**values))
    assert len(problems) == 1, problems
    assert expected in problems[0], problems


# -- the backup folder --------------------------------------------------------------------------


def test_a_missing_backup_dir_is_created(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "backups"
    assert "is writable" in startup.check_backup_dir(folder)
    assert folder.is_dir()
    assert list(folder.iterdir()) == [], "the write check left its file behind"


def test_a_read_only_backup_dir_is_refused(readonly: Path) -> None:
    with pytest.raises(ConfigError, match=r"is not writable \(read-only file system\)"):
        startup.check_backup_dir(readonly)


def test_a_backup_dir_that_cannot_be_created_is_refused(readonly: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist and cannot be created"):
        startup.check_backup_dir(readonly / "backups")


def test_a_backup_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        startup.check_backup_dir(tmp_path / "file")


# -- each check alone, against the real cluster ----------------------------------------------------


def test_the_checks_pass_on_a_good_setup(app: App) -> None:
    results = asyncio.run(startup.run_checks(app.settings()))
    by_name = {r.name: r for r in results}
    assert [r.name for r in results] == ["secrets", "backup_dir", "catalog", "pg_dump", "storage"]
    assert all(r.ok for r in results if r.name != "storage"), results
    assert by_name["storage"].ok is None
    assert "can dump server" in by_name["pg_dump"].detail
    asyncio.run(startup.check_production(app.settings()))  # raises nothing


def test_an_old_pg_dump_is_refused_with_the_client_to_install(app: App, tmp_path: Path) -> None:
    settings = app.settings(pg_bin_dir=old_pg_bin(tmp_path / "bin"))
    major = app.sql("SHOW server_version_num").strip()[:2]
    with pytest.raises(ConfigError) as refused:
        asyncio.run(startup.check_pg_dump(settings))
    assert refused.value.detail == (
        f"pg_dump 9 cannot dump server {major}: install postgresql-client-{major} or set "
        "PG_BIN_DIR to its bin folder"
    )


# -- serve in production: one line, exit 1 ------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"NEXUS_JWT_SECRET": "change-me-jwt-0123456789abcdefghijklmnop"},
            "NEXUS_JWT_SECRET is still the placeholder of .env.production.example: set it to "
            "the GK-Nexus app's JWT secret, at least 32 random bytes (e.g. `openssl rand -hex "
            "32`, in both), or leave it unset",
        ),
        ({"NEXUS_JWT_SECRET": "a-short-one"}, "NEXUS_JWT_SECRET must be at least 32 bytes"),
        ({"NEXUS_JWT_SECRET": "x" * 48}, "NEXUS_JWT_SECRET has almost no variety"),
        (
            {"BACKUP_S3_BUCKET": "backups", "BACKUP_S3_ACCESS_KEY_ID": "AKIAREALKEY000000001"},
            "BACKUP_S3_BUCKET is set but BACKUP_S3_SECRET_ACCESS_KEY is empty",
        ),
        (
            {
                "BACKUP_S3_BUCKET": "backups",
                "BACKUP_S3_ACCESS_KEY_ID": "AKIAREALKEY000000001",
                "BACKUP_S3_SECRET_ACCESS_KEY": "minioadmin",
            },
            "BACKUP_S3_SECRET_ACCESS_KEY is a well-known default",
        ),
        (
            {"NOTIFY_SMTP_HOST": "smtp.example.org", "NOTIFY_SMTP_USERNAME": "alerts"},
            "NOTIFY_SMTP_USERNAME is set but NOTIFY_SMTP_PASSWORD is empty",
        ),
        (
            {"NOTIFY_SMTP_USERNAME": "alerts", "NOTIFY_SMTP_PASSWORD": "change-me-smtp-8f2k"},
            "NOTIFY_SMTP_PASSWORD is still the placeholder",
        ),
    ],
    ids=[
        "jwt-placeholder",
        "jwt-short",
        "jwt-repeated",
        "bucket-without-secret",
        "s3-default-secret",
        "smtp-without-password",
        "smtp-placeholder",
    ],
)
def test_serve_refuses_a_weak_secret_in_production(
    app: App, env: dict[str, str], expected: str
) -> None:
    line = _serve(app, NEXUS_ENV="production", **env)
    assert line.startswith(expected), line
    for name, value in env.items():
        if "SECRET" in name or "PASSWORD" in name:
            assert value not in line, "the refusal printed the secret itself"


@pytest.mark.parametrize("setting", ["DATABASE_URL", "CATALOG_DATABASE_URL"])
def test_serve_refuses_a_default_database_password_in_production(app: App, setting: str) -> None:
    url = f"postgresql://nexus:change-me-db-7c1e@127.0.0.1:{app.cluster.port}/{app.database}"
    line = _serve(app, NEXUS_ENV="production", **{setting: url})
    assert line.startswith(
        f"the password in {setting} is still the placeholder of .env.production.example: give "
        "the database user a strong password"
    ), line
    assert "change-me-db-7c1e" not in line


def test_serve_names_the_first_problem_and_counts_the_others(app: App) -> None:
    line = _serve(
        app,
        NEXUS_ENV="production",
        NEXUS_JWT_SECRET="change-me-jwt-0123456789abcdefghijklmnop",
        NOTIFY_SMTP_USERNAME="alerts",
    )
    assert line.startswith("NEXUS_JWT_SECRET is still the placeholder"), line
    assert line.endswith("(and 1 more: run `nexus-backup check`)"), line


def test_serve_refuses_an_unreachable_database_in_production(app: App) -> None:
    port = free_port()  # nothing listens there
    line = _serve(
        app, NEXUS_ENV="production", DATABASE_URL=f"postgresql://nexus@127.0.0.1:{port}/gk"
    )
    assert line == (
        f"cannot reach the catalog database at 127.0.0.1:{port}/gk (connection refused): check "
        "that PostgreSQL is running and reachable, and the host and port in DATABASE_URL"
    )


def test_serve_refuses_an_unreachable_separate_catalog_in_production(app: App) -> None:
    port = free_port()
    line = _serve(
        app,
        NEXUS_ENV="production",
        CATALOG_DATABASE_URL=f"postgresql://nexus@127.0.0.1:{port}/catalog",
    )
    assert line.startswith(
        f"cannot reach the catalog database at 127.0.0.1:{port}/catalog (connection refused)"
    ), line
    assert line.endswith("CATALOG_DATABASE_URL"), line


def test_serve_refuses_a_wrong_database_password_in_production(app: App) -> None:
    url = f"postgresql://nexus:Wrong-Pass-93kd@127.0.0.1:{app.cluster.port}/{app.database}"
    line = _serve(app, NEXUS_ENV="production", DATABASE_URL=url)
    assert "password authentication failed" in line, line
    assert line.endswith("check the user and password in DATABASE_URL"), line
    assert "Wrong-Pass-93kd" not in line


def test_serve_refuses_a_read_only_backup_dir_in_production(app: App, readonly: Path) -> None:
    line = _serve(app, NEXUS_ENV="production", BACKUP_DIR=str(readonly))
    assert line == (
        f"BACKUP_DIR {readonly} is not writable (read-only file system): make it writable by "
        "user root, or set BACKUP_DIR to a writable folder"
    )


def test_serve_refuses_a_backup_dir_it_cannot_create_in_production(
    app: App, readonly: Path
) -> None:
    line = _serve(app, NEXUS_ENV="production", BACKUP_DIR=str(readonly / "backups"))
    assert line.startswith(
        f"BACKUP_DIR {readonly / 'backups'} does not exist and cannot be created (read-only "
        "file system)"
    ), line


def test_serve_refuses_an_older_pg_dump_in_production(app: App, tmp_path: Path) -> None:
    major = app.sql("SHOW server_version_num").strip()[:2]
    line = _serve(app, NEXUS_ENV="production", PG_BIN_DIR=str(old_pg_bin(tmp_path / "bin")))
    assert line == (
        f"pg_dump 9 cannot dump server {major}: install postgresql-client-{major} or set "
        "PG_BIN_DIR to its bin folder"
    )


def test_serve_in_production_starts_with_good_settings(app: App, tmp_path: Path) -> None:
    with run_server(app, tmp_path / "serve.log", NEXUS_ENV="production") as server:
        ready = httpx.get(f"{server.base}/health/ready", timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ok"}


def test_development_keeps_serving_what_production_refuses(app: App, tmp_path: Path) -> None:
    # A placeholder secret long enough for check_serving: development does not look further.
    placeholder = "change-me-jwt-0123456789abcdefghijklmnop"
    with run_server(app, tmp_path / "serve.log", NEXUS_JWT_SECRET=placeholder) as server:
        assert server.output.count("Uvicorn running on") == 1


# -- nexus-backup check -------------------------------------------------------------------------


def _lines(output: str) -> list[tuple[str, str]]:
    return [tuple(line.split(maxsplit=2)[:2]) for line in output.splitlines()]  # type: ignore[misc]


def test_check_prints_every_check_and_exits_0_when_all_pass(app: App) -> None:
    result = app.cli("check")
    assert _lines(result.stdout)[:5] == [
        ("ok", "secrets"),
        ("ok", "backup_dir"),
        ("ok", "catalog"),
        ("ok", "pg_dump"),
        ("skipped", "storage"),
    ], result.stdout
    assert "all checks passed (NEXUS_ENV=development" in result.stdout
    assert OLD_PG_DUMP not in result.stdout


def test_check_reports_each_problem_and_exits_1_in_any_mode(
    app: App, tmp_path: Path, readonly: Path
) -> None:
    result = app.cli(
        "check",
        check=False,
        BACKUP_DIR=str(readonly),
        PG_BIN_DIR=str(old_pg_bin(tmp_path / "bin")),
        NOTIFY_SMTP_USERNAME="alerts",
    )
    assert result.returncode == 1, result
    assert _lines(result.stdout) == [
        ("problem", "secrets"),
        ("problem", "backup_dir"),
        ("ok", "catalog"),
        ("problem", "pg_dump"),
        ("skipped", "storage"),
    ], result.stdout
    assert result.stderr.strip() == f"{PREFIX}3 problems found (see above)"


def test_check_skips_pg_dump_when_the_database_is_unreachable(app: App) -> None:
    port = free_port()
    result = app.cli(
        "check",
        check=False,
        NEXUS_ENV="production",
        CATALOG_DATABASE_URL=app.url,
        DATABASE_URL=f"postgresql://nexus@127.0.0.1:{port}/gk",
    )
    assert result.returncode == 1, result
    assert _lines(result.stdout)[2:5] == [
        ("ok", "catalog"),
        ("problem", "database"),
        ("skipped", "pg_dump"),
    ], result.stdout


def test_check_warns_about_an_unreachable_bucket_without_failing(app: App, s3: S3Server) -> None:
    # A bucket outage never stops local backups (the sync is retried): a warning, exit 0.
    result = app.cli(
        "check",
        BACKUP_S3_ENDPOINT=s3.endpoint,
        BACKUP_S3_BUCKET="no-such-bucket",
        BACKUP_S3_ACCESS_KEY_ID=s3.access_key,
        BACKUP_S3_SECRET_ACCESS_KEY=s3.secret_key,
        BACKUP_S3_REGION="us-east-1",
    )
    storage = result.stdout.splitlines()[4]
    assert storage.split()[:2] == ["warning", "storage"], result.stdout
    assert "bucket no-such-bucket does not exist" in storage, storage
