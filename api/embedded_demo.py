"""The embedded default of `make run`: a throwaway PostgreSQL under .data/ with demo data.

It is set up the stronger way (docs/CATALOG.md): the app database `gk_nexus` is owned by the
non-superuser role `nexus_app` (CREATEDB, for deep verify), and the catalog lives in its own
database `nexus_catalog`, owned by the role `nexus_catalog`, which `nexus_app` may not connect to.
"""

from __future__ import annotations

import os
import secrets
import shlex
from pathlib import Path
from urllib.parse import quote

import click

from api.demo import seed_demo
from api.embedded import HOST, SUPERUSER, LocalCluster, quote_ident

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
