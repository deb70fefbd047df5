"""Shared fixtures: one throwaway PostgreSQL cluster per test session (root-safe), a demo
template database, and per-test application databases, uploads trees and settings."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from api.config import Settings
from api.operations import Operations
from api.services import Services, open_services
from nexus_dev.cluster import LocalCluster
from nexus_dev.demo import seed_demo
from tests.s3server import S3Server

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "demo_template"


def _scratch(prefix: str) -> Path:
    # As root the cluster runs as `postgres`, which cannot enter pytest's 0700 tmp folders.
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    folder = _scratch("nexus-test-pg-")
    pg = LocalCluster(folder)
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def template_uploads(cluster: LocalCluster) -> Iterator[Path]:
    folder = _scratch("nexus-test-uploads-")
    url = cluster.create_database(TEMPLATE)
    asyncio.run(seed_demo(url, folder / "uploads", clients=60))
    yield folder / "uploads"
    shutil.rmtree(folder, ignore_errors=True)


@dataclass
class App:
    """One application under test: its database, uploads folder, backup folder, settings."""

    cluster: LocalCluster
    database: str
    url: str
    uploads: Path
    backups: Path
    root: Path

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": self.url,
            "uploads_dir": self.uploads,
            "backup_dir": self.backups,
            "app_version": "1.0.0",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            DATABASE_URL=self.url,
            UPLOADS_DIR=str(self.uploads),
            BACKUP_DIR=str(self.backups),
            APP_VERSION="1.0.0",
        )
        env.update(extra)
        return env

    def cli(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        """Run `python -m api ARGS` the way an operator would."""
        result = subprocess.run(
            [sys.executable, "-m", "api", *args],
            cwd=self.root,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"nexus-backup {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def sql(self, query: str) -> str:
        return self.cluster.psql(self.database, query)


_counter = iter(range(1_000_000))


@pytest.fixture
def app(cluster: LocalCluster, template_uploads: Path, tmp_path: Path) -> Iterator[App]:
    """A fresh copy of the demo application: database from the template, uploads copied."""
    name = f"app_{os.getpid()}_{next(_counter)}"
    url = cluster.create_database(name, template=TEMPLATE)
    uploads = tmp_path / "data" / "uploads"
    shutil.copytree(template_uploads, uploads, copy_function=shutil.copy2)
    shutil.copystat(template_uploads, uploads)
    backups = tmp_path / "backups"
    try:
        yield App(cluster, name, url, uploads, backups, tmp_path)
    finally:
        cluster.drop_database(name)


@dataclass
class SeparateApp(App):
    """An App in the stronger setup: the catalog in its own database, owned by its own role;
    the app database owned by a non-superuser app role (CREATEDB, for deep verify) that may not
    connect to the catalog database. `url` and `catalog_url` log in as those two roles."""

    catalog_database: str = ""
    catalog_url: str = ""
    app_role: str = ""
    catalog_role: str = ""

    def settings(self, **overrides: object) -> Settings:
        return super().settings(**{"catalog_database_url": self.catalog_url, **overrides})

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(**{"CATALOG_DATABASE_URL": self.catalog_url, **extra})

    def catalog_sql(self, query: str) -> str:
        return self.cluster.psql(self.catalog_database, query)


def _role_url(cluster: LocalCluster, role: str, password: str, database: str) -> str:
    return f"postgresql://{role}:{quote(password, safe='')}@127.0.0.1:{cluster.port}/{database}"


@pytest.fixture
def catalog_app(cluster: LocalCluster, tmp_path: Path) -> Iterator[SeparateApp]:
    """The demo application in the stronger setup (docs/CATALOG.md), as an operator makes it."""
    tag = f"{os.getpid()}_{next(_counter)}"
    app_role, catalog_role = f"app_role_{tag}", f"catalog_role_{tag}"
    app_db, catalog_db = f"app_{tag}", f"catalog_{tag}"
    app_password, catalog_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    cluster.psql(
        "postgres",
        f"CREATE ROLE {app_role} LOGIN CREATEDB PASSWORD '{app_password}';"
        f"CREATE ROLE {catalog_role} LOGIN PASSWORD '{catalog_password}';"
        f"CREATE DATABASE {app_db} OWNER {app_role};"
        f"CREATE DATABASE {catalog_db} OWNER {catalog_role};"
        f"REVOKE ALL ON DATABASE {catalog_db} FROM PUBLIC;"
        f"REVOKE ALL ON DATABASE {app_db} FROM PUBLIC;"
        f"GRANT CONNECT, TEMPORARY ON DATABASE {app_db} TO {app_role};",
    )
    url = _role_url(cluster, app_role, app_password, app_db)
    uploads = tmp_path / "data" / "uploads"
    asyncio.run(seed_demo(url, uploads, clients=60))
    try:
        yield SeparateApp(
            cluster,
            app_db,
            url,
            uploads,
            tmp_path / "backups",
            tmp_path,
            catalog_database=catalog_db,
            catalog_url=_role_url(cluster, catalog_role, catalog_password, catalog_db),
            app_role=app_role,
            catalog_role=catalog_role,
        )
    finally:
        for name in cluster.psql(
            "postgres",
            f"SELECT datname FROM pg_database WHERE datdba IN ('{app_role}'::regrole,"
            f" '{catalog_role}'::regrole)",
        ).split():
            cluster.drop_database(name)
        cluster.psql("postgres", f"DROP ROLE {app_role}; DROP ROLE {catalog_role};")


@pytest.fixture
async def services(app: App) -> AsyncIterator[Services]:
    opened = await open_services(app.settings())
    try:
        yield opened
    finally:
        await opened.close()


def tree_state(root: Path) -> dict[str, tuple[object, ...]]:
    """Every file and folder below root: (kind, mode, mtime_ns[, sha256]) by relative path."""
    state: dict[str, tuple[object, ...]] = {}
    root_info = os.lstat(root)
    state["."] = ("dir", stat.S_IMODE(root_info.st_mode), root_info.st_mtime_ns)
    for folder, dirs, files in os.walk(os.fsencode(root)):
        for name in dirs + files:
            path = os.path.join(folder, name)
            rel = os.fsdecode(os.path.relpath(path, os.fsencode(root)))
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode):
                state[rel] = ("dir", stat.S_IMODE(info.st_mode), info.st_mtime_ns)
            elif stat.S_ISLNK(info.st_mode):
                state[rel] = ("link", os.readlink(path))
            else:
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                state[rel] = ("file", stat.S_IMODE(info.st_mode), info.st_mtime_ns, digest)
    return state


def database_state(app: App) -> tuple[str, str]:
    """(schema, data) of the app database as pg_dump prints them, catalog excluded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = app.cluster.password

    def dump(*flags: str) -> str:
        output = subprocess.run(
            [
                str(app.cluster.bin("pg_dump")),
                "-h",
                "127.0.0.1",
                "-p",
                str(app.cluster.port),
                "-U",
                "nexus",
                "--exclude-schema=nexus_backup",
                *flags,
                app.database,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        # \restrict keys are random per dump; they are not part of the database.
        return "\n".join(
            line
            for line in output.splitlines()
            if not line.startswith(("\\restrict", "\\unrestrict"))
        )

    return dump("--schema-only"), dump("--data-only")


@dataclass
class Api:
    """The ASGI app of one App, with an httpx client and ways to get credentials."""

    app: App
    client: httpx.AsyncClient
    services: Services
    fastapi: FastAPI

    async def token(self, role: str = "OWNER", name: str | None = None) -> str:
        from api.auth import service as auth
        from api.db import transaction

        async with transaction(self.services.sessions) as session:
            secret, _ = await auth.create_token(
                session, name or f"t-{role}-{os.urandom(3).hex()}", role, "test"
            )
        return secret

    async def headers(self, role: str = "OWNER") -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(role)}"}

    async def user(self, email: str, password: str, role: str = "OWNER") -> None:
        from api.auth import service as auth
        from api.db import transaction

        async with transaction(self.services.sessions) as session:
            await auth.create_user(session, email, role, password)

    @property
    def operations(self) -> Operations:
        operations: Operations = self.fastapi.state.operations
        return operations

    async def wait_backup(self, backup_id: str, headers: dict[str, str]) -> dict[str, object]:
        """The backup's record once its operation (and after-hooks) ended."""
        return await self._ended(f"/backups/{backup_id}", backup_id, headers)

    async def wait_restore(self, restore_id: str, headers: dict[str, str]) -> dict[str, object]:
        return await self._ended(f"/restores/{restore_id}", restore_id, headers)

    async def _ended(self, url: str, record_id: str, headers: dict[str, str]) -> dict[str, object]:
        handle = self.operations.handle(record_id)
        if handle is not None:
            with contextlib.suppress(Exception):
                await handle.wait()
        body = (await self.client.get(url, headers=headers)).json()
        assert body["status"] in ("completed", "failed"), body
        return dict(body)


@pytest.fixture
async def api(app: App) -> AsyncIterator[Api]:
    from asgi_lifespan import LifespanManager

    from api.main import create_app

    # Tests tick the scheduler themselves, at instants they choose: a background ticker on the
    # wall clock would race them at every minute boundary.
    fastapi = create_app(app.settings(scheduler_enabled=False))
    async with LifespanManager(fastapi) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(app, client, fastapi.state.services, fastapi)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (closed right after it was picked)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerOutput:
    """What a server process writes, copied line by line into its log file by a reader thread.

    Tests wait for a line to appear (uvicorn's "Uvicorn running on", the scheduler's tick lines)
    instead of polling the server: the reader thread wakes the waiter when the line is written.
    """

    def __init__(self, stream: IO[str], log: Path) -> None:
        self.log = log
        self._lines: list[str] = []
        self._ended = False
        self._changed = threading.Condition()
        out = log.open("w")
        self._reader = threading.Thread(target=self._copy, args=(stream, out), daemon=True)
        self._reader.start()

    def _copy(self, stream: IO[str], out: IO[str]) -> None:
        with stream, out:
            for line in stream:
                out.write(line)
                out.flush()
                with self._changed:
                    self._lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def _count(self, text: str) -> int:
        return sum(text in line for line in self._lines)

    def count(self, text: str) -> int:
        """How many lines written so far contain `text`."""
        with self._changed:
            return self._count(text)

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> None:
        """Block until `count` lines contain `text`; fail with the log if the process ends or
        `timeout` seconds pass first (the deadline only bounds a hang: it decides nothing)."""
        with self._changed:
            self._changed.wait_for(lambda: self._count(text) >= count or self._ended, timeout)
            seen = self._count(text)
        assert seen >= count, (
            f"{seen} of {count} lines with {text!r} in {self.log.name}"
            f"{' (the process exited)' if self._ended else ''}:\n{self.log.read_text()}"
        )

    def close(self, timeout: float = 30) -> None:
        """Wait for the reader to copy the last lines (call once the process has exited)."""
        self._reader.join(timeout)


@dataclass
class Server:
    base: str
    output: ServerOutput


@contextmanager
def run_server(app: App, log: Path, **env: str) -> Iterator[Server]:
    """`python -m api serve` on a free port, as an operator starts it; yields it once uvicorn
    says it listens and /health answers, and stops it afterwards. Its output goes to `log`."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "api", "serve", "--port", str(port)],
        cwd=app.root,
        env=app.env(PYTHONUNBUFFERED="1", **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    assert process.stdout is not None
    output = ServerOutput(process.stdout, log)
    try:
        server = Server(f"http://127.0.0.1:{port}", output)
        output.wait_for("Uvicorn running on")  # logged once the socket listens
        health = httpx.get(f"{server.base}/health", timeout=10)
        assert health.status_code == 200, f"/health answered {health.status_code}: {health.text}"
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        output.close()


@contextmanager
def serve(app: App, log: Path, **env: str) -> Iterator[str]:
    """`run_server`, yielding only the server's base URL."""
    with run_server(app, log, **env) as server:
        yield server.base


# -- cloud storage: moto's S3 server behind a fault proxy, over real HTTP on 127.0.0.1 --------


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


def cloud_settings(s3: S3Server, bucket: str) -> dict[str, object]:
    """BACKUP_S3_* for `bucket` behind the fault proxy of `s3`."""
    return {
        "backup_s3_endpoint": s3.proxy_endpoint,
        "backup_s3_bucket": bucket,
        "backup_s3_access_key_id": s3.access_key,
        "backup_s3_secret_access_key": s3.secret_key,
        "backup_s3_region": "us-east-1",
        "backup_s3_part_size_mb": 5,
    }


async def api_for(app: App, settings: dict[str, object]) -> AsyncIterator[Api]:
    """The app of `app` with these settings (e.g. a bucket), as the `api` fixture serves it."""
    from api.main import create_app

    fastapi = create_app(app.settings(scheduler_enabled=False, **settings))
    async with LifespanManager(fastapi) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(app, client, fastapi.state.services, fastapi)


@pytest.fixture
async def bucket(s3: S3Server) -> str:
    s3.reset()
    return s3.create_bucket(f"b-{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def capi(app: App, s3: S3Server, bucket: str) -> AsyncIterator[Api]:
    async for api in api_for(app, cloud_settings(s3, bucket)):
        yield api
