"""The application database: pg_dump out, psql in, with argument lists and no shell.

Passwords reach pg_dump and psql through the environment (PGPASSWORD), never argv or logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from api import faults
from api.archive.sqlscan import DumpError, DumpScanner
from api.config import CATALOG_SCHEMA, Settings
from api.errors import ArchiveError, ConfigError, SourceError

log = logging.getLogger("nexus_backup.sources")
CHUNK = 1024 * 1024
STOP_GRACE_SECONDS = 5.0  # a pg_dump sent SIGTERM gets this long before SIGKILL
_QUERY_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "dbname": "PGDATABASE",
    "password": "PGPASSWORD",
}


def libpq_env(url: str) -> dict[str, str]:
    """PG* environment variables for a postgresql:// URL (the password among them)."""
    parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    env = {"PGAPPNAME": "nexus-backup", "PGCONNECT_TIMEOUT": "15"}
    if parts.hostname:
        env["PGHOST"] = unquote(parts.hostname)
    if parts.port:
        env["PGPORT"] = str(parts.port)
    if parts.username:
        env["PGUSER"] = unquote(parts.username)
    if parts.password:
        env["PGPASSWORD"] = unquote(parts.password)
    env["PGDATABASE"] = unquote(parts.path.lstrip("/"))
    for key, values in parse_qs(parts.query).items():
        if key in _QUERY_ENV and values:
            env[_QUERY_ENV[key]] = values[-1]
    return env


def redact(url: str) -> str:
    """The URL with its password replaced, for messages."""
    parts = urlsplit(url)
    if parts.password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@", 1))
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return parts._replace(query=query).geturl()


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _subprocess_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(libpq_env(url))
    return env


def find_tool(name: str, settings: Settings, major: int | None = None) -> str:
    """The pg_dump/psql to use: PG_BIN_DIR, else the server's major version, else the newest."""
    if settings.pg_bin_dir is not None:
        candidate = settings.pg_bin_dir / name
        if not candidate.exists():
            raise ConfigError(
                f"PG_BIN_DIR {settings.pg_bin_dir} has no {name}: point it at a bin folder"
            )
        return str(candidate)
    base = Path("/usr/lib/postgresql")
    if major is not None and (base / str(major) / "bin" / name).exists():
        return str(base / str(major) / "bin" / name)
    installed = sorted(
        (int(p.name) for p in base.glob("*") if p.name.isdigit() and (p / "bin" / name).exists()),
        reverse=True,
    )
    if installed:
        return str(base / str(installed[0]) / "bin" / name)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(
            f"{name} was not found: install the PostgreSQL client "
            "(apt-get install postgresql-client) or set PG_BIN_DIR"
        )
    return found


def tool_version(path: str) -> tuple[int, str]:
    output = subprocess.run(
        [path, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    match = re.search(r"\b(\d+)(?:\.\d+)*\b", output.split(")", 1)[-1])
    if match is None:
        raise SourceError(f"cannot read the version of {path} from {output!r}")
    return int(match.group(1)), match.group(0)


def check_pg_dump_version(dump_major: int, server_major: int) -> None:
    """pg_dump refuses servers newer than itself; say so before it does, with the fix."""
    if dump_major < server_major:
        raise SourceError(
            f"pg_dump {dump_major} cannot dump server {server_major}: install "
            f"postgresql-client-{server_major} or set PG_BIN_DIR to its bin folder"
        )


# Sessions on the app database resolve names in pg_catalog only: a function or operator that the
# app or a restored dump creates in public is never picked by the service's own queries.
APP_SEARCH_PATH = "pg_catalog, pg_temp"


async def connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(
            asyncpg_dsn(url), timeout=15, server_settings={"search_path": APP_SEARCH_PATH}
        )
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        raise SourceError(
            f"cannot connect to the database at {redact(url)}: {error}; check DATABASE_URL "
            "and that the server is running"
        ) from None


async def server_version(conn: asyncpg.Connection) -> tuple[int, str]:
    number = int(await conn.fetchval("SHOW server_version_num"))
    text = str(await conn.fetchval("SHOW server_version"))
    return number // 10000, text


async def read_schema_version(conn: asyncpg.Connection) -> str | None:
    """The app's migration head: Alembic's alembic_version, or Drizzle's last migration."""
    rows = await conn.fetch(
        """
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND n.nspname <> $1
          AND c.relname IN ('alembic_version', '__drizzle_migrations')
        ORDER BY c.relname, n.nspname = 'public' DESC
        """,
        CATALOG_SCHEMA,
    )
    for schema, table in rows:
        quoted = f'"{schema.replace(chr(34), chr(34) * 2)}"."{table}"'
        try:
            async with conn.transaction():  # a savepoint: a failure keeps the snapshot usable
                if table == "alembic_version":
                    heads = await conn.fetch(f"SELECT version_num FROM {quoted} ORDER BY 1")
                    if heads:
                        return ",".join(str(row[0]) for row in heads)
                else:
                    value = await conn.fetchval(
                        f"SELECT hash FROM {quoted} ORDER BY created_at DESC NULLS LAST LIMIT 1"
                    )
                    if value:
                        return str(value)
        except asyncpg.PostgresError:
            continue
    return None


@dataclass
class DumpResult:
    size: int = 0
    sha256: str = ""
    tables: dict[str, int] = field(default_factory=dict)
    server_version: str = ""
    pg_dump_version: str = ""
    database: str = ""
    schema_version: str | None = None


def _drain(stream: IO[bytes], keep: list[bytes], limit: int = 64 * 1024) -> None:
    size = 0
    for line in stream:
        keep.append(line)
        size += len(line)
        while size > limit and len(keep) > 1:
            size -= len(keep.pop(0))


def _tail(lines: list[bytes]) -> str:
    text = b"".join(lines).decode("utf-8", "replace").strip()
    return " ".join(text.splitlines()[-5:]) or "no error output"


async def dump(
    url: str,
    settings: Settings,
    spool: IO[bytes],
    *,
    on_progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> DumpResult:
    """pg_dump the database into `spool` (plain SQL), hashing it and counting rows as it flows.

    The dump and the schema version come from one exported snapshot. The catalog schema is
    never dumped.
    """
    conn = await connect(url)
    try:
        major, version_text = await server_version(conn)
        pg_dump = find_tool("pg_dump", settings, major)
        dump_major, dump_text = await asyncio.to_thread(tool_version, pg_dump)
        check_pg_dump_version(dump_major, major)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_catalog.pg_export_snapshot()")
            schema_version = await read_schema_version(conn)
            database = str(await conn.fetchval("SELECT current_database()"))
            result = await _run_pg_dump(pg_dump, url, snapshot, spool, on_progress, cancel)
    finally:
        await conn.close()
    result.server_version = version_text
    result.pg_dump_version = dump_text
    result.database = database
    result.schema_version = schema_version
    return result


async def _run_pg_dump(
    pg_dump: str,
    url: str,
    snapshot: str,
    spool: IO[bytes],
    on_progress: Callable[[int], None] | None,
    cancel: threading.Event | None,
) -> DumpResult:
    """pg_dump into `spool`, read in a thread. Cancelled (a shutdown), pg_dump is stopped and
    reaped before the cancellation goes on: SIGTERM to its process group (pg_dump then cancels
    its query on the server, even one waiting for a lock), SIGKILL if it lingers."""
    args = [
        pg_dump,
        "--format=plain",
        "--no-password",
        f"--snapshot={snapshot}",
        f"--exclude-schema={CATALOG_SCHEMA}",
        "--lock-wait-timeout=120000",
    ]
    # Started on the loop's thread (a fork/exec is quick): no cancellation can fall between
    # its start and the code that stops it. Its own process group: a terminal's Ctrl-C reaches
    # the CLI, which stops pg_dump itself.
    process = subprocess.Popen(  # noqa: ASYNC220
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_subprocess_env(url),
        process_group=0,
    )
    log.info("pg_dump started (pid %d)", process.pid)
    stop = cancel if cancel is not None else threading.Event()
    reading = asyncio.ensure_future(
        asyncio.to_thread(_read_pg_dump, process, spool, on_progress, stop)
    )
    try:
        return await asyncio.shield(reading)
    except asyncio.CancelledError:
        stop.set()
        await end_process_group(process, reading)
        if reading.done() and not reading.cancelled():
            reading.exception()  # retrieved: it failed because it was stopped
        log.info("pg_dump (pid %d) stopped: the backup was cancelled", process.pid)
        raise


async def end_process_group(process: subprocess.Popen[bytes], reaper: asyncio.Future[Any]) -> None:
    """SIGTERM to `process`'s group, SIGKILL after STOP_GRACE_SECONDS; returns once `reaper`
    (what waits for the process) has ended, so the process is gone and reaped. A cancellation
    meanwhile is raised only then (and sends SIGKILL at once)."""
    _signal_group(process, signal.SIGTERM)
    killed, cancelled = False, None
    while not reaper.done():
        try:
            await asyncio.wait({reaper}, timeout=STOP_GRACE_SECONDS)
        except asyncio.CancelledError as error:
            cancelled = error
        if not reaper.done() and not killed:
            _signal_group(process, signal.SIGKILL)
            killed = True
    if cancelled is not None:
        raise cancelled


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is not None:
        return  # reaped: its id may belong to another process by now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _read_pg_dump(
    process: subprocess.Popen[bytes],
    spool: IO[bytes],
    on_progress: Callable[[int], None] | None,
    cancel: threading.Event,
) -> DumpResult:
    assert process.stdout is not None
    assert process.stderr is not None
    errors: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(process.stderr, errors), daemon=True)
    reader.start()
    digest = hashlib.sha256()
    scanner = DumpScanner()  # the same row counting and checks as verification and restore
    size = 0
    try:
        while block := process.stdout.read(CHUNK):
            if cancel.is_set():
                raise SourceError("the backup was cancelled while dumping the database")
            spool.write(block)
            digest.update(block)
            scanner.feed(block)
            size += len(block)
            if on_progress is not None:
                on_progress(len(block))
    except DumpError as error:
        process.kill()
        raise SourceError(
            f"pg_dump wrote a dump that could not be restored safely ({error}); "
            "report this with the pg_dump version"
        ) from None
    except BaseException:
        process.kill()  # nobody reads its output any more: it must not block on a full pipe
        raise
    finally:
        code = process.wait()
        reader.join(timeout=10)
        process.stdout.close()
        process.stderr.close()
    if code != 0:
        raise SourceError(f"pg_dump failed (exit {code}): {_tail(errors)}")
    try:
        tables = scanner.finish().tables
    except DumpError as error:
        raise SourceError(
            f"pg_dump wrote a dump that could not be restored safely ({error}); "
            "report this with the pg_dump version"
        ) from None
    return DumpResult(size=size, sha256=digest.hexdigest(), tables=tables)


CLEAN_SQL = r"""
SET client_min_messages = warning;
DO $nexus$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT evtname FROM pg_event_trigger LOOP
    EXECUTE format('DROP EVENT TRIGGER %I', r.evtname);
  END LOOP;
  FOR r IN SELECT pubname FROM pg_publication LOOP
    EXECUTE format('DROP PUBLICATION %I', r.pubname);
  END LOOP;
  FOR r IN SELECT e.extname FROM pg_extension e WHERE e.extname <> 'plpgsql' LOOP
    EXECUTE format('DROP EXTENSION IF EXISTS %I CASCADE', r.extname);
  END LOOP;
  FOR r IN SELECT srvname FROM pg_foreign_server LOOP
    EXECUTE format('DROP SERVER IF EXISTS %I CASCADE', r.srvname);
  END LOOP;
  FOR r IN SELECT fdwname FROM pg_foreign_data_wrapper LOOP
    EXECUTE format('DROP FOREIGN DATA WRAPPER IF EXISTS %I CASCADE', r.fdwname);
  END LOOP;
  FOR r IN SELECT nspname FROM pg_namespace
           WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public', 'nexus_backup')
             AND nspname NOT LIKE 'pg\_%' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
  END LOOP;
  PERFORM pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata;
  DROP SCHEMA IF EXISTS public CASCADE;
  CREATE SCHEMA public;
  IF current_setting('server_version_num')::int >= 150000 THEN
    ALTER SCHEMA public OWNER TO pg_database_owner;
    GRANT USAGE ON SCHEMA public TO PUBLIC;
  ELSE
    EXECUTE format('ALTER SCHEMA public OWNER TO %s', 10::regrole);
    GRANT ALL ON SCHEMA public TO PUBLIC;
  END IF;
  COMMENT ON SCHEMA public IS 'standard public schema';
END
$nexus$;
RESET client_min_messages;
"""

# The first minor release of each major whose psql has \restrict (the August 2025 releases).
RESTRICT_SINCE = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}


def check_psql_restrict(version: str) -> None:
    """Refuse a psql without \restrict: it could not stop a dump from running meta-commands."""
    numbers = [int(part) for part in re.findall(r"\d+", version)[:2]]
    major, minor = numbers[0], numbers[1] if len(numbers) > 1 else 0
    if major >= 18 or minor >= RESTRICT_SINCE.get(major, 1 << 30):
        return
    fix = f"{major}.{RESTRICT_SINCE[major]}" if major in RESTRICT_SINCE else "17.6"
    raise ConfigError(
        f"psql {version} cannot load dumps safely (no \\restrict): install postgresql-client "
        f"{fix} or newer, or set PG_BIN_DIR"
    )


async def _psql_for_loading(url: str, settings: Settings) -> str:
    conn = await connect(url)
    try:
        major, _ = await server_version(conn)
    finally:
        await conn.close()
    psql = find_tool("psql", settings, major)
    _, version = await asyncio.to_thread(tool_version, psql)
    check_psql_restrict(version)
    return psql


# psql as the loaders run it: no psqlrc, quiet, stop at the first error, query output discarded.
PSQL_LOAD_ARGS: tuple[str, ...] = ("-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1")
PSQL_LOAD_ARGS += ("-v", "VERBOSITY=terse", "-o", os.devnull)


class DumpFeed:
    """database.sql as psql gets it: through a FIFO it reads with `\\i`, checked and filtered by
    DumpScanner on the way, behind our own `\\restrict` with a random key.

    psql's control stream says `\\i FIFO` then `\\unrestrict KEY` (see `include`). The FIFO
    starts with `\\restrict KEY`, so no meta-command in the dump can run, not even one the
    scanner missed; `\\i` gives the dump its own lexer, so a dump that ends inside a string
    cannot swallow the control lines after it. If the scanner refuses the dump part-way, psql
    is killed before the FIFO is closed: it never reaches what follows the `\\i`.
    """

    def __init__(self, sql_path: Path) -> None:
        self.sql_path = sql_path
        self.key = secrets.token_hex(32)
        self.fifo = sql_path.parent / f".load-{secrets.token_hex(8)}.fifo"
        os.mkfifo(self.fifo, 0o600)
        self.problem: str | None = None
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None

    def include(self) -> str:
        """The psql control lines that load the dump and then lift our restriction."""
        path = str(self.fifo).replace("\\", "\\\\").replace("'", "\\'")
        return f"\\i '{path}'\n\\unrestrict {self.key}\n"

    def start(self, pid: int) -> None:
        self._task = asyncio.create_task(asyncio.to_thread(self._write, pid))

    async def finish(self) -> str | None:
        """Stop feeding (if still waiting for psql), remove the FIFO; why the dump was refused."""
        self._stop.set()
        if self._task is not None:
            await asyncio.shield(self._task)
        with contextlib.suppress(FileNotFoundError):
            self.fifo.unlink()
        return self.problem

    def _open(self) -> int | None:
        while not self._stop.is_set():
            try:
                return os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as error:
                if error.errno != errno.ENXIO:  # ENXIO: psql has not opened it yet
                    raise
            time.sleep(0.02)
        return None

    def _write(self, pid: int) -> None:
        fd = self._open()
        if fd is None:
            return
        try:
            os.set_blocking(fd, True)
            scanner = DumpScanner()
            _write_all(fd, f"\\restrict {self.key}\n".encode())
            with open(self.sql_path, "rb") as source:
                while block := source.read(CHUNK):
                    _write_all(fd, scanner.feed(block))
            scanner.finish()
        except DumpError as error:
            self.problem = str(error)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # before the FIFO closes: psql must not go on
        except BrokenPipeError:
            pass  # psql stopped reading; its own exit reports why
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# Created before the restore's transaction begins, so the guard sees no change of its own.
MARKER_TABLE_SQL = """
SET search_path = pg_catalog, pg_temp;
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS nexus_backup;
CREATE TABLE IF NOT EXISTS nexus_backup.restore_commit (
  restore_id text PRIMARY KEY, committed_at timestamptz NOT NULL DEFAULT now());
RESET client_min_messages;
"""

MARKER_SQL = """
INSERT INTO nexus_backup.restore_commit (restore_id) VALUES ('{restore_id}');
"""

# --- The catalog guard: database.sql must not change the catalog schema ---------------------
#
# The restore runs in one REPEATABLE READ transaction. Before the dump, the guard keeps (in psql
# variables, which SQL cannot set) the transaction id, the schema's oid, how many system-catalog
# entries belong to the schema (tables, columns, triggers, rules, policies, indexes,
# constraints, functions, types, ...), the row count of each of its tables and the last value of
# each of its sequences. After the dump it checks, with search_path pinned and the role reset:
# same transaction; no entry and no row written by this transaction (its xids run from its first
# to the newest, which a probe row in a savepoint gives; under REPEATABLE READ, rows committed
# by others meanwhile are invisible, so the service's own concurrent writes never count); the
# same number of entries and rows (nothing dropped or deleted); no sequence moved
# back (setval is not transactional, so a lowered one is put back). Deferred triggers are fired
# and cursors closed first, so that no code of the dump is left to run at COMMIT.

GUARD_REFUSED = "NEXUS-BACKUP-CATALOG-CHANGED"

_GUARD_OBJECTS = """
WITH s AS (SELECT :'nexus_guard_schema'::pg_catalog.oid AS oid),
rel AS (SELECT c.oid, c.relname::text AS relname FROM pg_catalog.pg_class c, s
        WHERE c.relnamespace = s.oid),
obj(kind, what, xmin) AS (
  SELECT 'namespace', 'the schema itself (owner, grants or name)', n.xmin
    FROM pg_catalog.pg_namespace n, s WHERE n.oid = s.oid
  UNION ALL SELECT 'class', CASE WHEN c.relkind IN ('r', 'p') THEN 'table '
      WHEN c.relkind = 'i' THEN 'index ' WHEN c.relkind = 'S' THEN 'sequence '
      WHEN c.relkind IN ('v', 'm') THEN 'view ' ELSE 'relation ' END || c.relname,
      c.xmin FROM pg_catalog.pg_class c, s WHERE c.relnamespace = s.oid
  UNION ALL SELECT 'attribute', 'columns of table ' || r.relname, a.xmin
    FROM pg_catalog.pg_attribute a JOIN rel r ON a.attrelid = r.oid
  UNION ALL SELECT 'attrdef', 'column defaults of table ' || r.relname,
      d.xmin FROM pg_catalog.pg_attrdef d JOIN rel r ON d.adrelid = r.oid
  UNION ALL SELECT 'trigger', 'trigger ' || t.tgname || ' on table ' || r.relname,
      t.xmin FROM pg_catalog.pg_trigger t JOIN rel r ON t.tgrelid = r.oid
  UNION ALL SELECT 'rewrite', 'rule ' || w.rulename || ' on table ' || r.relname,
      w.xmin FROM pg_catalog.pg_rewrite w JOIN rel r ON w.ev_class = r.oid
  UNION ALL SELECT 'policy', 'policy ' || p.polname || ' on table ' || r.relname,
      p.xmin FROM pg_catalog.pg_policy p JOIN rel r ON p.polrelid = r.oid
  UNION ALL SELECT 'index', 'an index on table ' || r.relname, i.xmin
    FROM pg_catalog.pg_index i JOIN rel r ON i.indrelid = r.oid
  UNION ALL SELECT 'constraint', 'constraint ' || k.conname, k.xmin
    FROM pg_catalog.pg_constraint k, s WHERE k.connamespace = s.oid
      OR k.conrelid IN (SELECT oid FROM rel) OR k.confrelid IN (SELECT oid FROM rel)
  UNION ALL SELECT 'inherits', 'inheritance of table ' || r.relname, i.xmin
    FROM pg_catalog.pg_inherits i JOIN rel r ON r.oid IN (i.inhparent, i.inhrelid)
  UNION ALL SELECT 'depend', 'an object depending on ' || r.relname, d.xmin
    FROM pg_catalog.pg_depend d JOIN rel r
      ON (d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = r.oid)
      OR (d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = r.oid)
  UNION ALL SELECT 'sequence', 'sequence ' || r.relname, q.xmin
    FROM pg_catalog.pg_sequence q JOIN rel r ON q.seqrelid = r.oid
  UNION ALL SELECT 'proc', 'function ' || p.proname, p.xmin
    FROM pg_catalog.pg_proc p, s WHERE p.pronamespace = s.oid
  UNION ALL SELECT 'type', 'type ' || t.typname, t.xmin
    FROM pg_catalog.pg_type t, s WHERE t.typnamespace = s.oid
  UNION ALL SELECT 'operator', 'operator ' || o.oprname, o.xmin
    FROM pg_catalog.pg_operator o, s WHERE o.oprnamespace = s.oid
  UNION ALL SELECT 'opclass', 'operator class ' || o.opcname, o.xmin
    FROM pg_catalog.pg_opclass o, s WHERE o.opcnamespace = s.oid
  UNION ALL SELECT 'opfamily', 'operator family ' || o.opfname, o.xmin
    FROM pg_catalog.pg_opfamily o, s WHERE o.opfnamespace = s.oid
  UNION ALL SELECT 'collation', 'collation ' || o.collname, o.xmin
    FROM pg_catalog.pg_collation o, s WHERE o.collnamespace = s.oid
  UNION ALL SELECT 'conversion', 'conversion ' || o.conname, o.xmin
    FROM pg_catalog.pg_conversion o, s WHERE o.connamespace = s.oid
  UNION ALL SELECT 'ts_config', 'text search configuration ' || o.cfgname,
      o.xmin FROM pg_catalog.pg_ts_config o, s WHERE o.cfgnamespace = s.oid
  UNION ALL SELECT 'ts_dict', 'text search dictionary ' || o.dictname,
      o.xmin FROM pg_catalog.pg_ts_dict o, s WHERE o.dictnamespace = s.oid
  UNION ALL SELECT 'ts_parser', 'text search parser ' || o.prsname,
      o.xmin FROM pg_catalog.pg_ts_parser o, s WHERE o.prsnamespace = s.oid
  UNION ALL SELECT 'ts_template', 'text search template ' || o.tmplname,
      o.xmin FROM pg_catalog.pg_ts_template o, s
      WHERE o.tmplnamespace = s.oid
  UNION ALL SELECT 'statistic_ext', 'statistics object ' || o.stxname,
      o.xmin FROM pg_catalog.pg_statistic_ext o, s
      WHERE o.stxnamespace = s.oid
  UNION ALL SELECT 'extension', 'extension ' || o.extname, o.xmin
    FROM pg_catalog.pg_extension o, s WHERE o.extnamespace = s.oid
  UNION ALL SELECT 'default_acl', 'default privileges in the schema', o.xmin
    FROM pg_catalog.pg_default_acl o, s WHERE o.defaclnamespace = s.oid
),
-- Written by this transaction: xmin in [its first xid, its newest] (modulo 2^32). Any other
-- xid there began after this snapshot, so its rows are invisible; age(xmin) would not do, as a
-- frozen row keeps its raw xmin, which looks newer than now 2^31 transactions later.
own AS (
  SELECT kind, what, ((xmin::text::bigint - :'nexus_guard_first'::bigint + 4294967296)
                      % 4294967296) <= :'nexus_guard_span'::bigint AS mine
  FROM obj
),
counted AS (
  SELECT pg_catalog.string_agg(kind || '=' || n, ',' ORDER BY kind) AS entries
  FROM (SELECT kind, pg_catalog.count(*) AS n FROM obj GROUP BY kind) k
),
-- Each table's row count and rows of this transaction, each sequence's last value.
fill AS (
  SELECT c.oid, c.relname::text AS relname, c.relkind,
    pg_catalog.query_to_xml(pg_catalog.format(CASE c.relkind
      WHEN 'S' THEN 'SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS n,'
        ' 0 AS m FROM %3$I.%4$I'
      ELSE 'SELECT pg_catalog.count(*) AS n, pg_catalog.count(*) FILTER (WHERE'
        ' ((xmin::text::bigint - %s + 4294967296) %% 4294967296) <= %s) AS m FROM ONLY %I.%I'
      END, :'nexus_guard_first'::bigint, :'nexus_guard_span'::bigint,
      'nexus_backup', c.relname), false, true, '')::text AS x
  FROM pg_catalog.pg_class c, s WHERE c.relnamespace = s.oid AND c.relkind IN ('r', 'S')
),
data AS (
  SELECT oid, relname, relkind,
    pg_catalog.substring(x, '<n>(-?[0-9]+)</n>')::bigint AS n,
    pg_catalog.substring(x, '<m>([0-9]+)</m>')::bigint AS m
  FROM fill
)
"""

GUARD_BEFORE_SQL = (
    """
SET LOCAL search_path = pg_catalog, pg_temp;
SELECT pg_catalog.txid_current()::text AS nexus_guard_xact,
  (pg_catalog.txid_current() % 4294967296)::text AS nexus_guard_first, '0' AS nexus_guard_span,
  COALESCE((SELECT n.oid FROM pg_catalog.pg_namespace n
                       WHERE n.nspname = 'nexus_backup'), 0)::text AS nexus_guard_schema
\\gset
"""
    + _GUARD_OBJECTS
    + """
SELECT COALESCE((SELECT entries FROM counted), '') AS nexus_guard_entries,
  COALESCE((SELECT pg_catalog.string_agg(oid || '=' || n, ',' ORDER BY oid)
                       FROM data WHERE relkind = 'r'), '') AS nexus_guard_rows,
  COALESCE((SELECT pg_catalog.string_agg(oid || '=' || n, ',' ORDER BY oid)
                       FROM data WHERE relkind = 'S'), '') AS nexus_guard_sequences
\\gset
"""
)

_GUARD_REFUSE = f"""
\\if :{{?nexus_guard_problem}}
\\echo {GUARD_REFUSED} :nexus_guard_problem
\\q
\\endif
"""

GUARD_AFTER_SQL = (
    """
RESET ROLE;
RESET SESSION AUTHORIZATION;
SET LOCAL search_path = pg_catalog, pg_temp;
SELECT CASE WHEN pg_catalog.txid_current()::text <> :'nexus_guard_xact' THEN 'transaction'
  END AS nexus_guard_problem
\\gset
"""
    + _GUARD_REFUSE
    + """
SET CONSTRAINTS ALL IMMEDIATE;
CLOSE ALL;
SAVEPOINT nexus_guard;
CREATE TEMPORARY TABLE nexus_guard_probe (x integer);
INSERT INTO pg_temp.nexus_guard_probe VALUES (1);
SELECT ((p.xmin::text::bigint - :'nexus_guard_first'::bigint + 4294967296) % 4294967296)::text
  AS nexus_guard_span FROM pg_temp.nexus_guard_probe p
\\gset
ROLLBACK TO SAVEPOINT nexus_guard;
RELEASE SAVEPOINT nexus_guard;
"""
    + _GUARD_OBJECTS
    + """
SELECT pg_catalog.left(pg_catalog.regexp_replace((
  SELECT what FROM (
    SELECT 1 AS rank, 'the schema itself (dropped, renamed or created)' AS what
      WHERE COALESCE((SELECT n.oid FROM pg_catalog.pg_namespace n
                                 WHERE n.nspname = 'nexus_backup'), 0) <> (SELECT oid FROM s)
    UNION ALL (SELECT 2, what FROM own WHERE mine ORDER BY kind, what LIMIT 1)
    UNION ALL SELECT 3, 'entries of pg_' || pg_catalog.split_part(e, '=', 1) || ' (dropped)'
      FROM pg_catalog.unnest(pg_catalog.string_to_array(
             COALESCE((SELECT entries FROM counted), ''), ',')) a(e)
      FULL JOIN pg_catalog.unnest(pg_catalog.string_to_array(:'nexus_guard_entries', ',')) b(e)
      USING (e) WHERE a.e IS NULL
  ) found ORDER BY rank, what LIMIT 1), '[[:cntrl:]]', ' ', 'g'), 200) AS nexus_guard_problem
\\gset
"""
    + _GUARD_REFUSE
    # Only now, with no trigger, rule or policy of the dump on them, read the tables' rows.
    + _GUARD_OBJECTS
    + """,
before AS (
  SELECT pg_catalog.split_part(e, '=', 1)::pg_catalog.oid AS oid,
         pg_catalog.split_part(e, '=', 2)::bigint AS n
  FROM pg_catalog.unnest(pg_catalog.string_to_array(:'nexus_guard_rows', ',')
    || pg_catalog.string_to_array(:'nexus_guard_sequences', ',')) e
),
lowered AS (
  SELECT b.oid, b.n, pg_catalog.setval(b.oid::pg_catalog.regclass, b.n, true) AS put_back
  FROM before b JOIN data d ON d.oid = b.oid WHERE d.relkind = 'S' AND d.n < b.n
)
SELECT pg_catalog.left(pg_catalog.regexp_replace((
  SELECT what FROM (
    SELECT 1 AS rank, 'rows of table ' || d.relname AS what FROM data d LEFT JOIN before b
      USING (oid) WHERE d.relkind = 'r' AND (d.m > 0 OR b.n IS DISTINCT FROM d.n)
    UNION ALL SELECT 2, 'a table (dropped)' FROM before b
      WHERE NOT EXISTS (SELECT FROM data d WHERE d.oid = b.oid)
    UNION ALL SELECT 3, 'sequence ' || d.relname || ' (set back)'
      FROM lowered l JOIN data d USING (oid)
  ) found ORDER BY rank, what LIMIT 1), '[[:cntrl:]]', ' ', 'g'), 200) AS nexus_guard_problem
\\gset
"""
    + _GUARD_REFUSE
)


def guard_refusal(problem: str) -> SourceError:
    """The error of a restore whose database.sql the catalog guard refused."""
    if problem == "transaction":
        return SourceError(
            "database.sql ended the restore's transaction (it holds a COMMIT or ROLLBACK), so "
            "what it ran before that was committed: check the database and restore the "
            "pre_restore backup"
        )
    return SourceError(
        f"database.sql changes the catalog schema {CATALOG_SCHEMA} (e.g. {problem}): refused, "
        "nothing was changed"
    )


class DatabaseRestore:
    """psql holding one transaction: clean, load database.sql, then commit or roll back.

    The transaction also records the restore id in nexus_backup.restore_commit, so a restore
    interrupted between the uploads swap and the commit can tell afterwards which happened.
    """

    APPLIED = "NEXUS-BACKUP-APPLIED"
    COMMITTED = "NEXUS-BACKUP-COMMITTED"

    def __init__(self, url: str, settings: Settings, sql_path: Path, restore_id: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", restore_id):
            raise ValueError("restore id must be alphanumeric")
        self._url = url
        self._settings = settings
        self._sql_path = sql_path
        self._restore_id = restore_id
        self._process: asyncio.subprocess.Process | None = None
        self._errors: list[bytes] = []
        self._stderr_task: asyncio.Task[None] | None = None
        self._feed: DumpFeed | None = None
        self._applied = False  # psql ran everything but COMMIT and waits for what follows
        self._commit_sent = False

    async def apply(self) -> None:
        """Run everything up to, not including, COMMIT. Raises SourceError if psql fails."""
        psql = await _psql_for_loading(self._url, self._settings)
        self._feed = DumpFeed(self._sql_path)
        self._process = await asyncio.create_subprocess_exec(
            psql,
            *PSQL_LOAD_ARGS,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**_subprocess_env(self._url), "PGAPPNAME": restore_session_name(self._restore_id)},
        )
        self._stderr_task = asyncio.create_task(self._read_stderr())
        self._feed.start(self._process.pid)
        script = (
            MARKER_TABLE_SQL
            + "BEGIN ISOLATION LEVEL REPEATABLE READ;\n"
            + f"SELECT pg_advisory_xact_lock(hashtextextended('{self._restore_id}', 0));\n"
            + GUARD_BEFORE_SQL
            + CLEAN_SQL
            + self._feed.include()
            + GUARD_AFTER_SQL
            + MARKER_SQL.format(restore_id=self._restore_id)
            + f"\\echo {self.APPLIED}\n"
        )
        await self._send(script)
        faults.point("restore.mid_load")
        try:
            await self._expect(self.APPLIED, "loading database.sql")
        except SourceError:
            if await self._feed.finish() is not None:
                raise ArchiveError(
                    f"database.sql was refused while loading: {self._feed.problem}"
                ) from None
            raise
        if await self._feed.finish() is not None:
            raise ArchiveError(f"database.sql was refused while loading: {self._feed.problem}")
        self._applied = True

    async def commit(self) -> None:
        self._commit_sent = True
        await self._send(f"COMMIT;\n\\echo {self.COMMITTED}\n\\q\n")
        await self._expect(self.COMMITTED, "committing the restore")
        await self._finish()

    async def rollback(self) -> None:
        process = self._process
        if process is not None and process.returncode is None and not self._applied:
            await self._abandon(process)
        elif process is not None and process.returncode is None:
            with contextlib.suppress(Exception):
                await self._send("ROLLBACK;\n\\q\n")
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
                await process.wait()
            await self._finish(check=False)
        if self._feed is not None:
            await self._feed.finish()

    async def _abandon(self, process: asyncio.subprocess.Process) -> None:
        """End psql and its server session now: psql still loading (or waiting for a lock, or
        cancelled by a shutdown) would read a ROLLBACK only once it finished, and its session
        would go on until it noticed psql had gone. COMMIT was never sent: nothing commits."""
        assert not self._commit_sent
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        await self._finish(check=False)
        await end_sessions(self._url, restore_session_name(self._restore_id))

    async def _send(self, text: str) -> None:
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.write(text.encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await self._process.stdin.drain()  # if psql stopped, _expect reports why

    async def _expect(self, marker: str, doing: str) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        while True:
            line = await self._process.stdout.readline()
            if not line:
                code = await self._process.wait()
                if self._stderr_task is not None:
                    await self._stderr_task
                raise SourceError(f"psql failed while {doing} (exit {code}): {_tail(self._errors)}")
            text = line.decode(errors="replace").strip()
            if text.startswith(GUARD_REFUSED):
                raise guard_refusal(text[len(GUARD_REFUSED) :].strip())
            if text == marker:
                return

    async def _read_stderr(self) -> None:
        assert self._process is not None
        assert self._process.stderr is not None
        async for line in self._process.stderr:
            self._errors.append(line)
            if len(self._errors) > 200:
                del self._errors[0]

    async def _finish(self, check: bool = True) -> None:
        if self._process is None:
            return
        code = await self._process.wait()
        if self._stderr_task is not None:
            await self._stderr_task
        if check and code != 0:
            raise SourceError(f"psql exited with {code}: {_tail(self._errors)}")


async def load_sql(url: str, settings: Settings, sql_path: Path) -> None:
    """Load database.sql into `url` in one transaction (a scratch database, for deep verify),
    checked, filtered and behind our own `\\restrict` exactly as a restore loads it."""
    psql = await _psql_for_loading(url, settings)
    feed = DumpFeed(sql_path)
    try:
        process = await asyncio.create_subprocess_exec(
            psql,
            *PSQL_LOAD_ARGS,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=_subprocess_env(url),
        )
        feed.start(process.pid)
        script = "BEGIN;\n" + feed.include() + "COMMIT;\n"
        try:
            _, stderr = await process.communicate(script.encode())
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
    finally:
        problem = await feed.finish()
    if problem is not None:
        raise ArchiveError(f"database.sql was refused while loading: {problem}")
    if process.returncode != 0:
        raise SourceError(f"psql exited with {process.returncode}: {_tail([stderr])}")


def restore_session_name(restore_id: str) -> str:
    return f"nexus-restore-{restore_id}"[:63]


SESSION_WAIT_SECONDS = 30.0


async def end_sessions(url: str, application_name: str) -> None:
    """Terminate the server sessions named `application_name` and wait (10 s at most) until
    they have ended, their transactions rolled back."""
    conn = await connect(url)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE application_name = $1 AND pid <> pg_backend_pid()",
            application_name,
        )
    finally:
        await conn.close()


async def restore_committed(
    url: str, restore_id: str, *, wait_seconds: float | None = None
) -> bool:
    """Whether the database transaction of restore `restore_id` committed, once it has ended.

    The restore's psql holds an advisory lock keyed by the restore id for its whole transaction.
    Its session may outlive a killed parent (a COMMIT may still be in flight), so this first
    waits for that lock; if the session does not end in time, it is terminated, which ends
    its transaction one way or the other before the marker is read.
    """
    wait_seconds = SESSION_WAIT_SECONDS if wait_seconds is None else wait_seconds
    conn = await connect(url)
    try:
        key = "SELECT hashtextextended($1, 0)"
        try:
            await conn.execute(f"SET lock_timeout = '{int(wait_seconds * 1000)}ms'")
            await conn.execute(f"SELECT pg_advisory_lock(({key}))", restore_id)
        except asyncpg.LockNotAvailableError:
            await conn.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                "WHERE application_name = $1",
                restore_session_name(restore_id),
            )
            await conn.execute(f"SELECT pg_advisory_lock(({key}))", restore_id)
        await conn.execute(f"SELECT pg_advisory_unlock(({key}))", restore_id)
        exists = await conn.fetchval("SELECT to_regclass('nexus_backup.restore_commit')")
        if exists is None:
            return False
        found = await conn.fetchval(
            "SELECT 1 FROM nexus_backup.restore_commit WHERE restore_id = $1", restore_id
        )
        return found is not None
    finally:
        await conn.close()


async def table_row_counts(url: str) -> dict[str, int]:
    """Exact row counts of every table of the app (not the catalog), for dry runs."""
    conn = await connect(url)
    try:
        tables: list[Any] = await conn.fetch(
            """
            SELECT n.nspname, c.relname FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
              AND n.nspname NOT LIKE 'pg\\_%'
            ORDER BY 1, 2
            """,
            CATALOG_SCHEMA,
        )
        counts: dict[str, int] = {}
        for schema, table in tables:
            quoted = '"{}"."{}"'.format(schema.replace('"', '""'), table.replace('"', '""'))
            counts[f"{schema}.{table}"] = int(await conn.fetchval(f"SELECT count(*) FROM {quoted}"))
        return counts
    finally:
        await conn.close()
