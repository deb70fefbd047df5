"""A restored database.sql cannot change the catalog (schema nexus_backup) nor hijack its queries.

Every crafted archive here is a consistent forgery: database.sql is rewritten and the manifest and
sidecar are made to match, as anyone who can write the backup folder or the bucket could do. The
guard (api.sources.postgres GUARD_*_SQL) must refuse each one, change nothing, and leave the
service working.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest

from api.auth import service as auth
from api.backups import service as backup_service
from api.db import transaction
from api.operations import Operations, VerifyOp
from api.services import open_services
from api.sources.postgres import DatabaseRestore, restore_committed
from nexus_dev import run as embedded_demo
from tests.conftest import App, SeparateApp, database_state, tree_state

FORGED_SECRET = "nxb_forged-owner-token-from-a-crafted-dump"
FORGED_HASH = hashlib.sha256(FORGED_SECRET.encode()).hexdigest()
INSERT_TOKEN = (
    "INSERT INTO nexus_backup.api_token (id, name, token_hash, prefix, role, created_at) "
    f"VALUES ('forged', 'forged', '{FORGED_HASH}', 'nxb_forg', 'OWNER', now());"
)
REFUSED = "changes the catalog schema nexus_backup"


def forge(good: Path, out: Path, extra_sql: str) -> Path:
    """`good` with extra_sql added at the end of database.sql (before pg_dump's closing
    `\\unrestrict` line); manifest and sidecar made to match."""
    with tarfile.open(good, "r:gz") as old:
        members = [
            (info, old.extractfile(info).read() if info.isfile() else None)  # type: ignore[union-attr]
            for info in old
        ]
    database = next(data for info, data in members if info.name == "database.sql")
    assert database is not None
    extra = b"\n" + extra_sql.encode() + b"\n"
    at = database.rfind(b"\\unrestrict ")  # pg_dump's closing line stays the last one
    database = database + extra if at < 0 else database[:at] + extra + database[at:]
    digest = hashlib.sha256(database).hexdigest()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz", format=tarfile.PAX_FORMAT) as new:
        for info, data in members:
            if info.name == "database.sql":
                data = database
            elif info.name == "manifest.json":
                assert data is not None
                manifest = json.loads(data)
                manifest["database"]["size"], manifest["database"]["sha256"] = len(database), digest
                for entry in manifest["files"]:
                    if entry["path"] == "database.sql":
                        entry["size"], entry["sha256"] = len(database), digest
                data = json.dumps(manifest).encode()
            if data is not None:
                info.size = len(data)
            new.addfile(info, io.BytesIO(data) if data is not None else None)
    sidecar = hashlib.sha256(out.read_bytes()).hexdigest()
    out.with_name(out.name + ".sha256").write_text(f"{sidecar}  {out.name}\n")
    return out


def token_works(app: App, secret: str = FORGED_SECRET) -> bool:
    async def check() -> bool:
        services = await open_services(app.settings())
        try:
            async with transaction(services.sessions) as session:
                return await auth.token_principal(session, secret) is not None
        finally:
            await services.close()

    return asyncio.run(check())


def deep_verify(app: App, name: str) -> bool:
    async def check() -> bool:
        services = await open_services(app.settings())
        try:
            async with transaction(services.sessions) as session:
                backup = await backup_service.find(session, name)
            assert backup is not None
            result = await Operations(services).run(VerifyOp(backup.id, deep=True))
            assert result.ok, result.problem
            return bool(result.tables_checked)
        finally:
            await services.close()

    return asyncio.run(check())


def catalog_schema(app: App) -> str:
    return app.sql(
        "SELECT c.relname, c.relkind, c.relacl, c.relrowsecurity, a.attname, a.atttypid"
        " FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
        " WHERE c.relnamespace = 'nexus_backup'::regnamespace ORDER BY 1, 5;"
        "SELECT tgname FROM pg_trigger WHERE tgrelid IN"
        " (SELECT oid FROM pg_class WHERE relnamespace = 'nexus_backup'::regnamespace)"
        "   AND NOT tgisinternal ORDER BY 1;"
        "SELECT proname FROM pg_proc WHERE pronamespace = 'nexus_backup'::regnamespace;"
        "SELECT nspacl, nspowner FROM pg_namespace WHERE nspname = 'nexus_backup';"
    )


def audit_rows(app: App) -> str:
    return app.sql(
        "SELECT id, actor, action, target, outcome FROM nexus_backup.audit_log ORDER BY id"
    )


# What a crafted dump could try: each alone would get an OWNER token into the catalog (or
# break its audit trail) if the restore committed it.
ATTACKS = {
    "insert-token": INSERT_TOKEN,
    "update-and-delete-audit": (
        "UPDATE nexus_backup.audit_log SET actor = 'nobody' WHERE id = (SELECT min(id) FROM"
        " nexus_backup.audit_log); DELETE FROM nexus_backup.audit_log WHERE id = (SELECT max(id)"
        " FROM nexus_backup.audit_log);"
    ),
    "delete-audit-only": "DELETE FROM nexus_backup.audit_log;",
    "dynamic-sql": (
        "DO $x$ BEGIN EXECUTE 'INSERT INTO ' || 'nexus' || '_backup.api_token (id, name,"
        f" token_hash, prefix, role, created_at) VALUES (''forged'', ''forged'', ''{FORGED_HASH}'',"
        " ''nxb_forg'', ''OWNER'', now())'; END $x$;"
    ),
    "subtransaction": (
        "DO $x$ BEGIN BEGIN "
        + INSERT_TOKEN
        + " EXCEPTION WHEN others THEN RAISE NOTICE 'x'; END; END $x$;"
    ),
    "trigger-on-catalog-table": (
        "CREATE FUNCTION public.steal() RETURNS trigger LANGUAGE plpgsql AS $x$ BEGIN"
        " NEW.role := 'OWNER'; RETURN NEW; END $x$;"
        " CREATE TRIGGER steal BEFORE INSERT ON nexus_backup.api_token"
        " FOR EACH ROW EXECUTE FUNCTION public.steal();"
    ),
    "alter-catalog-table": "ALTER TABLE nexus_backup.api_token ADD COLUMN note text;",
    "grant-on-schema": "GRANT ALL ON SCHEMA nexus_backup TO PUBLIC;",
    "grant-on-table": "GRANT ALL ON nexus_backup.api_token TO PUBLIC;",
    "drop-catalog-schema": "DROP SCHEMA nexus_backup CASCADE;",
    "drop-an-index": "DROP INDEX nexus_backup.ix_audit_log_action;",
    "rename-schema": "ALTER SCHEMA nexus_backup RENAME TO old_catalog;",
    "inherit-catalog-table": (
        "CREATE TABLE public.more_tokens () INHERITS (nexus_backup.api_token);"
        f" INSERT INTO public.more_tokens (id, name, token_hash, prefix, role, created_at)"
        f" VALUES ('forged', 'forged', '{FORGED_HASH}', 'nxb_forg', 'OWNER', now());"
    ),
    "deferred-trigger-at-commit": (
        "CREATE FUNCTION public.late() RETURNS trigger LANGUAGE plpgsql AS $x$ BEGIN "
        + INSERT_TOKEN
        + " RETURN NULL; END $x$; CREATE TABLE public.trap (id int);"
        " CREATE CONSTRAINT TRIGGER late AFTER INSERT ON public.trap DEFERRABLE INITIALLY"
        " DEFERRED FOR EACH ROW EXECUTE FUNCTION public.late(); INSERT INTO public.trap VALUES (1);"
    ),
    "lower-a-sequence": "SELECT setval('nexus_backup.audit_log_id_seq', 1, false);",
}


@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
def test_a_dump_that_changes_the_catalog_is_refused_and_changes_nothing(
    app: App, attack: str
) -> None:
    good = Path(app.cli("backup", "good").stdout.strip())
    forged = forge(good, app.root / "incoming" / "forged.tar.gz", ATTACKS[attack])
    app.sql("UPDATE clients SET name = 'changed after the backup' WHERE id = 1")
    before = database_state(app), tree_state(app.uploads)
    schema, audit = catalog_schema(app), audit_rows(app)
    sequence = app.sql("SELECT last_value FROM nexus_backup.audit_log_id_seq")

    result = app.cli("restore", str(forged), "--yes", check=False)

    assert result.returncode != 0, result.stdout
    assert REFUSED in result.stderr, result.stderr
    assert "nothing was changed" in result.stderr
    assert (database_state(app), tree_state(app.uploads)) == before, "the live state changed"
    assert catalog_schema(app) == schema, "the catalog's tables, grants or triggers changed"
    assert audit_rows(app).startswith(audit), "audit rows were changed or deleted"
    assert int(app.sql("SELECT last_value FROM nexus_backup.audit_log_id_seq")) >= int(sequence)
    assert not token_works(app), "the forged OWNER token works"
    assert (
        app.sql(
            f"SELECT count(*) FROM nexus_backup.api_token WHERE token_hash = '{FORGED_HASH}'"
        ).strip()
        == "0"
    )
    # The service keeps working: a backup and a restore of it go through.
    again = Path(app.cli("backup", "after").stdout.strip())
    app.cli("restore", str(again), "--yes")
    assert database_state(app) == before[0]


SHADOW = (
    # CVE-2018-1058 style: an exact-type match in public beats pg_catalog's text = text, so an
    # unqualified `token_hash = $1::VARCHAR` would call it and accept any token.
    "CREATE FUNCTION public.always(varchar, varchar) RETURNS boolean LANGUAGE sql"
    " AS 'SELECT true'; CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar,"
    " FUNCTION = public.always); CREATE FUNCTION public.lower(varchar) RETURNS text"
    " LANGUAGE sql AS 'SELECT ''hijacked''::text';"
)


def test_functions_a_dump_creates_in_public_are_never_used_by_catalog_queries(app: App) -> None:
    app.cli("tokens", "create", "--name", "real")
    good = Path(app.cli("backup", "good").stdout.strip())
    forged = forge(good, app.root / "incoming" / "shadow.tar.gz", SHADOW)

    app.cli("restore", str(forged), "--yes")  # objects in public are the app's own business

    assert app.sql("SELECT 'a'::varchar OPERATOR(public.=) 'b'::varchar").strip() == "t"
    assert not token_works(app, "nxb_any-token-at-all"), "a public operator hijacked a query"
    assert not token_works(app, FORGED_SECRET)
    listed = app.cli("tokens", "list").stdout
    assert "real" in listed
    again = Path(app.cli("backup", "after").stdout.strip())
    app.cli("restore", str(again), "--yes")


def test_a_cursor_the_dump_leaves_to_run_at_commit_never_runs(app: App) -> None:
    # A WITH HOLD cursor is computed at COMMIT, after any check: the guard closes it unread.
    at_commit = (
        "CREATE FUNCTION public.late() RETURNS int LANGUAGE plpgsql AS $x$ BEGIN "
        + INSERT_TOKEN
        + " RETURN 1; END $x$; DECLARE late CURSOR WITH HOLD FOR SELECT public.late();"
    )
    good = Path(app.cli("backup", "good").stdout.strip())
    forged = forge(good, app.root / "incoming" / "cursor.tar.gz", at_commit)
    audit = audit_rows(app)

    app.cli("restore", str(forged), "--yes")

    assert not token_works(app), "the function of a held cursor ran at COMMIT"
    assert audit_rows(app).startswith(audit)


# --- The stronger setup: catalog in its own database, owned by its own role ---------------------


def test_separate_catalog_backs_up_and_restores_as_a_non_superuser_app_role(
    catalog_app: SeparateApp,
) -> None:
    app = catalog_app
    assert app.sql(f"SELECT rolsuper FROM pg_roles WHERE rolname = '{app.app_role}'").strip() == "f"
    before = database_state(app), tree_state(app.uploads)
    path = Path(app.cli("backup", "golden").stdout.strip())
    app.sql(
        f"SET ROLE {app.app_role}; UPDATE clients SET name = 'changed' WHERE id < 5;"
        " CREATE TABLE late (id int);"
    )

    app.cli("restore", str(path), "--yes")

    assert (database_state(app), tree_state(app.uploads)) == before
    # The catalog lives in its own database; the app database holds only the commit marker.
    assert "golden" in app.catalog_sql("SELECT name FROM nexus_backup.system_backup")
    assert (
        app.sql(
            "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class"
            " WHERE relnamespace = 'nexus_backup'::regnamespace AND relkind = 'r'"
        ).strip()
        == "restore_commit"
    )
    assert deep_verify(app, "golden"), "a deep verify needs only CREATEDB, not superuser"


async def test_the_app_role_cannot_connect_to_the_catalog_database(
    catalog_app: SeparateApp,
) -> None:
    app = catalog_app
    app_login = app.url.rsplit("/", 1)[0]
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await asyncpg.connect(f"{app_login}/{app.catalog_database}")


SEPARATE_ATTACKS = {
    "write-catalog-in-app-database": (
        "CREATE TABLE nexus_backup.api_token (id text, name text, token_hash text, prefix text,"
        " role text, created_at timestamptz);" + INSERT_TOKEN
    ),
    "dblink-to-catalog": (
        "CREATE EXTENSION dblink; SELECT dblink_exec('dbname=catalog', 'DELETE FROM"
        " nexus_backup.audit_log');"
    ),
}


@pytest.mark.parametrize("attack", list(SEPARATE_ATTACKS), ids=list(SEPARATE_ATTACKS))
def test_a_dump_cannot_reach_a_separate_catalog(catalog_app: SeparateApp, attack: str) -> None:
    app = catalog_app
    good = Path(app.cli("backup", "good").stdout.strip())
    forged = forge(good, app.root / "incoming" / "forged.tar.gz", SEPARATE_ATTACKS[attack])
    before = database_state(app), tree_state(app.uploads)
    audit = app.catalog_sql("SELECT id, action, outcome FROM nexus_backup.audit_log ORDER BY id")

    result = app.cli("restore", str(forged), "--yes", check=False)

    assert result.returncode != 0, result.stdout
    assert (database_state(app), tree_state(app.uploads)) == before
    after = app.catalog_sql("SELECT id, action, outcome FROM nexus_backup.audit_log ORDER BY id")
    assert after.startswith(audit)
    assert not token_works(app)
    again = Path(app.cli("backup", "after").stdout.strip())
    app.cli("restore", str(again), "--yes")
    assert database_state(app) == before[0]


async def test_the_embedded_demo_keeps_the_catalog_apart_from_a_non_superuser_app(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in ("DATABASE_URL", "CATALOG_DATABASE_URL", "UPLOADS_DIR", "APP_VERSION"):
        # start() exports them: set first, so that the undo removes them again afterwards
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))
    folder = Path(tempfile.mkdtemp(prefix="nexus-demo-"))
    folder.chmod(0o755)  # like .data: the postgres user must reach .data/pg
    cluster = None
    try:
        cluster = await embedded_demo.start(folder)
        exported = _exports(folder / "demo.env")
        app_url, catalog_url = exported["DATABASE_URL"], exported["CATALOG_DATABASE_URL"]
        conn = await asyncpg.connect(app_url)
        try:
            assert await conn.fetchval("SELECT current_setting('is_superuser')") == "off"
            createdb = "SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user"
            assert await conn.fetchval(createdb)
            assert await conn.fetchval("SELECT count(*) FROM public.clients") > 0
        finally:
            await conn.close()
        app_login = app_url.rsplit("/", 1)[0]
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await asyncpg.connect(f"{app_login}/{embedded_demo.CATALOG_DATABASE}")

        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | exported
        backup = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "api", "backup", "demo"],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert backup.returncode == 0, backup.stderr
        restore = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "api", "restore", "demo", "--yes"],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert restore.returncode == 0, restore.stderr
        catalog = await asyncpg.connect(catalog_url)
        try:
            names = await catalog.fetch("SELECT name FROM nexus_backup.system_backup")
            assert "demo" in {row["name"] for row in names}
        finally:
            await catalog.close()

        # A second start reuses the roles, passwords and databases.
        cluster = await embedded_demo.start(folder)
        assert _exports(folder / "demo.env") == exported
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _exports(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            values[key] = shlex.split(value)[0]
    return values


async def test_the_commit_marker_is_read_with_pg_catalog_functions_only(app: App) -> None:
    # hashtextextended(text, integer) in public is a closer match for `hashtextextended($1, 0)`
    # than pg_catalog's (text, bigint): unpinned, the lock key would come from the app's code.
    app.sql(
        "CREATE FUNCTION public.hashtextextended(text, integer) RETURNS bigint LANGUAGE sql"
        " AS 'SELECT 1 / 0';"
        "CREATE SCHEMA nexus_backup; CREATE TABLE nexus_backup.restore_commit (restore_id text);"
        "INSERT INTO nexus_backup.restore_commit (restore_id) VALUES ('committed-one');"
    )
    assert await restore_committed(app.url, "committed-one", wait_seconds=1)
    assert not await restore_committed(app.url, "another", wait_seconds=1)


async def test_a_dump_that_switches_string_lexing_off_cannot_end_the_transaction(
    app: App, tmp_path: Path
) -> None:
    # Verification refuses a plain COMMIT, but server-side code can change how psql reads later
    # lines: with standard_conforming_strings switched off by a DO block, psql would end the
    # string below early and run the COMMIT the scanner saw inside it. The loader sets the
    # setting back after every statement, so psql reads the line as the scanner did; were the
    # COMMIT to run anyway, the guard would fail the restore saying the transaction ended.
    sql = tmp_path / "database.sql"
    sql.write_text(
        "DO $$ BEGIN EXECUTE 'SET standard_conforming_strings = off'; END $$;\n"
        "SELECT '\\'' ; COMMIT; --'\n;\n"
        "CREATE TABLE public.marker (id int);\n"
    )
    restore = DatabaseRestore(app.url, app.settings(), sql, "ends-its-transaction")
    try:
        await restore.apply()
    finally:
        await restore.rollback()
    assert app.sql("SELECT to_regclass('public.marker') IS NULL").strip() == "t"
    assert app.sql("SELECT count(*) > 0 FROM public.clients").strip() == "t", "live data kept"


def _wait_until_a_session_waits_for(
    app: App, key: int, process: subprocess.Popen[str], timeout: float = 120
) -> None:
    """Block until one session waits for advisory lock `key` (while `process` runs).

    This polls pg_locks because nothing else can see it: PostgreSQL cannot block one session
    until another starts waiting for a lock, and the waiting session cannot announce itself
    first (it is the restore's psql, loading the dump restricted, inside the restore's open
    transaction: no \\echo, and a NOTIFY would arrive only at its commit). The condition is
    exact; the interval only decides how soon it is seen, and the deadline only ends a hang.
    """
    waiting = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        f"AND objid = {key} AND NOT granted"
    )
    deadline = time.monotonic() + timeout
    while app.sql(waiting).strip() != "1":
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no session waited for lock {key} in {timeout} s"
        time.sleep(0.1)


def test_catalog_writes_of_other_sessions_during_a_restore_are_no_false_alarm(app: App) -> None:
    # The dump waits on a lock the test holds; meanwhile a token and audit rows are committed
    # by other sessions, as the service does while a restore runs. The restore still succeeds.
    good = Path(app.cli("backup", "good").stdout.strip())
    wait = "SELECT pg_advisory_xact_lock(4242);"
    forged = forge(good, app.root / "incoming" / "slow.tar.gz", wait)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = app.cluster.password
    psql = [str(app.cluster.bin("psql")), "-X", "-q", "-h", "127.0.0.1", "-U", "nexus"]
    holder = subprocess.Popen(
        [*psql, "-t", "-A", "-p", str(app.cluster.port), "-v", "ON_ERROR_STOP=1", app.database],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    # psql answers once the lock is granted: reading its answer waits for exactly that.
    holder.stdin.write("SELECT 'locked' FROM pg_advisory_lock(4242);\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "locked", "the test could not take the lock"
    restore = subprocess.Popen(
        [sys.executable, "-m", "api", "restore", str(forged), "--yes"],
        cwd=app.root,
        env=app.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_a_session_waits_for(app, 4242, restore)
        secret = app.cli("tokens", "create", "--name", "meanwhile").stdout.strip()
    finally:
        holder.stdin.write("SELECT pg_advisory_unlock(4242);\n\\q\n")
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()
    _, err = restore.communicate(timeout=300)
    assert restore.returncode == 0, err
    assert token_works(app, secret), "the token made during the restore is lost"
