"""Tests for the development helpers kept apart in nexus_dev: the throwaway PostgreSQL cluster
(nexus_dev.cluster), the demo data (nexus_dev.demo), and that the service never starts a demo
by itself (no DATABASE_URL is a one-line refusal, and `api` works without nexus_dev)."""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from nexus_dev.cluster import LocalCluster
from nexus_dev.demo import ALEMBIC_HEAD, DemoSummary, seed_demo
from tests.conftest import ROOT


def _cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool]:
    """Directory for the cluster, and whether we must delete it ourselves.

    As root the cluster runs as the ``postgres`` OS user, which cannot traverse pytest's
    mode-0700 ``/tmp/pytest-of-root``; use a fresh directory directly under the system temp
    dir instead.
    """
    if os.geteuid() == 0:
        return Path(tempfile.mkdtemp(prefix="nexus-pg-")), True
    return tmp_path_factory.mktemp("pg"), False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    data_dir, owned = _cluster_dir(tmp_path_factory)
    pg = LocalCluster(data_dir)
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()
        if owned:
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def uploads_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
async def seeded(cluster: LocalCluster, uploads_dir: Path) -> tuple[str, DemoSummary]:
    """A database filled by seed_demo; returns (url, summary)."""
    url = cluster.create_database("demo")
    return url, await seed_demo(url, uploads_dir)


def _postmaster_pid(pg: LocalCluster) -> int:
    return int((pg.pgdata / "postmaster.pid").read_text().splitlines()[0])


# -- LocalCluster --------------------------------------------------------------------------


def test_start_is_idempotent(cluster: LocalCluster) -> None:
    pid, port = _postmaster_pid(cluster), cluster.port
    cluster.start()
    assert (_postmaster_pid(cluster), cluster.port) == (pid, port)

    # A second handle on the same directory finds the running server and its port.
    other = LocalCluster(cluster.data_dir)
    other.start()
    assert other.port == port
    assert other.password == cluster.password
    assert _postmaster_pid(other) == pid


def test_restart_reuses_remembered_port(cluster: LocalCluster) -> None:
    port = cluster.port
    cluster.stop()
    cluster.stop()  # idempotent
    assert not (cluster.pgdata / "postmaster.pid").exists()
    cluster.start()
    assert cluster.port == port
    assert int(cluster.port_file.read_text()) == port


def test_layout_and_settings(cluster: LocalCluster) -> None:
    assert (cluster.pgdata / "PG_VERSION").is_file()
    assert cluster.log_file.is_file()
    assert cluster.bin("pg_dump").is_file()
    with pytest.raises(FileNotFoundError):
        cluster.bin("no-such-tool")
    assert cluster.psql("postgres", "SHOW listen_addresses") == "127.0.0.1\n"
    assert cluster.psql("postgres", "SHOW fsync") == "on\n"
    assert cluster.psql("postgres", "SHOW unix_socket_directories") == f"{cluster.run_dir}\n"
    assert cluster.psql("postgres", "SHOW server_encoding") == "UTF8\n"


def test_password_file_is_private(cluster: LocalCluster) -> None:
    mode = stat.S_IMODE(cluster.password_file.stat().st_mode)
    assert mode == 0o600
    assert len(cluster.password) >= 20


def test_password_not_in_any_process_argv(cluster: LocalCluster) -> None:
    secret = cluster.password.encode()
    seen_postgres = False
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes()
        except OSError:  # process exited or not readable
            continue
        assert secret not in argv, f"password visible in {cmdline}"
        seen_postgres = seen_postgres or str(cluster.pgdata).encode() in argv
    assert seen_postgres, "no process with the cluster's data dir in its argv"
    assert secret not in cluster.log_file.read_bytes()


def test_psql_reports_errors(cluster: LocalCluster) -> None:
    with pytest.raises(RuntimeError, match="no_such_table"):
        cluster.psql("postgres", "SELECT * FROM no_such_table;")


async def test_url_connects(cluster: LocalCluster) -> None:
    assert cluster.url().startswith(f"postgresql://nexus:{cluster.password}@127.0.0.1:")
    conn = await asyncpg.connect(cluster.url())
    try:
        assert await conn.fetchval("SELECT current_user") == "nexus"
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = 'nexus'")
    finally:
        await conn.close()


async def test_wrong_password_is_rejected(cluster: LocalCluster) -> None:
    url = cluster.url().replace(cluster.password, "not-the-password")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(url)


async def test_create_and_drop_database(cluster: LocalCluster) -> None:
    name = 'odd "name" db'
    url = cluster.create_database(name)
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT current_database()") == name
    finally:
        await conn.close()
    cluster.drop_database(name)
    cluster.drop_database(name)  # IF EXISTS
    count = cluster.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'odd%'")
    assert count == "0\n"


# -- seed_demo -----------------------------------------------------------------------------


async def test_seed_creates_schema(seeded: tuple[str, DemoSummary]) -> None:
    url, summary = seeded
    conn = await asyncpg.connect(url)
    try:
        fks = await conn.fetch(
            """
            SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent,
                   confdeltype::text AS on_delete
            FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace
            """
        )
        assert {(r["child"], r["parent"], r["on_delete"]) for r in fks} == {
            ("documents", "clients", "c"),
            ("invoices", "clients", "c"),
            ("invoice_lines", "invoices", "c"),
        }
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == ALEMBIC_HEAD
        assert await conn.fetchval("SELECT to_regclass('public.client_balances')") is not None
        assert await conn.fetchval("SELECT count(*) FROM client_balances") == 300
        numbers = await conn.fetch("SELECT number FROM invoices ORDER BY id LIMIT 2")
        assert [r["number"] for r in numbers] == ["INV-001001", "INV-001002"]
        notes = await conn.fetchval(
            "SELECT count(*) FROM invoices WHERE notes LIKE '%Zoë — €%' OR notes LIKE E'%\\n%'"
        )
        assert notes > 0
        # Sequences were moved past the copied ids, so plain inserts work.
        new_id = await conn.fetchval(
            "INSERT INTO clients (name, email) VALUES ('New', 'new@example.gy') RETURNING id"
        )
        assert new_id == 301
        await conn.execute("DELETE FROM clients WHERE id = $1", new_id)
    finally:
        await conn.close()

    assert set(summary.tables) == {
        "clients",
        "documents",
        "invoices",
        "invoice_lines",
        "alembic_version",
    }
    assert summary.tables["clients"] == 300
    assert summary.tables["alembic_version"] == 1
    assert sum(summary.tables.values()) > 1000
    assert summary.files == summary.tables["documents"] > 500


async def test_seed_files_match_documents(
    seeded: tuple[str, DemoSummary], uploads_dir: Path
) -> None:
    url, summary = seeded
    conn = await asyncpg.connect(url)
    try:
        docs = await conn.fetch("SELECT file_path, size_bytes, sha256 FROM documents")
    finally:
        await conn.close()
    total = 0
    modes = set()
    mtimes = set()
    for doc in docs:
        path = uploads_dir / doc["file_path"]
        data = path.read_bytes()
        assert len(data) == doc["size_bytes"]
        assert hashlib.sha256(data).hexdigest() == doc["sha256"]
        info = path.stat()
        modes.add(stat.S_IMODE(info.st_mode))
        mtimes.add(int(info.st_mtime))
        total += len(data)
    assert summary.total_bytes == total
    assert modes == {0o644, 0o600}
    assert len(mtimes) > 100
    assert {Path(d["file_path"]).suffix for d in docs} == {".pdf", ".png", ".docx", ".txt"}


async def test_seed_twice_does_not_duplicate(
    seeded: tuple[str, DemoSummary], uploads_dir: Path
) -> None:
    url, first = seeded
    again = await seed_demo(url, uploads_dir)
    assert again == first


async def test_seed_is_deterministic(
    cluster: LocalCluster, seeded: tuple[str, DemoSummary], tmp_path: Path
) -> None:
    _, first = seeded
    other_url = cluster.create_database("demo_again")
    try:
        second = await seed_demo(other_url, tmp_path)
        assert second == first
        query = "SELECT md5(string_agg(i::text, ',' ORDER BY id)) FROM invoices i"
        assert cluster.psql("demo_again", query) == cluster.psql("demo", query)
    finally:
        cluster.drop_database("demo_again")


def test_create_database_from_template(
    cluster: LocalCluster, seeded: tuple[str, DemoSummary]
) -> None:
    cluster.create_database("demo_copy", template="demo")
    try:
        assert cluster.psql("demo_copy", "SELECT count(*) FROM clients") == "300\n"
    finally:
        cluster.drop_database("demo_copy")


# -- the service never starts a demo by itself ----------------------------------------------

API_DIR = ROOT / "api"
MISSING_DATABASE_URL = "nexus-backup: error: DATABASE_URL is not set: "


def _run_without_database_url(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `args` with this Python in `cwd` (no .env there), DATABASE_URL and
    CATALOG_DATABASE_URL removed from the environment."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "CATALOG_DATABASE_URL")
    }
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _assert_one_line_refusal(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{proc.stderr}"
    assert lines[0].startswith(MISSING_DATABASE_URL), lines[0]
    assert "make run" in lines[0], "the message should say how to get a demo"


def test_serve_without_database_url_refuses_in_one_line_and_starts_no_demo(
    tmp_path: Path,
) -> None:
    proc = _run_without_database_url(tmp_path, "-m", "api", "serve", "--port", "1")
    _assert_one_line_refusal(proc)
    assert not (tmp_path / ".data").exists(), "serve started an embedded demo cluster"
    assert list(tmp_path.iterdir()) == []


def test_list_without_database_url_refuses_in_one_line(tmp_path: Path) -> None:
    proc = _run_without_database_url(tmp_path, "-m", "api", "list")
    _assert_one_line_refusal(proc)
    assert list(tmp_path.iterdir()) == []


def test_api_imports_and_runs_without_nexus_dev(tmp_path: Path) -> None:
    code = """
import importlib, pkgutil, sys
sys.modules["nexus_dev"] = None  # any import of it now fails
import api, api.cli, api.main
for module in pkgutil.walk_packages(api.__path__, "api."):
    if module.name != "api.__main__":
        importlib.import_module(module.name)
sys.argv = ["nexus-backup", "--help"]
api.cli.main()
"""
    proc = _run_without_database_url(tmp_path, "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert "serve" in proc.stdout


def test_no_module_of_api_imports_nexus_dev() -> None:
    offenders = []
    for path in sorted(API_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(name.split(".")[0] == "nexus_dev" for name in names):
                offenders.append(f"{path.relative_to(API_DIR.parent)}:{node.lineno}")
    assert offenders == [], "api must not depend on the development helpers"


def test_the_demo_launcher_refuses_bad_settings_before_starting_a_cluster(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("NEXUS_JWT_SECRET=too-short\n", encoding="utf-8")
    proc = _run_without_database_url(tmp_path, "-m", "nexus_dev", "serve", "--port", "1")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        "nexus_dev: error: NEXUS_JWT_SECRET must be at least 32 bytes: generate one with "
        "`openssl rand -hex 32`"
    ]
    assert not (tmp_path / ".data").exists()
