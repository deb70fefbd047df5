"""`make run`: a throwaway PostgreSQL under .data/ with demo data, then `nexus-backup serve`.

`python -m nexus_dev serve` is the only way in: the service itself (`nexus-backup serve`) never
starts a demo, it refuses to start without DATABASE_URL.

The demo is set up the stronger way (docs/CATALOG.md): the app database `gk_nexus` is owned by the
non-superuser role `nexus_app` (CREATEDB, for deep verify), and the catalog lives in its own
database `nexus_catalog`, owned by the role `nexus_catalog`, which `nexus_app` may not connect to.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import sys
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

import click

from nexus_dev.cluster import HOST, SUPERUSER, LocalCluster, quote_ident
from nexus_dev.demo import seed_demo

DEMO_DATABASE = "gk_nexus"
DEMO_APP_VERSION = "1.0.0"
APP_ROLE = "nexus_app"
CATALOG_ROLE = "nexus_catalog"
CATALOG_DATABASE = "nexus_catalog"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _role(cluster: LocalCluster, folder: Path, role: str, options: str) -> str:
    """Create or update login role `role`; its password is kept in folder/<role>.password."""
    path = folder / f"{role}.password"
    try:
        password = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        password = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(password + "\n")
    exists = cluster.psql("postgres", f"SELECT 1 FROM pg_roles WHERE rolname = {_literal(role)}")
    verb = "ALTER" if exists.strip() else "CREATE"
    cluster.psql(
        "postgres",
        f"{verb} ROLE {quote_ident(role)} {options} NOSUPERUSER PASSWORD {_literal(password)};",
    )
    return password


def _owner(cluster: LocalCluster, database: str) -> str | None:
    found = cluster.psql(
        "postgres",
        f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = {_literal(database)}",
    ).strip()
    return found or None


def _database(cluster: LocalCluster, name: str, owner: str) -> None:
    """Database `name` owned by `owner`, which alone (and superusers) may connect to it."""
    if _owner(cluster, name) is not None:
        return
    cluster.psql(
        "postgres",
        f"CREATE DATABASE {quote_ident(name)} OWNER {quote_ident(owner)};"
        f"REVOKE ALL ON DATABASE {quote_ident(name)} FROM PUBLIC;"
        f"GRANT CONNECT, TEMPORARY ON DATABASE {quote_ident(name)} TO {quote_ident(owner)};",
    )


def _url(cluster: LocalCluster, role: str, password: str, database: str) -> str:
    return (
        f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}@{HOST}:{cluster.port}/"
        f"{quote(database, safe='')}"
    )


async def start(folder: Path) -> LocalCluster:
    """Start (or reuse) the demo cluster and data; export its settings; write demo.env."""
    folder = folder.absolute()
    folder.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(folder / "pg")
    cluster.start()
    catalog_url: str | None = None
    if _owner(cluster, DEMO_DATABASE) == SUPERUSER:
        # Made by an older version: catalog inside, as the superuser. `make clean` renews it.
        url = cluster.url(DEMO_DATABASE)
        click.echo(
            f"embedded demo: {DEMO_DATABASE} predates the separate catalog database; "
            "`make clean` and start again to get it",
            err=True,
        )
    else:
        app_password = _role(cluster, folder, APP_ROLE, "LOGIN CREATEDB")
        catalog_password = _role(cluster, folder, CATALOG_ROLE, "LOGIN")
        _database(cluster, DEMO_DATABASE, APP_ROLE)
        _database(cluster, CATALOG_DATABASE, CATALOG_ROLE)
        url = _url(cluster, APP_ROLE, app_password, DEMO_DATABASE)
        catalog_url = _url(cluster, CATALOG_ROLE, catalog_password, CATALOG_DATABASE)
    uploads = folder / "uploads"
    summary = await seed_demo(url, uploads)
    settings = {
        "DATABASE_URL": url,
        **({"CATALOG_DATABASE_URL": catalog_url} if catalog_url else {}),
        "UPLOADS_DIR": os.environ.get("UPLOADS_DIR", str(uploads)),
        "BACKUP_DIR": os.environ.get("BACKUP_DIR", str(Path("backups").absolute())),
        "APP_VERSION": os.environ.get("APP_VERSION", DEMO_APP_VERSION),
    }
    os.environ.update(settings)
    env_file = folder / "demo.env"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("# Settings of the embedded demo started by `make run`.\n")
        for key, value in settings.items():
            handle.write(f"export {key}={shlex.quote(value)}\n")
    rows = sum(summary.tables.values())
    click.echo(
        f"embedded demo: PostgreSQL on 127.0.0.1:{cluster.port}, database {DEMO_DATABASE} "
        f"({rows} rows), uploads in {settings['UPLOADS_DIR']} ({summary.files} files), "
        f"backups in {settings['BACKUP_DIR']}\n"
        f"to use the scripts against it, in another shell:\n"
        f"  source {env_file}\n"
        f"  scripts/backup.sh\n"
        f"  scripts/restore.sh backups/<name>.tar.gz",
        err=True,
    )
    return cluster


def _fail(message: str) -> NoReturn:
    click.echo(f"nexus_dev: error: {message}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Development helpers for Nexus Backup: the throwaway demo behind `make run`.

    Not for production: point `nexus-backup serve` at your own DATABASE_URL there.
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--data",
    "folder",
    default=Path(".data"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo cluster, its uploads and demo.env live.",
)
def serve(host: str, port: int, folder: Path) -> None:
    """Start (or reuse) the demo PostgreSQL and data under DATA, run `nexus-backup serve`
    against it, and stop the cluster when the server stops."""
    from api.cli import main as cli
    from api.config import get_settings
    from api.errors import AppError

    try:
        get_settings().check_serving()  # refuse before starting anything
        cluster = asyncio.run(start(folder))
    except (AppError, RuntimeError) as error:
        _fail(str(error.detail if isinstance(error, AppError) else error))
    get_settings.cache_clear()  # the demo's settings are in the environment now
    # uvicorn shuts down on SIGTERM, then raises it again with the handler it found: make that
    # an exit, so the cluster is stopped below rather than left running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        cli.main(["serve", "--host", host, "--port", str(port)], prog_name="nexus-backup")
    finally:
        cluster.stop()
