"""Shared by the startup, health and metrics tests: a read-only folder, an "old" pg_dump, and the
app served with a clock the test moves."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from api.main import create_app
from tests.auth.helpers import JWT_SECRET, NOW
from tests.conftest import Api, App


@contextmanager
def readonly_mount() -> Iterator[Path]:
    """A read-only tmpfs mounted on a fresh folder, unmounted afterwards. As root, chmod does not
    stop writes; a read-only file system does (EROFS), as a full or read-only volume would."""
    folder = Path(tempfile.mkdtemp(prefix="nexus-test-ro-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
        shutil.rmtree(folder, ignore_errors=True)


OLD_PG_DUMP = "pg_dump (PostgreSQL) 9.6.24"


def old_pg_bin(folder: Path) -> Path:
    """A PG_BIN_DIR whose `pg_dump --version` reports PostgreSQL 9.6, older than any server the
    tests start. The script stands in for an old client ONLY for the version probe (installing a
    real 9.6 client is not possible here); nothing ever dumps with it."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "pg_dump"
    script.write_text(f'#!/bin/sh\necho "{OLD_PG_DUMP}"\n')
    script.chmod(0o755)
    return folder


class Clock:
    """The app's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@asynccontextmanager
async def serving(app: App, clock: Clock | None = None, **settings: object) -> AsyncIterator[Api]:
    """The app with these settings, its clock at NOW (GK-Nexus JWTs signed with JWT_SECRET are
    accepted: they need no catalog)."""
    fastapi = create_app(
        app.settings(scheduler_enabled=False, nexus_jwt_secret=JWT_SECRET, **settings),
        clock=clock or Clock(),
    )
    async with LifespanManager(fastapi) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(app, client, fastapi.state.services, fastapi)
