"""One error hierarchy (api/errors.py): every expected failure is an AppError, the API maps it
once (errors.install) and the CLI reports it once, as one line that says what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from sqlalchemy import text

from api import errors
from api.cli import main
from api.db import make_engine
from api.storage import base
from api.storage.s3 import S3Storage
from nexus_dev.cluster import LocalCluster
from tests.conftest import free_port

SECRET = "s3cr3t-never-shown"


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m api ARGS` as an operator runs it, with only the settings given here."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "BACKUP_"))}
    environment.update(
        UPLOADS_DIR=str(tmp_path / "uploads"),
        BACKUP_DIR=str(tmp_path / "backups"),
        APP_VERSION="1.0.0",
    )
    environment.pop("CATALOG_DATABASE_URL", None)
    environment.update(env)
    (tmp_path / "uploads").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "api", *args],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("args", [("list",), ("backup",), ("verify", "x"), ("serve",)])
def test_an_unreachable_catalog_is_one_line_naming_the_setting(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    port = free_port()
    url = f"postgresql://nexus:{SECRET}@127.0.0.1:{port}/app"
    result = _cli(tmp_path, *args, DATABASE_URL=url)
    lines = result.stderr.splitlines()
    assert result.returncode == 1, result.stderr
    assert lines == [
        f"nexus-backup: error: cannot reach the catalog database at 127.0.0.1:{port}/app "
        "(connection refused): check DATABASE_URL and that PostgreSQL is running"
    ], result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_an_unreachable_separate_catalog_names_catalog_database_url(tmp_path: Path) -> None:
    port = free_port()
    result = _cli(
        tmp_path,
        "list",
        DATABASE_URL=f"postgresql://nexus:x@127.0.0.1:{free_port()}/app",
        CATALOG_DATABASE_URL=f"postgresql://nexus:{SECRET}@127.0.0.1:{port}/catalog",
    )
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"127.0.0.1:{port}/catalog" in result.stderr
    assert "check CATALOG_DATABASE_URL" in result.stderr
    assert SECRET not in result.stderr


def test_a_wrong_catalog_password_says_to_check_it_and_never_shows_it(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    url = f"postgresql://nexus:{SECRET}@127.0.0.1:{cluster.port}/postgres"
    result = _cli(tmp_path, "list", DATABASE_URL=url)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"127.0.0.1:{cluster.port}/postgres" in result.stderr
    assert "check the user and password in DATABASE_URL" in result.stderr
    assert SECRET not in result.stderr


@pytest.fixture
def explode() -> Iterator[None]:
    """A command that fails in a way nobody planned for."""

    @click.command(name="explode")
    def command() -> None:
        raise RuntimeError("the flux\ncapacitor broke")

    main.add_command(command)
    try:
        yield
    finally:
        main.commands.pop("explode")


def test_an_unexpected_error_is_one_line_pointing_at_verbose(explode: None) -> None:
    result = CliRunner().invoke(main, ["explode"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "nexus-backup: error: internal error: RuntimeError: the flux capacitor broke; "
        "run with -v for the traceback"
    ]


def test_an_unexpected_error_shows_the_traceback_under_verbose(explode: None) -> None:
    result = CliRunner().invoke(main, ["-v", "explode"])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert 'raise RuntimeError("the flux\\ncapacitor broke")' in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "nexus-backup: error: internal error: RuntimeError: the flux capacitor broke"
    )


def test_storage_error_is_the_one_app_error_and_still_importable_from_storage() -> None:
    assert base.StorageError is errors.StorageError
    assert issubclass(base.StorageError, errors.AppError)
    assert errors.StorageError("x").status_code == 503


def _app() -> FastAPI:
    """A bare app with only the handlers of errors.install: what they answer, nothing else."""
    app = FastAPI()
    errors.install(app, max_body_bytes=1024)
    bucket = S3Storage(
        endpoint=f"http://127.0.0.1:{free_port()}",
        bucket="backups",
        access_key_id="AKIAEXAMPLE",
        secret_access_key=SECRET,
        region="us-east-1",
        provider="minio",
    )
    catalog = f"postgresql://nexus:{SECRET}@127.0.0.1:{free_port()}/catalog"

    @app.get("/bucket")
    async def list_bucket() -> int:
        return len(await bucket.list(""))

    @app.get("/catalog")
    async def query_catalog() -> int:
        engine = make_engine(catalog, "DATABASE_URL")
        try:
            async with engine.connect() as connection:
                return int((await connection.execute(text("SELECT 1"))).scalar_one())
        finally:
            await engine.dispose()

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError(f"internal state with {SECRET}")

    return app


async def _get(path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.get(path)


async def test_an_unreachable_bucket_answers_503_saying_what_to_check() -> None:
    response = await _get("/bucket")
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "StorageError"
    assert "cannot reach" in body["detail"]
    assert "check BACKUP_S3_ENDPOINT" in body["detail"]
    assert SECRET not in response.text


async def test_an_unreachable_catalog_answers_503_naming_the_setting() -> None:
    response = await _get("/catalog")
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "CatalogUnavailable"
    assert "(connection refused): check DATABASE_URL" in body["detail"]
    assert SECRET not in response.text


async def test_the_installed_handlers_give_unknown_routes_the_error_shape() -> None:
    response = await _get("/nowhere")
    assert response.status_code == 404
    assert response.json() == {"error": "NotFound", "detail": "no route GET /nowhere: see /docs"}


async def test_an_unexpected_error_is_a_500_without_internals() -> None:
    response = await _get("/bug")
    assert response.status_code == 500
    assert response.json() == {
        "error": "InternalError",
        "detail": "unexpected server error; the log has the details",
    }


async def test_a_connection_the_server_dropped_is_catalog_unavailable(
    cluster: LocalCluster,
) -> None:
    engine = make_engine(cluster.url("postgres"))
    try:
        async with engine.connect() as connection:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            cluster.psql("postgres", f"SELECT pg_terminate_backend({int(pid)})")
            with pytest.raises(errors.CatalogUnavailable) as raised:
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert raised.value.status_code == 503
    assert f"lost the connection to the catalog database at 127.0.0.1:{cluster.port}/postgres" in (
        raised.value.detail
    )
    assert cluster.password not in raised.value.detail
