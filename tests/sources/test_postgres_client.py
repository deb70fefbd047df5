"""How the PostgreSQL client tools are called (api.sources.postgres): pg_dump must be at least
the server's major version, and the password reaches libpq only through PGPASSWORD and is
redacted from every URL that is shown.
"""

from __future__ import annotations

import pytest

from api.errors import SourceError
from api.sources.postgres import check_pg_dump_version, libpq_env, redact


def test_check_pg_dump_version_refuses_an_older_pg_dump_naming_the_fix() -> None:
    with pytest.raises(SourceError) as caught:
        check_pg_dump_version(14, 15)
    message = caught.value.detail
    assert "pg_dump 14" in message, message
    assert "server 15" in message, message
    assert "postgresql-client-15" in message, "the message must name the package to install"


@pytest.mark.parametrize(("dump_major", "server_major"), [(15, 15), (16, 15), (17, 12)])
def test_check_pg_dump_version_accepts_a_same_or_newer_pg_dump(
    dump_major: int, server_major: int
) -> None:
    check_pg_dump_version(dump_major, server_major)


PASSWORD = "S3cr@t:pw/x"
URL = "postgresql://app_user:S3cr%40t%3Apw%2Fx@db.example.com:5433/gk_nexus?sslmode=require"


def test_libpq_env_puts_the_password_only_in_pgpassword() -> None:
    env = libpq_env(URL)

    assert env["PGPASSWORD"] == PASSWORD, "the password must be percent-decoded into PGPASSWORD"
    leaks = {k: v for k, v in env.items() if k != "PGPASSWORD" and "S3cr" in v}
    assert leaks == {}, f"the password leaked into {leaks}"
    assert env["PGHOST"] == "db.example.com"
    assert env["PGPORT"] == "5433"
    assert env["PGUSER"] == "app_user"
    assert env["PGDATABASE"] == "gk_nexus"
    assert env["PGSSLMODE"] == "require"


def test_libpq_env_reads_the_asyncpg_scheme_too() -> None:
    env = libpq_env(URL.replace("postgresql://", "postgresql+asyncpg://"))
    assert env["PGPASSWORD"] == PASSWORD
    assert env["PGHOST"] == "db.example.com"


@pytest.mark.parametrize("url", [URL, URL.replace("postgresql://", "postgresql+asyncpg://")])
def test_redact_hides_the_password_and_keeps_the_rest(url: str) -> None:
    shown = redact(url)

    assert "S3cr" not in shown, f"redact() leaked the password: {shown}"
    assert ":***@" in shown
    assert "app_user" in shown
    assert "db.example.com:5433/gk_nexus" in shown


def test_redact_leaves_a_url_without_password_alone() -> None:
    url = "postgresql://app_user@db.example.com/gk_nexus"
    assert redact(url) == url


def test_redact_hides_a_password_given_as_a_query_parameter() -> None:
    url = "postgresql://app_user@db.example.com/gk_nexus?password=hunter2secret"
    assert libpq_env(url)["PGPASSWORD"] == "hunter2secret"

    assert "hunter2secret" not in redact(url), f"redact() leaked the password: {redact(url)}"
