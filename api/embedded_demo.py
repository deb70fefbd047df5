"""The embedded default of `make run`: a throwaway PostgreSQL under .data/ with demo data."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from api.demo import seed_demo
from api.embedded import LocalCluster

DEMO_DATABASE = "gk_nexus"
DEMO_APP_VERSION = "1.0.0"


async def start(folder: Path) -> LocalCluster:
    """Start (or reuse) the demo cluster and data; export its settings; write demo.env."""
    folder = folder.absolute()
    folder.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(folder / "pg")
    cluster.start()
    exists = cluster.psql(
        "postgres", f"SELECT 1 FROM pg_database WHERE datname = '{DEMO_DATABASE}'"
    ).strip()
    url = cluster.url(DEMO_DATABASE) if exists else cluster.create_database(DEMO_DATABASE)
    uploads = folder / "uploads"
    summary = await seed_demo(url, uploads)
    settings = {
        "DATABASE_URL": url,
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
